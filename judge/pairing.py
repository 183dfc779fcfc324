"""Ranked pairing: K responses to one prompt → K//2 judged pairs.

The project's reading of OSP's ranked pairing: give each response a score, rank by it, and
pair rank i with rank K-1-i (best with worst, second with second-worst, ...), so each pair
has the widest available quality gap and every response is used once. Scores come from one
of three anchors (config `judge.anchor`):

- "round_robin": s_i = mean_j p(i ≻ j) over all other responses. K(K-1)/2 comparisons, and
  every pair's strength is already in the matrix: no further judging.
- "sft_greedy": s_i = p(i ≻ anchor) against the SFT model's greedy answer, then each ranked
  pair is judged directly: K + K/2 comparisons.
- "sample0": the same with response 0 as the anchor. Response 0 is not judged against
  itself (its score is 0.5), and the ranked pair that holds it already has its strength from
  the anchor round: (K − 1) + (K/2 − 1) comparisons.

"dno" uses the round-robin matrix to select DNO's single large-margin pair instead
(DNO-Prct, arXiv 2404.03715): each response's win rate is the share of the others it beats;
the pair is (best, worst) if their gap is at least `dno.margin`, so that only clearly
separated pairs drive the update. The pair keeps that orientation even when the judge's
direct comparison of the two disagrees (an intransitive judge: DNO's reason to exist), and
its strength is the win-rate gap mapped onto [0.5, 1]: (1 + r_chosen − r_rejected) / 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

ANCHORS = ("round_robin", "sample0", "sft_greedy", "dno")

# judge_fn(list of (a, b) index-or-text pairs) -> p(a ≻ b) for each, swap-averaged.
JudgeFn = Callable[[list[tuple[str, str]]], list[float]]


@dataclass(frozen=True)
class JudgedPair:
    chosen: int  # index into the K responses
    rejected: int
    strength: float  # P(chosen ≻ rejected) ≥ 0.5


def check_k(k: int, anchor: str = "round_robin") -> None:
    """Ranked pairing uses every response once: an even K. DNO keeps one pair of any K ≥ 2
    (the paper samples K = 5)."""
    if anchor == "dno":
        if k < 2:
            raise ValueError(f"DNO needs K ≥ 2 responses per prompt, got K={k}")
        return
    if k < 2 or k % 2:
        raise ValueError(f"ranked pairing needs an even K ≥ 2 responses per prompt, got K={k}")


def rank_pairs(scores: Sequence[float]) -> list[tuple[int, int]]:
    """Pair rank i with rank K-1-i. Ties keep the lower index first (stable sort)."""
    k = len(scores)
    check_k(k)
    order = sorted(range(k), key=lambda i: (-float(scores[i]), i))
    return [(order[i], order[k - 1 - i]) for i in range(k // 2)]


def orient(a: int, b: int, p_a_over_b: float) -> JudgedPair:
    """Put the judge's preferred response first, so strength is ≥ 0.5."""
    if p_a_over_b >= 0.5:
        return JudgedPair(a, b, float(p_a_over_b))
    return JudgedPair(b, a, float(1.0 - p_a_over_b))


def preference_matrix(responses: Sequence[str], judge_fn: JudgeFn) -> torch.Tensor:
    """pref[i, j] = p(i ≻ j) for all i ≠ j (diagonal 0.5), judging each unordered pair once."""
    k = len(responses)
    index_pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    probs = judge_fn([(responses[i], responses[j]) for i, j in index_pairs])
    pref = torch.full((k, k), 0.5, dtype=torch.float64)
    for (i, j), p in zip(index_pairs, probs):
        pref[i, j] = p
        pref[j, i] = 1.0 - p  # exact under swap averaging: p(j≻i) = 1 - p(i≻j)
    return pref


