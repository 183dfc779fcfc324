"""Where each actor goes: every actor's ask (CPUs, GPUs, custom resources) seated on a node.

The learner ranks are placed first and packed (as few nodes as possible: their collectives stay
inside a node where they can), then the rollout actors and the judges, each spread (the node
with the fewest of its role, then the most of what it asks for free). The head comes last in
the node list, so actors go there only when nothing else fits. Within a node an actor also gets
GPU slots: whole GPUs for an ask of one or more, a share of one GPU (first fit) for a fraction,
as Ray assigns them. The slots say which actors share a GPU's memory (cluster/capacity/plan.py).

The seats are deterministic (node order, then ask order), so the plan that `osp plan` prints is
the one the driver then makes Ray follow (cluster/driver/actors.py pins each actor to its node).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cluster.capacity.nodes import Node
from core.config import Config, ConfigError

ROLES = ("learner", "rollout", "judge")
_EPS = 1e-9


@dataclass(frozen=True)
class Ask:
    actor: str  # e.g. "rollout-0"
    role: str
    resources: dict[str, float]  # CPU, GPU and custom resources, as the actor asks Ray

    @property
    def gpus(self) -> float:
        return self.resources.get("GPU", 0.0)


@dataclass(frozen=True)
class Seat:
    ask: Ask
    node: Node
    gpu_slots: tuple[int, ...]  # the node's GPUs this actor uses (for memory per GPU)


def asks_of(cfg: Config) -> list[Ask]:
    """Every actor the run starts, with its ask: learner ranks, rollout actors, judges."""
    per_role = cfg.actor_resources()
    counts = {"learner": cfg.learner.num_ranks, "rollout": cfg.rollout.num_actors, "judge": cfg.judge.num_actors}
    return [Ask(f"{role}-{i}", role, {k: v for k, v in per_role[role].items() if v})
            for role in ROLES for i in range(counts[role])]


class PlacementError(ConfigError):
    """No node can take an actor; the message names the actor, what it asks and what is short."""


class _Free:
    """What is still free on each node while seating."""

    def __init__(self, nodes: list[Node]):
        self.nodes = nodes
        self.res = {n.name: {"CPU": n.cpus, "GPU": n.gpus, **n.resources} for n in nodes}
        self.slots = {n.name: [1.0] * int(math.floor(n.gpus + _EPS)) for n in nodes}

    def _gpu_slots(self, node: Node, gpus: float) -> tuple[int, ...] | None:
        slots = self.slots[node.name]
        if gpus <= 0:
            return ()
        if gpus >= 1:
            whole = [i for i, free in enumerate(slots) if free >= 1.0 - _EPS]
            need = int(math.ceil(gpus - _EPS))
            return tuple(whole[:need]) if len(whole) >= need else None
        for i, free in enumerate(slots):  # a share of one GPU: first fit
            if free >= gpus - _EPS:
                return (i,)
        return None

    def fits(self, node: Node, ask: Ask) -> bool:
        free = self.res[node.name]
        return (all(free.get(k, 0.0) >= v - _EPS for k, v in ask.resources.items())
                and self._gpu_slots(node, ask.gpus) is not None)

    def copies(self, node: Node, ask: Ask, limit: int) -> int:
        """How many more of `ask` fit on `node` (at most `limit`)."""
        saved = ({k: dict(v) for k, v in self.res.items()}, {k: list(v) for k, v in self.slots.items()})
        n = 0
        while n < limit and self.fits(node, ask):
            self.take(node, ask)
            n += 1
        self.res, self.slots = saved
        return n

    def take(self, node: Node, ask: Ask) -> Seat:
        slots = self._gpu_slots(node, ask.gpus)
        for k, v in ask.resources.items():
            self.res[node.name][k] = self.res[node.name].get(k, 0.0) - v
        share = ask.gpus if ask.gpus < 1 else 1.0
        for i in slots:
            self.slots[node.name][i] -= share
        return Seat(ask, node, slots)


def place(asks: list[Ask], nodes: list[Node]) -> list[Seat]:
    """Seat every ask (learner ranks packed, the others spread), or raise PlacementError for the
    first that cannot be seated."""
    free = _Free(nodes)
    seats: list[Seat] = []
    learner = [a for a in asks if a.role == "learner"]
    current: Node | None = None
    for i, ask in enumerate(learner):
        if current is None or not free.fits(current, ask):
            fitting = [n for n in nodes if free.fits(n, ask)]
            if not fitting:
                raise _refusal(ask, asks, nodes)
            remaining = len(learner) - i
            current = max(fitting, key=lambda n: (free.copies(n, ask, remaining), -nodes.index(n)))
        seats.append(free.take(current, ask))
    for ask in (a for a in asks if a.role != "learner"):
        fitting = [n for n in nodes if free.fits(n, ask)]
        if not fitting:
            raise _refusal(ask, asks, nodes)
        main = "GPU" if ask.gpus else "CPU"

        def spread_key(n: Node, ask=ask, main=main):
            same_role = sum(1 for s in seats if s.node is n and s.ask.role == ask.role)
            return (same_role, -free.res[n.name].get(main, 0.0), nodes.index(n))

        seats.append(free.take(min(fitting, key=spread_key), ask))
    return seats


def _fmt(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in resources.items()) + "}"


def _refusal(ask: Ask, asks: list[Ask], nodes: list[Node]) -> PlacementError:
    """Why `ask` has no seat: no node could ever hold it, or the run asks more than the cluster has."""
    empty = _Free(nodes)
    if not any(empty.fits(n, ask) for n in nodes):
        short = []
        for kind, want in ask.resources.items():
            most = max((n.has(kind) for n in nodes), default=0.0)
            if most < want - _EPS:
                short.append(f"{kind}: {want:g} asked, the largest node has {most:g}")
        why = "; ".join(short) or "no single node has all of it"
        hint = ""
        if ask.role == "rollout" and ask.gpus > 1:
            hint = " (rollout.tensor_parallel_size shards one engine over GPUs of one node)"
        return PlacementError(f"{ask.actor} cannot be placed on any node: it asks {_fmt(ask.resources)} on one "
                              f"node{hint}; {why}")
    totals = {}
    for a in asks:
        for kind, v in a.resources.items():
            totals[kind] = totals.get(kind, 0.0) + v
    short = [f"{kind}: the run asks {want:g}, the cluster has {sum(n.has(kind) for n in nodes):g} "
             f"({want - sum(n.has(kind) for n in nodes):g} short)"
             for kind, want in totals.items() if want > sum(n.has(kind) for n in nodes) + _EPS]
    why = "; ".join(short) or "the actors placed before it took what it needs (fragmentation)"
    return PlacementError(f"{ask.actor} cannot be placed ({_fmt(ask.resources)}): {why}")
