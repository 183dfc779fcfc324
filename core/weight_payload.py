"""What a weight push carries through the object store, and how each side reads it.

Two payloads, both plain dicts of numpy arrays, because Ray stores numpy buffers out of band:
`ray.put` copies the bytes into the object store once, and `ray.get` on the same node maps them
without a copy. (safetensors bytes cost a serialisation on the learner and a copy out of the
store on the engine: two extra passes over the weights.)

- `full`: every tensor of the merged policy, in the base model's own names.
- `adapter`: the LoRA adapter as factors of each weight's delta, {weight name: (A, s·B)} with
  ΔW = s·B·A. A few MB instead of the whole model; the engine adds the deltas to the SFT weights
  it reads from its own model folder, so every adapter payload is absolute (it does not depend on
  what the engine held before) and a restarted engine can apply the latest one directly.

bf16 has no numpy dtype: such tensors travel as their int16 bit patterns with the dtype named.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

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


def with_fused_siblings(names: list[str], packed_modules: dict[str, list[str]]) -> list[str]:
    """Weight names widened to whole fused groups: vLLM loads q, k and v into one qkv_proj
    (gate and up into gate_up_proj), and reloading one member alone corrupts the layer.
    `packed_modules` is the model's own map, e.g. {"qkv_proj": ["q_proj", "k_proj", "v_proj"]}."""
    out: list[str] = []
    for name in names:
        module, _, param = name.rpartition(".")
        parent, _, leaf = module.rpartition(".")
        group = next((members for members in packed_modules.values() if leaf in members), [leaf])
        for member in group:
            full = f"{parent}.{member}.{param}" if parent else f"{member}.{param}"
            if full not in out:
                out.append(full)
    return out


def merge_deltas(base: dict[str, torch.Tensor], factors: dict[str, tuple[torch.Tensor, torch.Tensor]],
                 ) -> dict[str, torch.Tensor]:
    """W0 + s·B·A for every weight with factors, W0 for the rest of `base`, in W0's dtype.
    The product and the sum are taken in float32, as the learner's own merge does on CPU."""
    out = {}
    for name, w0 in base.items():
        if name in factors:
            a, b = factors[name]
            delta = b.to(w0.device, torch.float32) @ a.to(w0.device, torch.float32)
            out[name] = (w0.to(torch.float32) + delta).to(w0.dtype)
        else:
            out[name] = w0
    return out
