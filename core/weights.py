"""What a weight push carries and the contract each side implements; the driver's two ways of
pushing are cluster/driver/weight_sync.py.

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
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from datetime import timedelta
from typing import Any, Protocol

import numpy as np
import ray
import torch
import torch.distributed as dist

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
