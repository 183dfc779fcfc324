"""The driver's weight pushes (`push(version) -> (stats, refs of the engines' loads)`) and the
check that a push arrived, over the contract of core/weights.py.

- `ObjectStoreSync` puts one payload that every engine loads, and keeps it for an engine that
  restarts or joins (`latest_payload`, loaded before its next batch);
- `BroadcastSync` re-forms its group when the engines change or a push fails, and exports the
  current weights once for a restarted engine.
Every rank takes part in a push (ZeRO-3 gathers); a push returns without waiting for the
engines, which load in call order after the batch they are sampling. `push_gaps` and
`PushCheck`: the per-token log-prob gap between the learner and each engine on a fixed text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.actor import ActorHandle

from core.env import has_cuda
from core.weights import FULL, Spec, WeightReceiver, WeightSender

Senders = list["ActorHandle[WeightSender]"]  # the learner ranks, rank 0 first
Receivers = list["ActorHandle[WeightReceiver]"]  # the rollout actors


class ObjectStoreSync:
    method = "object_store"

    def __init__(self, ranks: Senders, engines: Receivers, payload: str = FULL):
        self.ranks, self.engines, self.payload = ranks, list(engines), payload
        self._pushed: list | None = None  # [ref] of the last payload pushed

    def set_engines(self, engines: Receivers) -> None:
        self.engines = list(engines)

    def invalidate(self) -> None:  # the object store keeps the last payload for a restarted engine
        pass

    def latest_payload(self) -> list | None:
        """[ref] of the weights every engine should hold (the last push), for `generate` to load
        first when its engine is behind (a restart); None before the first push. The version
        it stands for is the run's (the driver's ledger owns it)."""
        return self._pushed

    def export(self) -> dict[str, Any]:
        exported = ray.get([r.export_weights.remote(self.payload) for r in self.ranks])
        return exported[0]

    def push(self, version: int) -> tuple[dict[str, float], list]:
        """Export on the ranks, send to every engine stamped `version`; (stats, refs of the
        engines' loads)."""
        start = time.perf_counter()
        exported = self.export()
        self._pushed = exported["ref"]
        loads = [e.update_weights.remote(exported["ref"], version) for e in self.engines]
        return {"push_s": time.perf_counter() - start, "push_bytes": float(exported["bytes"]),
                "push_export_s": exported["export_s"]}, loads


class BroadcastSync(ObjectStoreSync):
    method = "broadcast"

    def __init__(self, ranks: Senders, engines: Receivers, backend: str | None = None):
        super().__init__(ranks, engines)
        self.backend = backend or ("nccl" if has_cuda() else "gloo")
        self.members: Receivers = []
        self.spec: Spec | None = None
        self.pushes = 0
        self.catch_up = False  # an engine may be behind: a restart or a new member since the last push

    def latest_payload(self) -> list | None:
        """[ref] of the current weights for an engine that is behind, exported once after each
        push that needs it; None while every engine has the pushed weights (nothing to export)."""
        if not self.catch_up or self.pushes == 0:
            return None
        if self._pushed is None:
            self._pushed = self.export()["ref"]
        return self._pushed

    def set_engines(self, engines: Receivers) -> None:
        if any(e not in self.members for e in engines):
            self.catch_up = True
        super().set_engines(engines)

    def _form_group(self) -> None:
        """Rank 0 is the group's root (rank 0); engine i joins as rank i + 1. Joining blocks
        on the rendezvous, so all joins are issued together."""
        host, port = ray.get(self.ranks[0].free_port.remote())
        world = len(self.engines) + 1
        joins = [self.ranks[0].join_weight_group.remote(host, port, world, self.backend)]
        joins += [e.join_weight_group.remote(host, port, i + 1, world, self.backend) for i, e in enumerate(self.engines)]
        ray.get(joins)
        self.members = list(self.engines)

    def push(self, version: int) -> tuple[dict[str, float], list]:
        start = time.perf_counter()
        if self.members != self.engines:
            self._form_group()
        if self.spec is None:
            self.spec = [s for s in ray.get([r.weight_spec.remote() for r in self.ranks]) if s is not None][0]
        sent = [r.broadcast_weights.remote() for r in self.ranks]
        loads = [e.receive_broadcast.remote(self.spec, version) for e in self.members]
        self._pushed = None  # an earlier catch-up export holds older weights
        # The root returns once every engine has received (a broadcast is collective).
        try:
            stats = [s for s in ray.get(sent) if s is not None][0]
        except ray.exceptions.RayError:
            self.members = []  # re-form on the next push
            self.catch_up = True
            raise
        self.pushes, self.catch_up = self.pushes + 1, False
        return {"push_s": time.perf_counter() - start, "push_bytes": stats["bytes"],
                "push_broadcast_s": stats["broadcast_s"]}, loads

    def invalidate(self) -> None:
        """A member failed: re-form the group on the next push; until then `latest_payload`
        carries the current weights to the restarted engine."""
        self.members = []
        self.catch_up = True


def make_weight_sync(method: str, ranks: Senders, engines: Receivers, payload: str = FULL):
    """The sync for weight_sync.method (object_store | broadcast), resolved by cluster/run.py."""
    if method == "object_store":
        return ObjectStoreSync(ranks, engines, payload)
    if method == "broadcast":
        if payload != FULL:
            raise ValueError("weight_sync.method=broadcast sends full weights: set weight_sync.payload=full")
        return BroadcastSync(ranks, engines)
    raise ValueError(f"unknown weight_sync.method {method!r}")


# The largest per-token log-prob gap between the learner and an engine that still counts as
# "the engine holds the learner's weights", by model.dtype. float32: vLLM-CPU and transformers
# agree to ~1e-6 (weights_check.json of the engine tests); a stale engine after even one step at
# the tests' learning rates is off by more than 1e-3. 16-bit: vLLM's and transformers' kernels
# round differently; this bound is an estimate, not measured on a GPU here.
PUSH_TOLERANCE = {"float32": 1e-3, "bfloat16": 0.1, "float16": 0.1}


@dataclass(frozen=True)
class PushCheck:
    """The engines' weights against the learner's: each engine's largest per-token log-prob gap
    (`gaps`, by name; inf where the engine did not answer) and the bound they must stay under."""

    gaps: dict[str, float]
    tolerance: float

    @property
    def max_gap(self) -> float:
        return max(self.gaps.values(), default=0.0)

    @property
    def failed(self) -> list[str]:
        """The engines that do not hold the learner's weights."""
        return [name for name, gap in self.gaps.items() if not gap < self.tolerance]

    @property
    def verified(self) -> bool:
        """Every engine holds the learner's weights (and there is at least one)."""
        return bool(self.gaps) and not self.failed


def push_gaps(ranks: Senders, engines: Receivers, prompt: list[int], response: list[int]) -> list[float]:
    """For each engine, the largest |log p| difference per token of `response` after `prompt`
    between it and learner rank 0: ~1e-6 when it holds the learner's weights, far more when a
    push was lost or loaded stale (vLLM-CPU repacks weights: a plain reload is silently stale)
    or the engine restarted since (it comes back with the SFT weights); inf when the engine did
    not answer (dead for good). Every rank takes part (under ZeRO-3 the weights are gathered)."""
    learner = [x for x in ray.get([r.logprobs_of.remote(prompt, response) for r in ranks]) if x is not None][0]
    gaps = []
    for ref in [e.logprobs_of.remote(prompt, response) for e in engines]:
        try:
            got = ray.get(ref)
        except ray.exceptions.RayError:
            gaps.append(float("inf"))
            continue
        gaps.append(max((abs(a - b) for a, b in zip(learner, got)), default=0.0))
    return gaps


def check_push(ranks: Senders, engines: Receivers, prompt: list[int], response: list[int]) -> float:
    """The largest gap of `push_gaps` over the engines (0 without engines)."""
    return max(push_gaps(ranks, engines, prompt, response), default=0.0)
