"""Change a live run: `python -m cluster.scale --rollout-actors N` (or `--add N`).

Talks to the run's named `Control` actor; the driver picks the change up within ~2 s,
starts (or retires) vLLM rollout actors and pushes them the current weights before they
sample. The learner is not touched. Run it where `ray status` works (RAY_ADDRESS set, or on
a cluster node); e.g. `ray job submit -- python -m cluster.scale --add 2`.
"""

from __future__ import annotations

import argparse
import sys

from core.env import apply_runtime_env


def main(argv: list[str] | None = None, prog: str = "python -m cluster.scale") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--rollout-actors", type=int, help="the number of rollout actors wanted")
    group.add_argument("--add", type=int, help="add (or with a negative number remove) rollout actors")
    group.add_argument("--show", action="store_true", help="print the current number")
    parser.add_argument("--address", default="auto", help="Ray cluster address (default: auto)")
    args = parser.parse_args(argv)
    apply_runtime_env()
    import ray  # lazy: Ray reads the environment applied just above at import

    from cluster.driver.pools import CONTROL_NAME, CONTROL_NAMESPACE

    if not ray.is_initialized():
        ray.init(address=args.address, namespace=CONTROL_NAMESPACE, log_to_driver=False)
    try:
        control = ray.get_actor(CONTROL_NAME, namespace=CONTROL_NAMESPACE)
    except ValueError:
        print("no running osp job found on this cluster (named actor osp-control is missing)", file=sys.stderr)
        return 1
    current = ray.get(control.get_rollout_actors.remote())
    if args.show:
        print(current)
        return 0
    want = args.rollout_actors if args.rollout_actors is not None else current + args.add
    try:
        ray.get(control.set_rollout_actors.remote(want))
    except ray.exceptions.RayTaskError as err:
        print(f"refused: {err.cause if hasattr(err, 'cause') else err}", file=sys.stderr)
        return 2
    print(f"rollout actors: {current} -> {want}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
