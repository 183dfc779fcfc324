"""Pairwise preference losses on summed sequence log-probs.

Every loss is a function of the implicit-reward margin
    h = (log π(chosen) - log ref(chosen)) - (log π(rejected) - log ref(rejected))
and of the judge's strength p = P(chosen ≻ rejected), and returns one loss per pair (shape
[B]); the caller reduces (`batch_mean`). The judge orients each pair so p ≥ 0.5, but every
loss is also right for p < 0.5 (it then trains "rejected" over "chosen").

One rule for every loss:
- **a tie (p = 0.5 exactly) has no verdict and gives no gradient**, whatever h is: its
  per-pair loss is 0 and `batch_mean` leaves it out of the mean;
- only SPCE reads how far p is from 0.5; DPO, cDPO and IPO read the verdict alone
  (which side p is on: `verdict_sign`), so `loss.hard_labels` (p → its verdict 1 / 0.5 / 0)
  turns SPCE into DPO exactly.
Which loss a run uses is its method's choice (cluster/methods/); the tie is masked there
(`Method.masked_pair_loss`) and left out of the mean here (`batch_mean`).
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_beta(beta: float) -> None:
    if not beta > 0:  # also rejects NaN
        raise ValueError(f"beta must be > 0, got {beta}")


def as_prob(p: Tensor | float | None, like: Tensor) -> Tensor:
    """p as a tensor broadcastable to `like`, after checking it is a probability."""
    if p is None:
        raise ValueError("the loss needs the judge's strengths p (a tie gives no gradient under every loss), got None")
    p = torch.as_tensor(p, dtype=like.dtype, device=like.device)
    bad = ~((p >= 0) & (p <= 1))  # NaN fails both comparisons, so it counts as bad
    if bad.any():
        raise ValueError(f"p must lie in [0, 1], got {p[bad].flatten()[0].item()}")
    return p


def preference_margin(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor
) -> Tensor:
    """h: how much more the policy (relative to the reference) favours chosen over rejected."""
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)


def length_normalized(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
    chosen_lengths: Tensor, rejected_lengths: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Summed log-probs → mean per-token log-probs (policy and reference alike), so h no longer
    grows with response length (SimPO's normalisation; IPO's as its authors and TRL run it)."""
    lc = chosen_lengths.to(policy_chosen.dtype).clamp(min=1)
    lr = rejected_lengths.to(policy_rejected.dtype).clamp(min=1)
    return policy_chosen / lc, policy_rejected / lr, ref_chosen / lc, ref_rejected / lr


def rpo_nll(policy_chosen: Tensor, policy_rejected: Tensor, chosen_lengths: Tensor, rejected_lengths: Tensor,
            p: Tensor) -> Tensor:
    """RPO's extra term: the per-token negative log-likelihood of the answer the judge prefers,
    "chosen" where p > 0.5 and "rejected" where p < 0.5 (the losses train that side too),
    mean over the pairs with a verdict (a tie has no preferred answer, so it is left out)."""
    p = p.to(policy_chosen.dtype)
    chosen = -policy_chosen / chosen_lengths.to(policy_chosen.dtype).clamp(min=1)
    rejected = -policy_rejected / rejected_lengths.to(policy_rejected.dtype).clamp(min=1)
    per = torch.where(p > 0.5, chosen, rejected)
    keep = decided(p)
    return torch.where(keep, per, torch.zeros_like(per)).sum() / keep.sum().clamp(min=1)


def spce_loss(h: Tensor, p: Tensor | float, beta: float) -> Tensor:
    """OSP soft-preference cross-entropy: -[p·logσ(βh) + (1-p)·logσ(-βh)].

    The Bradley-Terry probability σ(βh) is fitted to the judge's soft label p, so the
    gradient β(σ(βh) - p) vanishes at σ(βh) = p instead of pushing h to infinity as DPO does.
    logsigmoid keeps it finite for large |βh|.
    """
    _check_beta(beta)
    p = as_prob(p, h)
    z = beta * h
    return -(p * F.logsigmoid(z) + (1 - p) * F.logsigmoid(-z))


def hard_labels(p: Tensor) -> Tensor:
    """The judge's verdict, not its confidence: 1 where p > 0.5, 0 where p < 0.5. An exact tie
    (p = 0.5, e.g. two answers a verifier scores equally) has no verdict and keeps 0.5,
    rather than becoming a coin-flip label."""
    return torch.where(p > 0.5, torch.ones_like(p), torch.where(p < 0.5, torch.zeros_like(p), torch.full_like(p, 0.5)))


def decided(p: Tensor) -> Tensor:
    """Pairs with a verdict (p ≠ 0.5): the only ones any loss trains on."""
    return p != 0.5


