"""The trainable policy: a causal LM (full or LoRA via peft) plus optional auxiliary heads.

One nn.Module so DeepSpeed wraps, shards and checkpoints everything that trains together.
"""

from __future__ import annotations

import torch
from torch import nn

from core.config import LoraConfig
from core.weights import ADAPTER, adapter_payload, full_payload
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
    lora: LoraConfig | None = None,
    num_degrees: int = 0,
    gradient_checkpointing: bool = False,
) -> Policy:
    # Lazy, as in every actor module: transformers and peft read the environment at import
    # (the hub settings among it), which the actor applies first thing; the driver never needs them.
    import peft
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
    lm.config.use_cache = False
    if gradient_checkpointing:
        # Non-reentrant: gradients reach LoRA weights inside a checkpointed layer even though its
        # input (the frozen embedding's output) does not require grad.
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora is not None and lora.enabled:
        lm = peft.get_peft_model(
            lm,
            peft.LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=list(lora.target_modules),
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


@torch.no_grad()
def lora_factors(lm: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The adapter as factors of each weight's delta: {base weight name: (A, s·B)}, ΔW = s·B·A.

    Several active adapters on one module stack into one pair (rows of A, columns of B), so
    the product is the sum of their deltas. Only plain LoRA on nn.Linear factors this way;
    for DoRA or transposed (Conv1D) layers this raises and the full payload must be used.
    """
    from peft.tuners.lora import LoraLayer

    factors = {}
    for name, module in base_model(lm).named_modules():
        if not isinstance(module, LoraLayer) or module.merged:
            continue
        a_parts, b_parts = [], []
        for adapter in module.active_adapters:
            if adapter not in module.lora_A:
                continue
            if module.use_dora.get(adapter) or getattr(module, "fan_in_fan_out", False):
                raise ValueError(f"{name}: DoRA or fan_in_fan_out LoRA has no plain B·A delta; "
                                 "use weight_sync.payload=full")
            a_parts.append(module.lora_A[adapter].weight.detach())
            b_parts.append(module.lora_B[adapter].weight.detach() * module.scaling[adapter])
        if a_parts:
            factors[f"{name}.weight"] = (torch.cat(a_parts, 0).contiguous(), torch.cat(b_parts, 1).contiguous())
    return factors


def policy_payload(lm: nn.Module, kind: str) -> dict:
    """The payload of a policy (a transformers LM, with or without peft LoRA): `adapter` (its
    LoRA factors) or `full` (its merged weights). Tensors on CPU are viewed, not copied."""
    if kind == ADAPTER:
        return adapter_payload(lora_factors(lm))
    return full_payload(merged_state_dict(lm))
