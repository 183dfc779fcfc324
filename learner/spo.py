"""SPO: self-supervised preference optimization (arXiv 2409.17791), the project's reading.

Alongside DPO on the pair, the policy learns to tell *how much* of a response's key
content is missing: responses are degraded by deleting their top RAKE keyword phrases
at graded ratios, and a linear head on the pooled hidden state classifies the ratio.
The learner adds λ·spo_degree_loss to the DPO loss. The degradation itself (RAKE phrases
removed at a ratio) is text work shared with the judge's scorers: core/text.py.
"""

import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from core.config import SPO_RATIOS
from core.logprobs import sequence_logprobs
from core.text import degrade, degrees_distinct


class PreferenceDegreeHead(torch.nn.Module):
    """Classifies the degradation degree from the mean hidden state over response tokens."""

    def __init__(self, hidden_size: int, num_degrees: int = len(SPO_RATIOS)):
        super().__init__()
        self.proj = torch.nn.Linear(hidden_size, num_degrees)

    def forward(self, hidden_states: Tensor, response_mask: Tensor) -> Tensor:
        mask = response_mask.bool().unsqueeze(-1)  # [B, T, 1]
        # masked_fill rather than multiply: padding may hold inf/NaN, and NaN·0 is NaN.
        summed = hidden_states.masked_fill(~mask, 0).sum(dim=1)
        pooled = summed / mask.sum(dim=1).clamp(min=1)
        # The backbone may run in bf16 while the head stays in its own (fp32) dtype.
        return self.proj(pooled.to(self.proj.weight.dtype))


def spo_degree_loss(logits: Tensor, degree_index: Tensor) -> Tensor:
    """Mean cross-entropy of the degree classifier; computed in at least fp32."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(logits, degree_index)


def spo_degree_term(policy, tokenizer, pad_id: int, prompt_tokens: list[list[int]], chosen_texts: list[str],
                    ratios: Sequence[float], rng: random.Random) -> tuple[Tensor, dict[str, float]]:
    """SPO's degree loss on a shard's chosen answers (before λ), and its metrics.

    Each answer is degraded at a ratio drawn from `ratios`, and the head on `policy` (a
    learner.policy.Policy) classifies the ratio. An answer with too few keyword phrases for
    the classes to differ (core.text.degrees_distinct: "Yes." loses its one phrase at every
    non-zero ratio) has no learnable label: it is skipped, and `spo/skipped_share` counts it."""
    degraded, degree, prompts = [], [], []
    for prompt, text in zip(prompt_tokens, chosen_texts):
        new_text, index = degrade(text, ratios, rng)  # drawn for every answer, so the random stream
        if not degrees_distinct(text, ratios):        # does not depend on which ones are skipped
            continue
        degraded.append(tokenizer(new_text, add_special_tokens=False)["input_ids"] or [pad_id])
        degree.append(index)
        prompts.append(prompt)
    metrics = {"spo/skipped_share": 1.0 - len(degraded) / max(len(chosen_texts), 1)}
    if not degraded:
        # No learnable label in this shard: a zero that still reaches the head, so every rank's
        # backward covers the same parameters (DeepSpeed reduces them all).
        return 0.0 * sum(p.sum() for p in policy.degree_head.parameters()), metrics
    _, hidden, mask = sequence_logprobs(policy.lm, prompts, degraded, pad_id, return_hidden=True)
    loss = spo_degree_loss(policy.degree_head(hidden, mask), torch.tensor(degree, device=hidden.device))
    metrics["loss/spo_degree"] = float(loss.detach())
    return loss, metrics
