"""Will this run fit? `osp plan [--config X.yaml] [--cluster FILE] [key=value ...]`

Prints where each actor would go and what memory each needs there, and exits 2 with the
shortfalls (actor, node, how much) if the run cannot be placed or does not fit. `osp train` makes
the same plan first, against the cluster it runs on, and refuses before any actor starts.
The cluster: `--cluster FILE` (nodes by CPUs, GPUs, GPU memory and RAM; cluster/capacity/nodes.py),
else the Ray cluster the run would join (ray.address, RAY_ADDRESS or --address), else this machine
as the local cluster `osp train` would start.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from core.env import apply_runtime_env

apply_runtime_env()

from cluster.capacity.nodes import nodes_from_file, nodes_from_ray, this_machine
from cluster.capacity.plan import plan_run
from cluster.config import load_config
from cluster.driver.progress import setup_logging
from cluster.driver.ray_setup import ray_address
from core.config import Config, ConfigError
from core.models import resolve_model

log = logging.getLogger("osp")


def parse_args(argv: list[str] | None = None, prog: str = "python -m cluster.plan") -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (default: cluster/configs/default.yaml)")
    parser.add_argument("--cluster", help="a cluster file describing the nodes (deploy/recipes/ has examples)")
    parser.add_argument("--address", help="a Ray cluster to plan against (default: ray.address or RAY_ADDRESS)")
    parser.add_argument("--json", help="also write the plan as JSON to this file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. learner.num_ranks=8")
    return parser.parse_args(argv)


def resolved_judge_kind(cfg: Config) -> Config:
    """`cfg` with an lm:/reward: judge's model named by its local folder (its config alone)."""
    import dataclasses

    kind, _, rest = cfg.judge.kind.partition(":")
    if kind not in ("lm", "reward"):
        return cfg
    return dataclasses.replace(cfg, judge=dataclasses.replace(cfg.judge, kind=f"{kind}:{resolve_model(rest, config_only=True)}"))


def main(argv: list[str] | None = None, prog: str = "python -m cluster.plan") -> int:
    setup_logging()
    args = parse_args(argv, prog)
    from cluster.config import default_config_path
    from cluster.run import local_cluster_cpus

    try:
        cfg = resolved_judge_kind(load_config(args.config or default_config_path(), args.overrides))
        model = str(resolve_model(cfg.model.path, config_only=True))  # a hub id: its config.json alone
        address = args.address or ray_address(cfg.ray.address)
        if args.cluster:
            nodes, where = nodes_from_file(args.cluster), f"the cluster described in {args.cluster}"
        elif address:
            import ray

            ray.init(address=address, log_to_driver=False)
            nodes, where = nodes_from_ray(), f"the Ray cluster at {address}"
        else:
            nodes, where = [this_machine(local_cluster_cpus(cfg))], "this machine (the local cluster osp train starts)"
        plan = plan_run(cfg, model, nodes)
    except (ConfigError, FileNotFoundError) as err:
        log.error("%s", err)
        return 2
    print(f"plan for {len(plan.seats) or 'the'} actors on {where}, model {model}")
    print(plan.table())
    if args.json:
        Path(args.json).write_text(json.dumps(plan.to_json(), indent=1) + "\n")
    if plan.refusals:
        print(f"the run does not fit: {len(plan.refusals)} shortfall(s) above", file=sys.stderr)
        return 2
    print("the run fits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