def judge_pairs(
    responses: Sequence[str],
    judge_fn: JudgeFn,
    anchor: str = "round_robin",
    anchor_response: str | None = None,
    dno_margin: float = 0.0,
) -> list[JudgedPair]:
    """Turn K responses into judged pairs (K//2 of them; DNO: at most one)."""
    check_k(len(responses), anchor)
    if anchor in ("round_robin", "dno"):
        pref = preference_matrix(responses, judge_fn)
        if anchor == "dno":
            picked = select_dno_pair(pref, dno_margin)
            return [] if picked is None else [dno_pair(pref, *picked)]
        scores = (pref.sum(1) - 0.5) / (len(responses) - 1)  # mean over j ≠ i
        return [orient(a, b, float(pref[a, b])) for a, b in rank_pairs(scores.tolist())]
    if anchor == "sft_greedy":
        if anchor_response is None:
            raise ValueError("anchor 'sft_greedy' needs the SFT model's greedy answer")
        scores = judge_fn([(r, anchor_response) for r in responses])
        ranked = rank_pairs(scores)
        probs = judge_fn([(responses[a], responses[b]) for a, b in ranked])
        return [orient(a, b, p) for (a, b), p in zip(ranked, probs)]
    if anchor == "sample0":
        scores = [0.5] + list(judge_fn([(r, responses[0]) for r in responses[1:]]))  # p(0 ≻ 0) = 0.5
        ranked = rank_pairs(scores)
        direct = [(a, b) for a, b in ranked if 0 not in (a, b)]
        judged = dict(zip(direct, judge_fn([(responses[a], responses[b]) for a, b in direct]))) if direct else {}
        # The pair holding response 0: p(a ≻ 0) is a's anchor score; p(0 ≻ b) = 1 − b's.
        known = {(a, b): scores[a] if b == 0 else 1.0 - scores[b] for a, b in ranked if 0 in (a, b)}
        return [orient(a, b, judged[(a, b)] if (a, b) in judged else known[(a, b)]) for a, b in ranked]
    raise ValueError(f"unknown judge.anchor {anchor!r}; choose one of {ANCHORS}")


def pairs_per_prompt(k: int, anchor: str) -> int:
    """Pairs one prompt's K responses become (at most): K//2 ranked pairs, or DNO's one. The
    driver counts what is in flight with it, so this is the one place the number is defined."""
    check_k(k, anchor)
    return 1 if anchor == "dno" else k // 2


def comparisons_per_prompt(k: int, anchor: str) -> int:
    """Judge comparisons (each = 2 forwards for the swap) needed for one prompt."""
    check_k(k, anchor)
    if anchor in ("round_robin", "dno"):
        return k * (k - 1) // 2
    if anchor == "sft_greedy":
        return k + k // 2
    if anchor == "sample0":
        return (k - 1) + (k // 2 - 1)
    raise ValueError(f"unknown judge.anchor {anchor!r}; choose one of {ANCHORS}")


# -- DNO-Prct's pair selection ------------------------------------------------------------
def win_rates(pref: Tensor) -> Tensor:
    """r_i = mean over j≠i of 1[pref[i,j] > 0.5], an exact tie (0.5) counting half.

    Hard wins, as DNO-Prct defines the win rate (the share of the others a response beats
    under the oracle). The soft alternative, the mean of pref[i, j], would let a judge that
    is near-indifferent everywhere (p ≈ 0.5, our 135M self-judge) produce no gap at all, while
    the hard rate still ranks by the judge's verdicts; dno.margin then filters on verdicts."""
    if pref.dim() != 2 or pref.shape[0] != pref.shape[1]:
        raise ValueError(f"pref must be a square K×K matrix, got shape {tuple(pref.shape)}")
    k = pref.shape[0]
    if k < 2:
        raise ValueError(f"need at least 2 responses to compare, got {k}")
    wins = (pref > 0.5).double() + 0.5 * (pref == 0.5).double()
    wins.fill_diagonal_(0)  # a response is not compared with itself
    return wins.sum(dim=1) / (k - 1)


def dno_pair(pref: Tensor, chosen: int, rejected: int) -> JudgedPair:
    """DNO's pick as a pair: never re-oriented by the direct comparison pref[chosen, rejected]
    (an intransitive judge may prefer the worst response head-to-head); the strength is the
    win-rate gap on [0.5, 1], so a gap of 1 (beats all / loses to all) is certain. DNO trains
    on the verdict (hard labels), so only its side of 0.5 matters to the loss."""
    r = win_rates(pref)
    return JudgedPair(chosen, rejected, float(0.5 + 0.5 * (r[chosen] - r[rejected])))


def select_dno_pair(pref: Tensor, margin: float) -> tuple[int, int] | None:
    """(chosen, rejected) = (argmax, argmin) of the win rates, first index on ties;
    None when their win rates differ by less than `margin` (or not at all)."""
    r = win_rates(pref).tolist()
    chosen = max(range(len(r)), key=r.__getitem__)  # max/min return the first extremum
    rejected = min(range(len(r)), key=r.__getitem__)
    if chosen == rejected or r[chosen] - r[rejected] < margin:
        return None
    return chosen, rejected
