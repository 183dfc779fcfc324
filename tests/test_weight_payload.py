"""The push payloads without engines: LoRA factors reproduce the learner's merged weights,
fused groups widen to whole groups, and tensors survive the numpy round trip (bf16 too)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.engine_weights import merge_deltas, with_fused_siblings
from core.config import LoraConfig
from core.weights import adapter_factors, adapter_payload, from_numpy, full_payload, full_state, payload_bytes, to_numpy
from learner.policy import build_policy, lora_factors, merged_state_dict

PACKED = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}


@pytest.fixture(scope="module")
def trained_lora(tiny_model_dir):
    """A LoRA policy whose B matrices are non-zero (fresh LoRA has B = 0: ΔW = 0 would prove nothing)."""
    torch.manual_seed(0)
    lora = LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj", "up_proj"])
    policy = build_policy(tiny_model_dir, "float32", lora)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return policy.lm


def test_factors_reproduce_the_merged_weights(trained_lora):
    merged = merged_state_dict(trained_lora)
    factors = lora_factors(trained_lora)
    assert sorted(factors) == sorted(k for k in merged if k.endswith(("q_proj.weight", "v_proj.weight", "up_proj.weight")))
    # W0: the base layers' own weights (LoRA never changes them).
    w0 = {k.replace(".base_layer.", "."): v for k, v in trained_lora.get_base_model().state_dict().items() if "lora_" not in k}
    names = with_fused_siblings(sorted(factors), PACKED)
    rebuilt = merge_deltas({n: w0[n] for n in names}, factors)
    for name in names:
        torch.testing.assert_close(rebuilt[name], merged[name], rtol=0, atol=1e-6)
    # An unadapted member of a touched group goes back as W0, exactly.
    k_name = next(n for n in names if n.endswith("k_proj.weight"))
    assert torch.equal(rebuilt[k_name], w0[k_name])


def test_factors_scale_b_by_alpha_over_r(trained_lora):
    from peft.tuners.lora import LoraLayer

    module = next(m for m in trained_lora.get_base_model().modules() if isinstance(m, LoraLayer))
    name = next(n for n, m in trained_lora.get_base_model().named_modules() if m is module)
    a, b = lora_factors(trained_lora)[f"{name}.weight"]
    assert module.scaling["default"] == 8 / 4
    torch.testing.assert_close(b, module.lora_B["default"].weight * 2.0)
    torch.testing.assert_close(a, module.lora_A["default"].weight)


def test_fused_groups_are_widened_once_and_in_order():
    names = ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.v_proj.weight",
             "model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    assert with_fused_siblings(names, PACKED) == [
        "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.v_proj.weight", "model.layers.1.mlp.gate_proj.weight",
        "model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.down_proj.weight",
    ]
    assert with_fused_siblings(names[:1], {}) == names[:1]  # a model with no fused layers


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_numpy_round_trip_keeps_dtype_and_bits(dtype):
    t = torch.randn(3, 5).to(dtype)
    array, name = to_numpy(t)
    assert isinstance(array, np.ndarray)
    back = from_numpy(array, name)
    assert back.dtype == dtype and torch.equal(back.view(torch.int8), t.view(torch.int8))


def test_payloads_round_trip_and_count_bytes(trained_lora):
    import pickle

    factors = lora_factors(trained_lora)
    adapter = pickle.loads(pickle.dumps(adapter_payload(factors), protocol=5))
    for name, (a, b) in adapter_factors(adapter).items():
        assert torch.equal(a, factors[name][0]) and torch.equal(b, factors[name][1])
    state = merged_state_dict(trained_lora)
    full = full_payload(state)
    assert payload_bytes(full) == sum(t.numel() * 4 for t in state.values())
    assert payload_bytes(adapter) == sum((a.numel() + b.numel()) * 4 for a, b in factors.values())
    assert payload_bytes(adapter) < payload_bytes(full) / 5
    assert all(torch.equal(v, state[k]) for k, v in full_state(full).items())


def test_dora_has_no_plain_factors(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    lm = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                        LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    with pytest.raises(ValueError, match="use weight_sync.payload=full"):
        lora_factors(lm)


def test_payload_and_transport_resolution():
    from cluster.driver.weight_sync import make_weight_sync
    from cluster.run import resolve_method, resolve_payload

    assert resolve_payload("auto", lora_enabled=True) == "adapter"
    assert resolve_payload("auto", lora_enabled=False) == "full"
    assert resolve_payload("full", lora_enabled=True) == "full"
    # Adapters are a few MB: they never take the broadcast path, whatever the device.
    assert resolve_method("auto", gpus_per_rank=1.0, payload="adapter") == "object_store"
    assert resolve_method("broadcast", gpus_per_rank=0.0, payload="full") == "broadcast"
    with pytest.raises(ValueError, match="set weight_sync.payload=full"):
        make_weight_sync("broadcast", [], [], "adapter")
