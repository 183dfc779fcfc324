"""A LoRA checkpoint's adapter, saved as peft saves it, read back as push factors (core/adapters.py):
the same factors the learner pushes from the live model, and refusals of what is not plain LoRA."""

from __future__ import annotations

import json

import pytest
import torch

from core.adapters import is_adapter_folder, read_adapter_factors
from learner.policy import lora_factors


def _trained(model_dir: str, **lora):
    """A peft LoRA model whose B matrices are non-zero (a fresh adapter's ΔW = 0 proves nothing)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    lm = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], **lora))
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return lm


@pytest.mark.parametrize("rslora", [False, True], ids=["alpha/r", "rslora-alpha/sqrt(r)"])
def test_a_saved_adapter_reads_back_as_the_learners_own_factors(tiny_model_dir, tmp_path, rslora):
    """Bit for bit what learner.policy.lora_factors gives for the live model, so an engine loads
    a checkpoint as it loads a push. Would catch a wrong scale (alpha/r vs alpha/√r: 2 vs 4 here),
    A and B swapped, or a key mapped to the wrong base weight."""
    lm = _trained(tiny_model_dir, use_rslora=rslora)
    lm.save_pretrained(str(tmp_path / "hf"))
    assert is_adapter_folder(tmp_path / "hf") and not is_adapter_folder(tiny_model_dir)
    read = read_adapter_factors(tmp_path / "hf")
    live = lora_factors(lm)
    assert sorted(read) == sorted(live) and len(read) == 2 * 3  # 2 layers × 3 target modules
    assert "model.layers.1.mlp.down_proj.weight" in read
    for name, (a, b) in live.items():
        assert torch.equal(read[name][0], a) and torch.equal(read[name][1], b), name


def test_what_is_not_plain_lora_is_refused_by_name(tiny_model_dir, tmp_path):
    lm = _trained(tiny_model_dir)
    lm.save_pretrained(str(tmp_path / "hf"))
    config_path = tmp_path / "hf" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ValueError, match=r"adapter_config.json sets use_dora=True; only plain LoRA"):
        read_adapter_factors(tmp_path / "hf")
    config_path.write_text(json.dumps({**config, "rank_pattern": {"q_proj": 8}}))
    with pytest.raises(ValueError, match=r"sets rank_pattern=\{'q_proj': 8\}"):
        read_adapter_factors(tmp_path / "hf")
