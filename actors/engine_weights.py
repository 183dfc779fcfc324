"""The engine side of a weight push: a vLLM worker extension that loads new policy weights
inside the engine's worker, and the merge of a LoRA adapter into the SFT weights.

Loaded by name (`LLM(worker_extension_cls="actors.engine_weights.EngineWeightLoader")`), so
its methods run on the worker via `llm.collective_rpc(...)`; the rollout actor
(actors/rollout.py) calls them for each payload kind (core/weights.py). On CPU, vLLM repacks
linear weights after loading, so writing parameters (or `model.load_weights`) on a live engine
is silently stale; `reload_weights` runs the loader's full post-processing. Always send whole
fused groups (q,k,v / gate,up) or the full state dict.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load

from core.weights import Spec, join_group, receive_tensors


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


class EngineWeightLoader:
    def load_safetensors(self, blob: bytes) -> int:
        """Reload from safetensors bytes (tensors passed as RPC args may arrive as lists)."""
        state = load(blob)
        self.reload_weights(weights_iterator=list(state.items()))
        self._osp_retie()
        return len(state)

    def load_state(self, state: dict[str, torch.Tensor]) -> int:
        """Reload from a full state dict (tensors may be read-only views of object-store memory)."""
        self.reload_weights(weights_iterator=list(state.items()))
        self._osp_retie()
        return len(state)

    def load_lora_delta(self, factors: dict[str, tuple[torch.Tensor, torch.Tensor]], every_weight: bool = False) -> int:
        """Set every adapted weight to W0 + s·B·A, W0 read from the engine's own model folder
        (the SFT weights: LoRA never changes them). Whole fused groups are reloaded, so the
        unadapted members of a group go back in as W0. `every_weight`: every other weight of
        the folder goes back in as W0 too, for an engine that may hold other full weights (an
        evaluation swapping checkpoints). Returns the number of tensors reloaded."""
        model = self.model_runner.get_model()
        if every_weight:
            names = sorted(self._osp_sft_index_of())
        else:
            names = with_fused_siblings(sorted(factors), getattr(model, "packed_modules_mapping", {}))
        state = merge_deltas(self._osp_sft_weights(names), factors)
        # A partial reload is the point here: vLLM keeps the layers it was not sent as they are
        # ("place kernel tensors back as a fallback") but warns for each of them and lists every
        # weight not sent (norms, embeddings: hundreds of names per push), which would flood the log.
        quiet = [logging.getLogger(f"vllm.model_executor.model_loader.reload.{m}") for m in ("inplace", "layerwise")]
        levels = [q.level for q in quiet]
        for q in quiet:
            q.setLevel(logging.ERROR)
        try:
            self.reload_weights(weights_iterator=list(state.items()))
        finally:
            for q, level in zip(quiet, levels):
                q.setLevel(level)
        if every_weight:
            self._osp_retie()
        return len(state)

    def _osp_sft_index_of(self) -> dict[str, str]:
        """{weight name: the model folder's safetensors file holding it}, read once."""
        if not hasattr(self, "_osp_sft_index"):
            folder = Path(self.vllm_config.model_config.model)
            self._osp_sft_index = {}
            for path in sorted(folder.glob("*.safetensors")):
                with safe_open(str(path), framework="pt") as f:
                    self._osp_sft_index.update({key: str(path) for key in f.keys()})
        return self._osp_sft_index

    def _osp_sft_weights(self, names: list[str]) -> dict[str, torch.Tensor]:
        """The named tensors from the model folder's safetensors files. Read on each push,
        not kept: the page cache holds the file (shared with the judge, which loads the same
        folder), where a kept copy would add ~the adapted weights' size to this process."""
        self._osp_sft_index_of()
        missing = [n for n in names if n not in self._osp_sft_index]
        if missing:
            raise KeyError(f"adapter push: {missing[:3]} not in the engine's model folder "
                           f"{self.vllm_config.model_config.model}")
        out: dict[str, torch.Tensor] = {}
        by_file: dict[str, list[str]] = {}
        for name in names:
            by_file.setdefault(self._osp_sft_index[name], []).append(name)
        for path, keys in by_file.items():
            with safe_open(path, framework="pt") as f:
                out.update({key: f.get_tensor(key) for key in keys})
        return {name: out[name] for name in names}

    def _osp_retie(self) -> None:
        """A tied LM head receives no weights of its own, so the reload never re-runs its
        post-load step — and on CPU that step packs a private copy of the weight for the
        GEMM. Re-tie and re-pack it from the reloaded embedding, or logits stay stale."""
        model = self.model_runner.get_model()
        config = getattr(model, "config", None)
        head = getattr(model, "lm_head", None)
        if getattr(config, "tie_word_embeddings", False) and head is not None:
            head.tie_weights(model.model.embed_tokens)
            method = getattr(head, "quant_method", None)
            if method is not None and hasattr(method, "process_weights_after_loading"):
                method.process_weights_after_loading(head)

    # -- broadcast path: a process group of its own between learner rank 0 and each engine.
    def join_weight_group(self, host: str, port: int, rank: int, world_size: int, backend: str) -> bool:
        self._osp_group = join_group(host, port, rank, world_size, backend, device=self._osp_device())
        return True

    def receive_broadcast(self, spec: Spec) -> int:
        """Receive tensors named in `spec` (name, dtype, shape) from rank 0, in order, then reload."""
        state = receive_tensors(self._osp_group, spec, device=self._osp_device())
        self.reload_weights(weights_iterator=list(state.items()))
        self._osp_retie()
        return len(state)

    def _osp_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
