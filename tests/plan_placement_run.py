"""Scenario for tests/test_plan.py: a simulated 3-node Ray cluster whose nodes declare 4, 4 and 2
GPUs; the run's plan from the live cluster, realized with the driver's own placement functions
(the learner's pinned placement group, the rollout and judge actors' options) on stand-in actors
that only report their node. Writes {planned, realized, refusals} as JSON to argv[1]."""

from __future__ import annotations

import json
import sys

from core.env import apply_runtime_env

apply_runtime_env()

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.placement_group import placement_group_table  # noqa: E402
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy  # noqa: E402

from cluster.capacity.memory import ModelShape  # noqa: E402
from cluster.capacity.nodes import nodes_from_ray  # noqa: E402
from cluster.capacity.plan import make_plan  # noqa: E402
from cluster.config import load_config  # noqa: E402
from cluster.driver.actors import actor_options, learner_placement_group  # noqa: E402


class StandIn:
    """Where a rollout or judge actor would run: it only reports its node."""

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()


def main(out: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for gpus in (4, 4, 2):
        cluster.add_node(num_cpus=8, num_gpus=gpus)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        cfg = load_config(None, ["learner.num_ranks=3", "learner.pairs_per_step=3", "learner.gpus_per_rank=1",
                                 "rollout.num_actors=2", "rollout.gpus_per_actor=2", "rollout.tensor_parallel_size=2",
                                 "judge.gpus_per_actor=1"])
        shape = ModelShape(params=1_000_000, largest_layer_params=1000, layers=2, hidden=128, intermediate=256,
                           kv_dim=64, vocab=512)
        plan = make_plan(cfg, shape, nodes_from_ray())
        planned = {s.ask.actor: s.node.node_id for s in plan.seats}
        realized = {}
        pg = learner_placement_group(cfg, [plan.node_id(f"learner-{i}") for i in range(cfg.learner.num_ranks)])
        ray.get(pg.ready(), timeout=60)
        for i, node in placement_group_table(pg)["bundles_to_node_id"].items():
            realized[f"learner-{i}"] = node
        # what runs in the bundle runs on its node: check one rank-sized task there too
        stand_in = ray.remote(StandIn)
        realized_rank0 = ray.get(stand_in.options(num_cpus=0, scheduling_strategy=PlacementGroupSchedulingStrategy(
            pg, placement_group_bundle_index=0)).remote().node.remote())
        assert realized_rank0 == realized["learner-0"], (realized_rank0, realized["learner-0"])
        actors = []
        for role, section in (("rollout", cfg.rollout), ("judge", cfg.judge)):
            for i in range(section.num_actors):
                name = f"{role}-{i}"
                actors.append((name, stand_in.options(**actor_options(section, None, plan.node_id(name))).remote()))
        for name, actor in actors:
            realized[name] = ray.get(actor.node.remote(), timeout=60)
        with open(out, "w") as f:
            json.dump({"planned": planned, "realized": realized, "refusals": plan.refusals}, f)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
