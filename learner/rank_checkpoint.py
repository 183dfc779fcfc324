"""A learner rank's checkpoint: what it saves for --resume and for users, and how it loads it back.

A mixin of learner/rank.LearnerRank (its Ray actor's methods `save_checkpoint` and
`load_checkpoint`), kept apart so the rank's own module is its training step. It reads the rank's
`engine` (DeepSpeed), `rank`, `rng`, `steps`, `tokenizer`, `model_folder`, `learner_cfg` and
`full_state_dict()`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from safetensors.torch import save_file


def save_no_frozen_alias(engine) -> None:
    """Make `save_checkpoint(exclude_frozen_parameters=True)` leave out every frozen tensor.
    DeepSpeed 0.19.8 drops the names `named_parameters()` lists, which names a tied weight once:
    a tied LM head (`lm_head.weight`, the embedding under another name: 113 MB in fp32 for
    SmolLM2-135M) stayed in a LoRA run's checkpoint. A non-strict load leaves it tied as it was."""
    original = engine.module_state_dict

    def module_state_dict(*args, exclude_frozen_parameters: bool = False, **kwargs):
        state = original(*args, exclude_frozen_parameters=exclude_frozen_parameters, **kwargs)
        if exclude_frozen_parameters:
            for name, param in engine.module.named_parameters(remove_duplicate=False):
                if not param.requires_grad:
                    state.pop(name, None)
        return state

    engine.module_state_dict = module_state_dict


class RankCheckpoints:
    def _trainable_gathered(self):
        """Context giving every rank the full trainable parameters (a no-op below ZeRO-3):
        enough for the adapter, without gathering the frozen base."""
        import deepspeed

        if self.learner_cfg.zero_stage == 3:
            params = [p for p in self.engine.module.parameters() if p.requires_grad]
            return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
        return contextlib.nullcontext()

    def save_checkpoint(self, ckpt_dir: str, client_state: dict | None = None, merged: bool = True) -> bool:
        """<ckpt_dir>/ds: DeepSpeed state of every rank for --resume: the parameters that train
        (every weight of a full fine-tune; a LoRA run's adapter and any auxiliary head) and their
        optimizer states. A LoRA run's frozen base is not saved: it is model.path's, and the driver
        checks on resume that model.path is the same base (cluster/driver/checkpoint.py).
        <ckpt_dir>/hf (rank 0): a full fine-tune's weights in HF format; a LoRA run's adapter as
        peft saves it (adapter_model.safetensors + adapter_config.json) and the tokenizer, plus
        with `merged` the merged model in hf/merged. ckpt_dir must be storage every rank can reach
        (a shared filesystem on a multi-node cluster). All ranks call it (ZeRO-3 gathers)."""
        client = {"rng": self.rng.getstate(), "torch_rng": torch.get_rng_state(),
                   "trainable": self._trainable_names(), **(client_state or {})}
        self.engine.save_checkpoint(ckpt_dir, tag="ds", client_state=client, exclude_frozen_parameters=True)
        target = Path(ckpt_dir) / "hf"
        if self.learner_cfg.lora.enabled:
            self._save_adapter(target)
            if not merged:
                return True
            target = target / "merged"
        state = self.full_state_dict()
        if state is not None:
            self._save_hf(target, state)
        return True

    def _save_adapter(self, target: Path) -> None:
        """The LoRA adapter as `peft.PeftModel.save_pretrained` writes it (peft and vLLM's LoRA
        load it; core/adapters.py reads it back as an adapter payload), and the tokenizer."""
        with self._trainable_gathered():
            if self.rank != 0:
                return
            self.engine.module.lm.save_pretrained(str(target))
        self.tokenizer.save_pretrained(target)

    def _save_hf(self, target: Path, state: dict[str, torch.Tensor]) -> None:
        from transformers import AutoConfig

        target.mkdir(parents=True, exist_ok=True)
        save_file(state, str(target / "model.safetensors"), metadata={"format": "pt"})
        AutoConfig.from_pretrained(self.model_folder).save_pretrained(target)
        self.tokenizer.save_pretrained(target)
        gen = Path(self.model_folder) / "generation_config.json"
        if gen.exists():
            (target / "generation_config.json").write_bytes(gen.read_bytes())

    def _trainable_names(self) -> list[str]:
        return [name for name, p in self.engine.module.named_parameters() if p.requires_grad]

    def load_checkpoint(self, ckpt_dir: str) -> dict:
        """Restore what save_checkpoint wrote to <ckpt_dir>/ds. A LoRA run's checkpoint holds no
        frozen base weights: the module loads non-strictly, the base staying model.path's; the
        names of the parameters that trained are compared instead, as a strict load would."""
        path, client = self.engine.load_checkpoint(ckpt_dir, tag="ds",
                                                   load_module_strict=not self.learner_cfg.lora.enabled)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed state for rank {self.rank} under {ckpt_dir}/ds")
        client = client or {}
        saved, mine = client.get("trainable"), self._trainable_names()
        if saved is not None and saved != mine:
            differ = sorted(set(saved) ^ set(mine))[:3] or "their order"
            raise ValueError(f"{ckpt_dir}: the checkpoint trained {len(saved)} parameters, this policy trains "
                             f"{len(mine)} (differing: {differ}); learner.lora must be the checkpoint's")
        if "rng" in client:
            state = client["rng"]
            self.rng.setstate((state[0], tuple(state[1]), state[2]))
        if "torch_rng" in client:
            torch.set_rng_state(client["torch_rng"])
        self.steps = int(client.get("step", self.steps))
        return {k: v for k, v in client.items() if k not in ("rng", "torch_rng", "trainable")}
