"""Summed log-probs of responses given prompts: the quantity every preference loss compares.

Shared by the learner (policy, with grad) and the judge (frozen SFT reference, no grad), so
both compute h = log π(a|x) - log π_SFT(a|x) with identical arithmetic.
"""

from __future__ import annotations

from typing import Sequence

import torch


def pack_right_padded(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask, response_mask — all [B, T]; response_mask marks the
    response tokens' positions (a token's log-prob is read one position earlier)."""
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    width = max(lengths)
    ids = torch.full((len(lengths), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(lengths), width), dtype=torch.long)
    response = torch.zeros((len(lengths), width), dtype=torch.bool)
    for row, (p, r) in enumerate(zip(prompts, responses)):
        seq = list(p) + list(r)
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[row, : len(seq)] = 1
        response[row, len(p) : len(seq)] = True
    return ids, attention, response


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(input_ids[:, t+1] | ≤ t) for t < T-1, shape [B, T-1], in float32 or wider."""
    logits = logits[:, :-1].float()
    targets = input_ids[:, 1:].unsqueeze(-1)
    # gather − logsumexp: same as log_softmax().gather() without materialising the softmax.
    return logits.gather(-1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def sequence_logprobs(
    model,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    pad_id: int,
    return_hidden: bool = False,
):
    """Σ_t log π(response_t | prompt, response_<t) for each row → [B] (float32).

    With return_hidden, also the last hidden states [B, T, H] and a mask [B, T] of the
    response tokens' own positions (for heads that read the response, e.g. SPO's degree
    classifier, which pools the states of the response tokens: not the last prompt token,
    and including the final response token).
    """
    device = next(model.parameters()).device
    ids, attention, response = pack_right_padded(prompts, responses, pad_id)
    ids, attention, response = ids.to(device), attention.to(device), response.to(device)
    # Only positions from the shortest prompt's last token on predict a response token: the LM
    # head (vocab-wide, a quarter of a small model's FLOPs per position), its log-sum-exp and, in
    # the learner, their gradients skip the prompt positions before it.
    width = ids.shape[1]
    keep = width - max(min(len(p) for p in prompts) - 1, 0)
    out = model(input_ids=ids, attention_mask=attention, output_hidden_states=return_hidden, use_cache=False,
                logits_to_keep=keep)
    first = width - keep  # out.logits[:, j] is position first + j
    per_token = token_logprobs(out.logits, ids[:, first:])
    mask = response[:, first + 1 :]  # the token at t+1 is a response token
    totals = (per_token * mask).sum(-1)
    if not return_hidden:
        return totals
    return totals, out.hidden_states[-1], response
