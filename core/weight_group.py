"""A process group of its own between learner rank 0 (root) and the rollout engines.

It is separate from the learner's DeepSpeed group (own TCPStore, own ranks), so engines can
join and leave without touching training. gloo on CPU, NCCL on GPU: the same code path.
Tensors are packed into one flat buffer per dtype, so a push is one broadcast per dtype.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

import torch
import torch.distributed as dist

TIMEOUT = timedelta(seconds=300)

Spec = list[tuple[str, str, list[int]]]  # (name, dtype name, shape) in broadcast order


def join_group(host: str, port: int, rank: int, world_size: int, backend: str, device=None):
    if backend not in ("gloo", "nccl"):  # before the store: a non-root would wait TIMEOUT for it
        raise ValueError(f"unknown weight-group backend {backend!r} (gloo or nccl)")
    store = dist.TCPStore(host, port, world_size, is_master=(rank == 0), timeout=TIMEOUT)
    if backend == "nccl":
        return dist.ProcessGroupNCCL(store, rank, world_size)
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
    for dtype, idx in _flat_groups(spec).items():
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
