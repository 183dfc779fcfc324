"""Scale-out onto a node added mid-run, then the loss of whole nodes (tests/test_multinode.py's
heavy scenario).

    python tests/multinode_faults_run.py TINY_MODEL_DIR OUT.json

A head (the driver), a `rollout` node A and a `learner` node, on this machine (each node its
own raylet and object store), as in tests/multinode_run.py. While the run trains:

1. after step 2 a node B with the `rollout` resource joins and the Control actor (what
   `python -m cluster.scale` talks to) asks for a second rollout actor: it must land on B;
2. two steps after that actor joined, node A's raylet is killed (`remove_node`): its rollout
   and judge actors die and Ray restarts them on B, which still has the resource; the run
   goes on;
3. in a second run from the same folder, the learner node is killed mid-run: the run stops
   with LearnerFailed, a new learner node joins, and `--resume` (the latest checkpoint)
   finishes it.

It writes what happened: where each actor was, the steps and the run state's accounting
(every prompt handed out is done or listed to be sampled again, each once).
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path


def _actors() -> list[dict]:
    import ray

    return [{"name": a["Name"], "class": a["ActorClassName"], "node": a["Address"]["NodeID"], "state": a["State"]}
            for a in ray._private.state.actors().values()]


def _accounting(state) -> dict:
    """What the run state says was trained and where every prompt is."""
    return {"steps": state.step, "pairs_trained": state.pairs_trained, "prompts_done": state.prompts_done,
            "next_prompt": state.next_prompt, "requeued": state.requeued}


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f}s for {what}")
        time.sleep(0.5)


class _Loop:
    """pipeline.run() in a thread; result() joins it and re-raises what it raised."""

    def __init__(self, pipeline):
        self.done, self.state, self.error = False, None, None
        self.thread = threading.Thread(target=self._run, args=(pipeline,), daemon=True)
        self.thread.start()

    def _run(self, pipeline):
        try:
            self.state = pipeline.run()
        except BaseException as err:
            self.error = err
        finally:
            self.done = True

    def result(self, timeout: float = 900):
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.state


def main(model_dir: str, out: str) -> None:
    import ray
    from multinode_cluster import run_config, stop, three_node_cluster

    from cluster.driver import checkpoint as ckpt
    from cluster.driver.pipeline import Pipeline
    from cluster.driver.pools import LearnerFailed
    from cluster.run import build_run

    cluster, node_a, learner_node = three_node_cluster()
    run_dir = Path(tempfile.mkdtemp(prefix="multinode-faults-"))
    # 200 prompts, 72 used at most: no epoch wraps, so each prompt is handed out in one epoch.
    cfg = run_config(model_dir, run_dir, seed=3, data={"num_prompts": 200},
                     rollout={"max_tokens": 8, "max_restarts": 3}, judge={"max_restarts": 3},
                     learner={"max_steps": 30}, pipeline={"max_staleness": 1, "buffer_max_pairs": 16},
                     checkpoint={"every": 2})
    spec = build_run(cfg)

    def slow_learner(step, max_steps, metrics):
        # The tiny model trains a step in well under a second; a real learner takes seconds.
        # Holding each step 3 s lets the operator's actions below land while the run trains.
        time.sleep(3)

    result: dict = {"nodes": {"head": cluster.head_node.node_id, "a": node_a.node_id, "learner": learner_node.node_id},
                    "events": []}

    # -- run 1: scale out onto a new node, then lose node A -------------------------------
    # The loop runs in a thread: Ray adds and removes nodes from the main thread only.
    pipeline = Pipeline(spec, spec.initial_state(), slow_learner)
    try:
        pipeline.start()
        loop = _Loop(pipeline)
        _wait(lambda: pipeline.scheduler.step >= 2 or loop.done, 600, "step 2")
        node_b = cluster.add_node(num_cpus=3, resources={"rollout": 3})
        result["nodes"]["b"] = node_b.node_id
        ray.get(pipeline.rollouts.control.set_rollout_actors.remote(2))  # what `cluster.scale --add 1` does
        _wait(lambda: len(pipeline.rollouts.live()) == 2 or loop.done, 600, "the second rollout actor")
        result["after_scale_out"] = _actors()
        result["events"].append(["scaled out", pipeline.scheduler.step])
        lose_at = pipeline.scheduler.step + 2
        _wait(lambda: pipeline.scheduler.step >= lose_at or loop.done, 600, f"step {lose_at}")
        cluster.remove_node(node_a)  # its raylet killed: the node is gone
        result["events"].append(["node A removed", pipeline.scheduler.step])
        def restarted() -> bool:
            return all(a["state"] == "ALIVE" for a in _actors() if a["name"].endswith(("/rollout-0", "/judge-0")))

        _wait(lambda: restarted() or loop.done, 600, "rollout-0 and judge-0 restarted")
        result["after_node_loss"] = _actors()
        result["events"].append(["restarted", pipeline.scheduler.step])
        state = loop.result()
        result["run1"] = {**_accounting(state), "failures": pipeline.failures,
                          "live_engines": len(pipeline.rollouts.live())}
    finally:
        pipeline.shutdown()

    # -- run 2: lose the learner node, then resume on a new one ---------------------------
    cfg.learner.max_steps = 36
    spec = build_run(cfg, resume=True)
    pipeline = Pipeline(spec, spec.initial_state(), slow_learner)
    try:
        pipeline.start()
        loop = _Loop(pipeline)
        _wait(lambda: pipeline.scheduler.step >= 33 or loop.done, 600, "step 33")
        result["learner_lost_at"] = pipeline.scheduler.step
        cluster.remove_node(learner_node)
        try:
            loop.result()
            result["learner_failed"] = None
        except LearnerFailed as err:
            result["learner_failed"] = str(err)
    finally:
        pipeline.shutdown()
    cluster.add_node(num_cpus=1, resources={"learner": 1})
    cluster.wait_for_nodes()
    spec = build_run(cfg, resume=True)
    result["resumed_from_step"] = ckpt.load_state(spec.resume_from).step
    pipeline = Pipeline(spec, spec.initial_state())
    try:
        pipeline.start()
        state = pipeline.run()
        result["run2"] = _accounting(state)
    finally:
        pipeline.shutdown()
        stop(cluster)
    Path(out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
