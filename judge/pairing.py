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

How the ranked answers become pairs (config `judge.pairing`; the paper's pair-construction
ablation), all from the round-robin matrix:

- "ranked": the K//2 pairs above (the default);
- "best_worst": one pair a prompt, the best answer with the worst;
- "random": K//2 pairs of a random perfect matching (seeded by the answers, so a retry or a
  resume pairs the same way), each oriented by the judge.

A method may pair differently (DNO keeps one win-rate pair: cluster/methods/dno.py); the
methods call this module for ranked pairing and for the round-robin matrix.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

ANCHORS = ("round_robin", "sample0", "sft_greedy")
PAIRINGS = ("ranked", "best_worst", "random")

# judge_fn(list of (a, b) index-or-text pairs) -> p(a ≻ b) for each, swap-averaged.
JudgeFn = Callable[[list[tuple[str, str]]], list[float]]


@dataclass(frozen=True)
class JudgedPair:
    chosen: int  # index into the K responses
    rejected: int
    strength: float  # P(chosen ≻ rejected) ≥ 0.5


def check_k(k: int) -> None:
    """Ranked pairing uses every response once: an even K."""
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


def random_pairs(responses: Sequence[str]) -> list[tuple[int, int]]:
    """A random perfect matching of the K answers, seeded by their texts (the same on a retry)."""
    order = list(range(len(responses)))
    random.Random(zlib.crc32("\x00".join(responses).encode())).shuffle(order)
    return [(order[i], order[i + 1]) for i in range(0, len(order) - 1, 2)]


def judge_pairs(
    responses: Sequence[str],
    judge_fn: JudgeFn,
    anchor: str = "round_robin",
    anchor_response: str | None = None,
    pairing: str = "ranked",
) -> list[JudgedPair]:
    """Turn K responses into judged pairs: K//2 (one with pairing="best_worst")."""
    check_k(len(responses))
    if pairing not in PAIRINGS:
        raise ValueError(f"unknown judge.pairing {pairing!r}; choose one of {PAIRINGS}")
    if pairing != "ranked" and anchor != "round_robin":
        raise ValueError(f"judge.pairing={pairing} reads the round-robin matrix: it needs judge.anchor=round_robin")
    if anchor == "round_robin":
        pref = preference_matrix(responses, judge_fn)
        scores = (pref.sum(1) - 0.5) / (len(responses) - 1)  # mean over j ≠ i
        if pairing == "random":
            chosen = random_pairs(responses)
        else:
            chosen = rank_pairs(scores.tolist())
            chosen = chosen[:1] if pairing == "best_worst" else chosen
        return [orient(a, b, float(pref[a, b])) for a, b in chosen]
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


def pairs_per_prompt(k: int, anchor: str, pairing: str = "ranked") -> int:
    """Pairs one prompt's K responses become: K//2 whatever the anchor, one for best_worst."""
    check_k(k)
    if anchor not in ANCHORS:
        raise ValueError(f"unknown judge.anchor {anchor!r}; choose one of {ANCHORS}")
    return 1 if pairing == "best_worst" else k // 2


def comparisons_per_prompt(k: int, anchor: str) -> int:
    """Judge comparisons (each = 2 forwards for the swap) needed for one prompt."""
    check_k(k)
    if anchor == "round_robin":
        return k * (k - 1) // 2
    if anchor == "sft_greedy":
        return k + k // 2
    if anchor == "sample0":
        return (k - 1) + (k // 2 - 1)
    raise ValueError(f"unknown judge.anchor {anchor!r}; choose one of {ANCHORS}")
