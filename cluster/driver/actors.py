"""Creating the actors: rollout engines, judges and the learner group, each restartable.

Rollout and judge actors are independent (their count can change during a run); the
learner ranks share one placement group (PACK) so a multi-node cluster keeps them close.
Ray restarts a dead rollout/judge actor (`max_restarts`) and retries its in-flight call
(`max_task_retries`): the call carries the latest weights, so a restarted engine catches up
before sampling, and the prompts it held are not skipped.

Each model actor gets the run's model reference (RunSpec.model_ref: a pinned hub id, a folder or
the embedded default) and resolves it on its own node (core/models.resolve_model), with the
driver's hub settings (core/env.HUB_ENV) in its runtime env.
"""

from __future__ import annotations

import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from actors.rollout import RolloutActor
from cluster.methods import Method
from core.config import Config
from core.env import hub_env_vars
from core.net import node_address_and_free_port
from judge.judge_actor import JudgeActor
from learner.rank import LearnerRank, RankGroup


def _threads(cpus: float) -> int:
    """An actor's compute threads: the whole cores of its num_cpus (core/env.use_cores)."""
    return max(1, int(cpus))


def actor_name(prefix: str | None, role: str) -> str | None:
    """`<run>/<role>`: how the actor is listed in the dashboard and found by `ray.get_actor`
    on a shared cluster. None (anonymous) without a prefix."""
    return f"{prefix}/{role}" if prefix else None


def hub_runtime_env() -> dict | None:
    """The driver's hub settings (core/env.HUB_ENV: HF_HUB_OFFLINE, HF_HOME, HF_HUB_CACHE,
    HF_ENDPOINT …; never HF_TOKEN) as an actor's runtime env, merged by Ray over the job's: an
    actor resolves a hub id as the driver did, also on a shared cluster started without them or
    under `ray job submit`. None when none is set (the actor keeps the job's env as it is)."""
    env = hub_env_vars()
    return {"env_vars": env} if env else None


def actor_options(section, name: str | None, node_id: str | None = None) -> dict:
    """The Ray options of a rollout or judge actor: its section's resources and restarts (Ray
    restarts a dead one, `max_restarts`, and retries its in-flight call, `max_task_retries`),
    the driver's hub settings, and, given the plan's `node_id` (cluster/capacity/plan.py), a soft
    pin to that node: it starts there, and a restart whose node is gone goes elsewhere."""
    options = dict(name=name, num_cpus=section.cpus_per_actor, num_gpus=section.gpus_per_actor,
                   resources=dict(section.resources) or None, max_restarts=section.max_restarts,
                   max_task_retries=section.max_restarts, runtime_env=hub_runtime_env())
    if node_id is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=True)
    return options


def make_rollout_actor(cfg: Config, model_ref: str | None, index: int, prefix: str | None = None,
                       node_id: str | None = None):
    """`model_ref`: the run's pinned model (core/models.pin_model), resolved by the actor on its node."""
    r = cfg.rollout
    actor_cls = ray.remote(RolloutActor).options(max_concurrency=1,
                                                 **actor_options(r, actor_name(prefix, f"rollout-{index}"), node_id))
    return actor_cls.remote(model_ref, r, cfg.model, seed=cfg.seed, name=f"rollout-{index}",
                            threads=_threads(r.cpus_per_actor))


def make_judge_actor(cfg: Config, method: Method, model_ref: str | None, index: int, instructions: str | None = None,
                     prefix: str | None = None, node_id: str | None = None):
    """`instructions`: the name of a SharedValue holding prompt text → its IFEval instructions
    (JSON form), for the verifier judge and the pass rate of fresh samples. A name, not the
    table: a restarted judge fetches it again, and a restartable actor's constructor carries
    nothing from the object store."""
    j = cfg.judge
    actor_cls = ray.remote(JudgeActor).options(**actor_options(j, actor_name(prefix, f"judge-{index}"), node_id))
    return actor_cls.remote(model_ref, cfg, method, threads=_threads(j.cpus_per_actor), instructions=instructions)


@ray.remote(num_cpus=0)
def _rendezvous() -> tuple[str, int]:
    """Address and a free port on the node of bundle 0, for the ranks' TCP store."""
    return node_address_and_free_port()


def learner_placement_group(cfg: Config, node_ids: list[str | None] | None = None):
    """The learner ranks' placement group: one bundle a rank, packed; given the plan's node of
    each rank (`node_ids`), each bundle is pinned to it (Ray's `ray.io/node-id` label)."""
    bundle = cfg.actor_resources()["learner"]
    bundles = [dict(bundle) for _ in range(cfg.learner.num_ranks)]
    selectors = None
    if node_ids and all(node_ids):
        selectors = [{"ray.io/node-id": node} for node in node_ids]
    return placement_group(bundles, strategy="PACK", name="osp-learner", bundle_label_selector=selectors)


def make_learner_group(cfg: Config, method: Method, model_ref: str | None, timeout_s: float = 600, prefix: str | None = None,
                       node_ids: list[str | None] | None = None):
    l = cfg.learner
    bundles = [cfg.actor_resources()["learner"]] * l.num_ranks
    pg = learner_placement_group(cfg, node_ids)
    ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not ready:
        raise RuntimeError(
            f"could not place {l.num_ranks} learner ranks ({bundles[0]} each) within {timeout_s:.0f}s: "
            "the cluster lacks the resources (see `ray status`)"
        )
    addr, port = ray.get(
        _rendezvous.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)).remote()
    )
    ranks = []
    for rank in range(l.num_ranks):
        actor_cls = ray.remote(LearnerRank).options(
            name=actor_name(prefix, f"learner-{rank}"),
            num_cpus=l.cpus_per_rank,
            num_gpus=l.gpus_per_rank,
            resources=dict(l.resources) or None,
            max_restarts=0,  # a dead rank fails the run (resume from the last checkpoint)
            scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=rank),
            runtime_env=hub_runtime_env(),
        )
        ranks.append(
            actor_cls.remote(rank, RankGroup(l.num_ranks, addr, port), model_ref, cfg, method, _threads(l.cpus_per_rank))
        )
    return ranks, pg


@ray.remote(num_cpus=0)
class SharedValue:
    """A named actor holding one value that other actors fetch by name (`get`), also after
    they restart: the judges' instruction table."""

    def __init__(self, value):
        self.value = value

    def get(self):
        return self.value


def on_this_node() -> NodeAffinitySchedulingStrategy:
    """The driver's own node: losing another node must not take the run's control actors with it."""
    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def share(name: str, value):
    """A SharedValue named `name` on the driver's node."""
    return SharedValue.options(name=name, scheduling_strategy=on_this_node()).remote(value)


@ray.remote(num_cpus=0)
class Control:
    """A named actor through which `python -m cluster.scale` changes a live run."""

    def __init__(self, rollout_actors: int):
        self.rollout_actors = rollout_actors

    def set_rollout_actors(self, n: int) -> int:
        if n < 1:
            raise ValueError(f"need at least 1 rollout actor, got {n}")
        self.rollout_actors = n
        return n

    def get_rollout_actors(self) -> int:
        return self.rollout_actors
