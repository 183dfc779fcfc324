"""SPO: self-supervised preference optimization (arXiv 2409.17791), the project's reading.

Alongside DPO on the pair, the policy learns to tell *how much* of a response's key
content is missing: responses are degraded by deleting their top RAKE keyword phrases
at graded ratios, and a linear head on the pooled hidden state classifies the ratio.
The learner adds λ·spo_degree_loss to the DPO loss. The degradation itself (RAKE phrases
removed at a ratio) is text work shared with the judge's scorers: core/text.py.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from core.config import SPO_RATIOS


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
