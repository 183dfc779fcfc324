"""The trainable policy: a causal LM (full or LoRA via peft) plus optional auxiliary heads.

One nn.Module so DeepSpeed wraps, shards and checkpoints everything that trains together.
"""

from __future__ import annotations

import torch
from torch import nn

from learner.spo import PreferenceDegreeHead


class Policy(nn.Module):
    def __init__(self, lm: nn.Module, num_degrees: int = 0):
        super().__init__()
        self.lm = lm
        hidden = lm.config.hidden_size
        self.degree_head = PreferenceDegreeHead(hidden, num_degrees) if num_degrees else None

    def forward(self, *args, **kwargs):  # DeepSpeed calls engine(...) → here
        return self.lm(*args, **kwargs)


def build_policy(
    model_path: str,
    dtype: str = "float32",
    lora: dict | None = None,
    num_degrees: int = 0,
) -> Policy:
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
    lm.config.use_cache = False
    if lora and lora.get("enabled"):
        from peft import LoraConfig, get_peft_model

        lm = get_peft_model(
            lm,
            LoraConfig(
                r=lora["r"],
                lora_alpha=lora["alpha"],
                lora_dropout=lora["dropout"],
                target_modules=list(lora["target_modules"]),
                task_type="CAUSAL_LM",
            ),
        )
    return Policy(lm, num_degrees)


def base_model(lm: nn.Module) -> nn.Module:
    return lm.get_base_model() if hasattr(lm, "get_base_model") else lm


@torch.no_grad()
def merged_state_dict(lm: nn.Module) -> dict[str, torch.Tensor]:
    """Full policy weights in the base model's own names, LoRA deltas merged in.

    Computed out of place (W + ΔW) instead of peft's merge/unmerge, which would leave
    rounding residue in the trained weights. A tied LM head is left out: it is the
    embedding, and vLLM loads it from there.
    """
    from peft.tuners.lora import LoraLayer

    base = base_model(lm)
    state = {}
    for name, tensor in base.state_dict().items():
        if "lora_" in name:
            continue
        state[name.replace(".base_layer.", ".")] = tensor.detach()
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer) and not module.merged:
            delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
            key = f"{name}.weight"
            state[key] = state[key] + delta.to(state[key].dtype)
    if getattr(base.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    return {k: v.contiguous() for k, v in state.items()}
