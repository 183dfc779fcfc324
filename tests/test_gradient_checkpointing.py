"""learner.gradient_checkpointing: the same loss and LoRA gradients as without it, with fewer
activations kept for the backward pass (what the plan counts: cluster/capacity/memory.py)."""

from __future__ import annotations

import torch

from core.config import LoraConfig
from core.logprobs import sequence_logprobs
from learner.policy import build_policy


def _loss_grads_and_saved_bytes(model_dir: str, checkpointing: bool):
    torch.manual_seed(0)
    policy = build_policy(model_dir, "float32", LoraConfig(r=4, alpha=8), gradient_checkpointing=checkpointing)
    with torch.no_grad():  # fresh LoRA has B = 0; give the gradients of A something to flow through
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    policy.train()
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    prompts = [[5, 6, 7, 8, 9, 10] * 4, [11, 12, 13] * 5]
    responses = [[20, 21, 22, 23] * 5, [30, 31] * 8]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = -sequence_logprobs(policy.lm, prompts, responses, pad_id=0).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}
    return float(loss.detach()), grads, sum(saved)


def test_checkpointing_gives_the_same_gradients_and_keeps_fewer_activations(tiny_model_dir):
    """Would catch checkpointing that is not really on (same bytes kept), or a reentrant variant
    that silently drops the LoRA gradients of the checkpointed layers (zero grads)."""
    loss, grads, kept = _loss_grads_and_saved_bytes(tiny_model_dir, False)
    loss_ckpt, grads_ckpt, kept_ckpt = _loss_grads_and_saved_bytes(tiny_model_dir, True)
    assert abs(loss - loss_ckpt) < 1e-5
    assert grads.keys() == grads_ckpt.keys() and len(grads) > 0
    for name, g in grads.items():
        assert g.abs().sum() > 0, name
        torch.testing.assert_close(grads_ckpt[name], g, rtol=1e-4, atol=1e-6)
    assert kept_ckpt < 0.6 * kept  # only the layers' inputs (and the head) are kept
