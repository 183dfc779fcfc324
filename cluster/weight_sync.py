"""Pushing the learner's weights to the rollout engines.

Two ways, one interface (`push(version) -> stats`):

- `ObjectStoreSync`: rank 0 `ray.put`s a `core.weight_payload` dict of numpy arrays once
  (one copy, into the store) and every engine reloads from that one object (mapped without a
  copy on a node, one transfer per node across nodes). The payload is the LoRA adapter alone
  when LoRA is on (a few MB; the engine adds it to its SFT weights), else the merged weights. Works for any set of engines, including ones added or
  restarted mid-run: `latest` is handed to every `generate` call, so an engine that is
  behind loads it before sampling.
- `BroadcastSync`: a process group of its own between rank 0 and the engines (NCCL on GPU,
  gloo on CPU); one broadcast per dtype, no serialisation. The group is re-formed when the
  set of engines changes or a push fails. A broadcast leaves no object behind, so after such a
  change `latest` exports the current weights once (per version, on demand): a restarted or
  added engine loads them with its next `generate` instead of sampling from the SFT weights
  until the next push.

Every rank takes part in a push (under ZeRO-3 the weights are gathered from all ranks).
`push` does not wait for the engines: it returns refs the pipeline collects, so a push
never stalls the driver behind an engine's in-flight batch (an engine loads new weights
after the batch it is sampling, in call order).
"""

from __future__ import annotations

import time
from typing import Any

import ray

from core.env import has_cuda
from core.weight_payload import ADAPTER, FULL


def resolve_payload(payload: str, lora_enabled: bool) -> str:
    """`auto`: the adapter alone when LoRA trains (a few MB, whatever the transport), else full."""
    if payload != "auto":
        return payload
    return ADAPTER if lora_enabled else FULL


def resolve_method(method: str, gpus_per_rank: float, payload: str = FULL) -> str:
    """`auto`: NCCL broadcast of full weights when the learner is on GPUs, the object store
    otherwise; adapters always travel through the object store (they are a few MB)."""
    if method != "auto":
        return method
    return "broadcast" if payload == FULL and gpus_per_rank > 0 and has_cuda() else "object_store"


class ObjectStoreSync:
    method = "object_store"

    def __init__(self, ranks: list, engines: list, payload: str = FULL):
        self.ranks, self.engines, self.payload = ranks, list(engines), payload
        self.latest: tuple[int, list] | None = None  # (version, [ref]) for generate()

    def set_engines(self, engines: list) -> None:
        self.engines = list(engines)

    def invalidate(self) -> None:
        pass

    def export(self) -> dict[str, Any]:
        exported = ray.get([r.export_weights.remote(self.payload) for r in self.ranks])
        return exported[0]

    def push(self, version: int) -> tuple[dict[str, float], list]:
        """Export on the ranks, send to every engine; (stats, refs of the engines' loads)."""
        start = time.perf_counter()
        exported = self.export()
        self.latest = (version, exported["ref"])
        loads = [e.update_weights.remote(exported["ref"], version) for e in self.engines]
        return {
            "push_s": time.perf_counter() - start,
            "push_bytes": float(exported["bytes"]),
            "push_export_s": exported["export_s"],
        }, loads


class BroadcastSync(ObjectStoreSync):
    method = "broadcast"

    def __init__(self, ranks: list, engines: list, backend: str | None = None):
        super().__init__(ranks, engines)
        self.backend = backend or ("nccl" if has_cuda() else "gloo")
        self.members: list = []
        self.spec = None
        self.version = 0  # the weights the group's engines hold
        self.catch_up = False  # an engine may be behind: a restart or a new member since the last push

    @property
    def latest(self) -> tuple[int, list] | None:
        """(version, [ref]) for an engine that is behind, exported once per version; None while
        every engine has the pushed weights (nothing to export)."""
        if not self.catch_up or self.version == 0:
            return None
        if self._latest is None or self._latest[0] != self.version:
            self._latest = (self.version, self.export()["ref"])
        return self._latest

    @latest.setter
    def latest(self, value: tuple[int, list] | None) -> None:
        self._latest = value

    def set_engines(self, engines: list) -> None:
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
        # The root returns once every engine has received (a broadcast is collective).
        try:
            stats = [s for s in ray.get(sent) if s is not None][0]
        except ray.exceptions.RayError:
            self.members = []  # re-form on the next push
            self.catch_up = True
            raise
        self.version, self.catch_up = version, False
        return {
            "push_s": time.perf_counter() - start,
            "push_bytes": stats["bytes"],
            "push_broadcast_s": stats["broadcast_s"],
        }, loads

    def invalidate(self) -> None:
        """A member failed: re-form the group on the next push; until then `latest` carries the
        current weights to the restarted engine."""
        self.members = []
        self.catch_up = True


def make_weight_sync(method: str, ranks: list, engines: list, payload: str = FULL):
    if method == "object_store":
        return ObjectStoreSync(ranks, engines, payload)
    if method == "broadcast":
        if payload != FULL:
            raise ValueError("weight_sync.method=broadcast sends full weights: set weight_sync.payload=full")
        return BroadcastSync(ranks, engines)
    raise ValueError(f"unknown weight_sync.method {method!r}")
