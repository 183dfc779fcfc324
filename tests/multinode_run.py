"""A run of the real loop on a 3-node Ray cluster on this machine (tests/test_multinode.py).

    python tests/multinode_run.py TINY_MODEL_DIR OUT.json

Nodes shaped like deploy/cluster.yaml, with custom resources standing in for GPUs: a head (the
driver, no CPUs for actors), a `rollout` node and a `learner` node, each with its own raylet and
object store, on this machine's address. The run places rollout and judge actors by
`resources={rollout: 1}` and the learner by `{learner: 1}`, trains a few steps, then writes what
the state API and the object directory saw: where each actor lives, where the pushed weights
and a pair batch are stored, and whether the engine computes the learner's log-probs.
Run in its own process: the test session's Ray is a different, single-node cluster.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path


def main(model_dir: str, out: str) -> None:
    import ray
    from multinode_cluster import run_config, stop, three_node_cluster

    from cluster.driver.pipeline import Pipeline
    from cluster.run import build_run

    cluster, rollout_node, learner_node = three_node_cluster()
    run_dir = Path(tempfile.mkdtemp(prefix="multinode-run-"))
    cfg = run_config(model_dir, run_dir, seed=5, data={"num_prompts": 24}, rollout={"max_tokens": 10},
                     learner={"max_steps": 3}, pipeline={"max_staleness": 1, "buffer_max_pairs": 16,
                                                         "spill_dir": str(run_dir / "pairs")},
                     checkpoint={"every": 0})
    spec = build_run(cfg)
    prompts = spec.prompts
    pipeline = Pipeline(spec, spec.initial_state())
    try:
        pipeline.start()
        state = pipeline.run()
        engine = pipeline.rollouts.members[0].handle
        # The pushed weights: put by the learner rank, fetched by the engine on the other node.
        version, (weights_ref,) = pipeline.scheduler.version, pipeline.pushes.sync.latest_payload()
        # A pair batch: made by the judge on the rollout node, fetched by the learner's node.
        rollout, _ = engine.generate.remote([{"prompt_id": "x", "prompt_index": 0, "prompt_text": prompts[0].text,
                                           "prompt_tokens": list(prompts[0].tokens)}])
        pairs, _ = pipeline.judges.judges[0].score.options(num_returns=2).remote(rollout)
        loss = ray.get(pipeline.learner.ranks[0].eval_loss.remote(pairs))
        locations = ray.experimental.get_object_locations([weights_ref, pairs])
        prompt, response = list(prompts[1].tokens), list(prompts[2].tokens)[-6:]
        learner = ray.get(pipeline.learner.ranks[0].logprobs_of.remote(prompt, response))
        vllm = ray.get(engine.logprobs_of.remote(prompt, response))
        # The GCS's actor table (what the dashboard's state API serves; no dashboard runs here).
        actors = [{"class": a["ActorClassName"], "node": a["Address"]["NodeID"], "name": a.get("Name", "")}
                  for a in ray._private.state.actors().values() if a["State"] == "ALIVE"]
        result = {
            "nodes": {"head": cluster.head_node.node_id, "rollout": rollout_node.node_id, "learner": learner_node.node_id},
            "actors": actors,
            "plan": json.loads((run_dir / "plan.json").read_text()),
            "steps": state.step, "pairs_trained": state.pairs_trained, "engine_version": ray.get(engine.info.remote())["version"],
            "pushed_version": version,
            "weights_locations": locations[weights_ref]["node_ids"],
            "pairs_locations": locations[pairs]["node_ids"],
            "eval_loss": loss,
            "max_logprob_diff": max(abs(a - b) for a, b in zip(vllm, learner)),
        }
    finally:
        pipeline.shutdown()
        stop(cluster)
    Path(out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