def dpo_loss(h: Tensor, beta: float) -> Tensor:
    """DPO: -logσ(βh), i.e. SPCE with a hard label p = 1."""
    _check_beta(beta)
    return -F.logsigmoid(beta * h)


def cdpo_loss(h: Tensor, beta: float, label_smoothing: float) -> Tensor:
    """Conservative DPO: -(1-ε)logσ(βh) - ε·logσ(-βh), i.e. SPCE with constant p = 1-ε."""
    _check_beta(beta)
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing}")
    z = beta * h
    return -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)


def ipo_loss(h: Tensor, beta: float) -> Tensor:
    """IPO with τ = β: regress h onto 1/(2β) rather than maximising it."""
    _check_beta(beta)
    return (h - 1 / (2 * beta)) ** 2


def verdict_sign(p: Tensor) -> Tensor:
    """+1 where the judge prefers chosen (p > 0.5), −1 where it prefers rejected, 0 for a tie:
    sign(p − ½)·h is the margin of the preferred side, what the verdict-only losses read."""
    return torch.sign(p - 0.5)


def tie_masked(per_pair: Tensor, p: Tensor) -> Tensor:
    """Per-pair losses with every tie's (p = ½: no verdict) set to 0 with zero gradient: where(),
    not a product, so the tie's branch gets no gradient even if its loss were inf (an IPO
    margin of 1e300, say)."""
    return torch.where(decided(p), per_pair, torch.zeros_like(per_pair))


def batch_mean(per_pair: Tensor, p: Tensor, decided_in_step: int | None = None, world_size: int = 1) -> Tensor:
    """The step's loss from this rank's per-pair losses: their sum over the decided pairs of
    the whole step (`decided_in_step`, all ranks; default: this shard's), so a tie neither
    trains nor dilutes the others. DeepSpeed averages the ranks' gradients, so each rank's
    sum is scaled by the rank count to make the average the step's true mean."""
    count = int(decided(p).sum()) if decided_in_step is None else decided_in_step
    return per_pair.sum() * world_size / max(count, 1)


@torch.no_grad()
def reward_metrics(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float,
) -> dict[str, float]:
    """Batch means of the implicit rewards β·(log π - log ref), for logging."""
    _check_beta(beta)
    chosen = beta * (policy_chosen - ref_chosen).float()
    rejected = beta * (policy_rejected - ref_rejected).float()
    margin = chosen - rejected
    return {
        "rewards/chosen": chosen.mean().item(),
        "rewards/rejected": rejected.mean().item(),
        "rewards/margin": margin.mean().item(),
        "rewards/accuracy": (margin > 0).float().mean().item(),
    }


@torch.no_grad()
def preference_diagnostics(
    sums: tuple[Tensor, Tensor, Tensor, Tensor],
    p: Tensor,
    beta: float,
    lengths: tuple[Tensor, Tensor],
    h: Tensor | None = None,
) -> dict[str, float]:
    """What a reviewer from OpenRLHF/TRL reads per step, from numbers already computed.

    - logps/chosen, logps/rejected: the policy's summed log-probs;
    - kl/policy_sft: mean of log π − log π_ref over the batch's responses, the usual estimate
      of KL(π ‖ π_ref) per response from samples of π. It is exact in expectation only for
      samples drawn from π itself: at rollout.temperature ≠ 1, with pairs up to
      max_staleness pushes old, or with pairs filtered (ties dropped) it is the mean
      log-ratio on the samples trained, and it can be negative;
    - fit/abs_error: mean |σ(βh) − p|, how far the Bradley-Terry probability is from its
      target (SPCE's optimum is 0; DPO's target is p = 1); `h`: the margin the loss used
      (length-normalised, say), else computed from the sums;
    - strength/near_half: share of pairs with |p − 0.5| < 0.05 (little preference signal);
    - length/chosen, length/rejected: mean response tokens.

    `sums`: summed log-probs (policy chosen, policy rejected, reference chosen, reference
    rejected); `lengths`: response tokens (chosen, rejected).
    """
    policy_chosen, policy_rejected, ref_chosen, ref_rejected = sums
    chosen_lengths, rejected_lengths = lengths
    _check_beta(beta)
    if h is None:
        h = preference_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    log_ratio = torch.cat([policy_chosen - ref_chosen, policy_rejected - ref_rejected]).float()
    p = p.to(h.dtype)
    return {
        "logps/chosen": policy_chosen.float().mean().item(),
        "logps/rejected": policy_rejected.float().mean().item(),
        "kl/policy_sft": log_ratio.mean().item(),
        "fit/abs_error": (torch.sigmoid(beta * h) - p).abs().float().mean().item(),
        "strength/near_half": ((p - 0.5).abs() < 0.05).float().mean().item(),
        "length/chosen": chosen_lengths.float().mean().item(),
        "length/rejected": rejected_lengths.float().mean().item(),
    }
