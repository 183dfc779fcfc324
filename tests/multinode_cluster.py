"""The simulated multi-node cluster both multi-node scenarios run on (tests/multinode_run.py,
tests/multinode_faults_run.py): Ray nodes on this machine shaped like deploy/cluster.yaml, with
custom resources standing in for GPUs, and the run config they share."""

from __future__ import annotations

from pathlib import Path


def three_node_cluster(dashboard_port: int | None = None):
    """A head (the driver: no CPUs for actors), a `rollout` node and a `learner` node, each with
    its own raylet and object store, on this machine's address; this process joins it. With a
    `dashboard_port`, the head runs the dashboard (on 127.0.0.1): jobs can be submitted to it.
    Returns (cluster, rollout node, learner node)."""
    from core.env import apply_runtime_env

    apply_runtime_env()
    from ray.cluster_utils import Cluster

    from cluster.driver.ray_setup import init_ray

    head = {"num_cpus": 0, "include_dashboard": dashboard_port is not None}
    if dashboard_port is not None:
        head.update(dashboard_host="127.0.0.1", dashboard_port=dashboard_port)
    cluster = Cluster(initialize_head=True, head_node_args=head)
    rollout_node = cluster.add_node(num_cpus=2, resources={"rollout": 2})
    learner_node = cluster.add_node(num_cpus=1, resources={"learner": 1})
    cluster.wait_for_nodes()
    init_ray(cluster.address, worker_logs=False)
    return cluster, rollout_node, learner_node


def stop(cluster) -> None:
    """Leave the cluster (a node this process is connected to cannot be removed), then stop it."""
    import ray

    ray.shutdown()
    cluster.shutdown()


def run_config(model_dir: str, run_dir: Path, seed: int, **sections):
    """The tiny model, K=4, self-judge, LoRA learner: rollout and judge actors ask for the
    `rollout` resource, the learner rank for `learner`. `sections` update those of the base."""
    from cluster.config import config_from_dict

    base = {
        "seed": seed,
        "model": {"path": model_dir},
        "data": {"prompts": "questions"},
        "rollout": {"num_actors": 1, "k": 4, "prompts_per_batch": 2, "resources": {"rollout": 1}},
        "judge": {"num_actors": 1, "kind": "self", "drop_ties": False, "resources": {"rollout": 1}},
        "learner": {"num_ranks": 1, "pairs_per_step": 4, "lr": 5e-3, "resources": {"learner": 1},
                    "lora": {"enabled": True, "r": 4, "alpha": 8}},
        "eval": {"prompts": None},
        "checkpoint": {"dir": str(run_dir)},
        "metrics": {"trackers": [], "ray_metrics": False, "probe_every": 0},
    }
    for section, values in sections.items():
        base[section] = {**base.get(section, {}), **values}
    return config_from_dict(base)
