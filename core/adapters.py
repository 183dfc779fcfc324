"""A saved LoRA adapter, read back as the factors of an adapter payload (core/weights.py).

The learner saves a LoRA run's policy as `peft.PeftModel.save_pretrained` writes it:
adapter_config.json (r, lora_alpha, target modules, the base's path) and
adapter_model.safetensors, whose keys name the adapted module in peft's wrapping, e.g.
`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight` (A: r × in) and `...lora_B.weight`
(B: out × r). As factors of each weight's delta: {"model.layers.0.self_attn.q_proj.weight":
(A, s·B)}, ΔW = s·B·A with s = lora_alpha / r (lora_alpha / √r with rsLoRA) — what
learner.policy.lora_factors gives for the live model, so an engine loads a checkpoint exactly
as it loads a push. Read without peft (rollout actors need not import it).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."

# Settings a plain B·A delta cannot express (or that the learner never writes): refused by name.
_UNSUPPORTED = {"use_dora": False, "fan_in_fan_out": False, "lora_bias": False, "bias": "none",
                "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {}}


def is_adapter_folder(folder: str | Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def adapter_scale(config: dict) -> float:
    r, alpha = config["r"], config["lora_alpha"]
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def read_adapter_factors(folder: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{base weight name: (A, s·B)} of the plain LoRA adapter saved in `folder`."""
    folder = Path(folder)
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{folder}: a {config['peft_type']} adapter, not LoRA")
    for key, plain in _UNSUPPORTED.items():
        if config.get(key, plain) not in (plain, None, {}, False):
            raise ValueError(f"{folder}: adapter_config.json sets {key}={config[key]!r}; only plain LoRA "
                             "(a B·A delta per weight) can be loaded")
    scale = adapter_scale(config)
    tensors = load_file(str(folder / ADAPTER_WEIGHTS))
    factors = {}
    for key, a in tensors.items():
        if ".lora_A." in key:
            module = key.split(".lora_A.")[0].removeprefix(PEFT_PREFIX)
            b = tensors[key.replace(".lora_A.", ".lora_B.")]
            factors[f"{module}.weight"] = (a.contiguous(), (b * scale).contiguous())
        elif ".lora_B." not in key:
            raise ValueError(f"{folder}: {key} is not a LoRA factor; only plain LoRA adapters can be loaded")
    return factors
