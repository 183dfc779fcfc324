"""vLLM worker extension: receives new policy weights inside the engine's worker.

Loaded by name (`LLM(worker_extension_cls="actors.weight_receiver.WeightReceiver")`), so its
methods run on the worker via `llm.collective_rpc(...)`. On CPU, vLLM repacks linear weights
after loading, so writing parameters (or `model.load_weights`) on a live engine is silently
stale; `reload_weights` runs the loader's full post-processing. Always send whole fused
groups (q,k,v / gate,up) — here the full state dict.
"""

from __future__ import annotations

import torch


class WeightReceiver:
    def load_safetensors(self, blob: bytes) -> int:
        """Reload from safetensors bytes (tensors passed as RPC args may arrive as lists)."""
        from safetensors.torch import load

        state = load(blob)
        self.reload_weights(weights_iterator=list(state.items()))
        self._osp_retie()
        return len(state)

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
        from learner.weight_group import join_group

        self._osp_group = join_group(host, port, rank, world_size, backend, device=self._osp_device())
        return True

    def receive_broadcast(self, spec: list[tuple[str, str, list[int]]]) -> int:
        """Receive tensors named in `spec` (name, dtype, shape) from rank 0, in order, then reload."""
        from learner.weight_group import receive_tensors

        state = receive_tensors(self._osp_group, spec, device=self._osp_device())
        self.reload_weights(weights_iterator=list(state.items()))
        self._osp_retie()
        return len(state)

    def _osp_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
