"""DNO-Prct (arXiv 2404.03715): pick the training pair from K sampled responses.

The judge fills a K×K matrix pref[i, j] = P(i ≻ j). Each response's win rate is the
share of the others it beats; the pair is (best, worst) if their gap is large enough,
so that only clearly separated pairs drive the update.
"""

import math
import random

from torch import Tensor


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


def select_dno_pair(pref: Tensor, margin: float) -> tuple[int, int] | None:
    """(chosen, rejected) = (argmax, argmin) of the win rates, first index on ties;
    None when their win rates differ by less than `margin` (or not at all)."""
    r = win_rates(pref).tolist()
    chosen = max(range(len(r)), key=r.__getitem__)  # max/min return the first extremum
    rejected = min(range(len(r)), key=r.__getitem__)
    if chosen == rejected or r[chosen] - r[rejected] < margin:
        return None
    return chosen, rejected


def replay_mix(current: list, previous: list, fraction: float, rng: random.Random) -> list:
    """current plus items sampled without replacement from previous, so that replayed
    items make up at most `fraction` of the result (fewer if previous runs short)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must lie in [0, 1), got {fraction}")
    # n / (n + len(current)) <= fraction  <=>  n <= fraction·len(current) / (1 - fraction);
    # the epsilon keeps float noise (2.1 / 0.7 = 2.9999...) from dropping an item.
    n = math.floor(fraction * len(current) / (1 - fraction) + 1e-9)
    n = min(n, len(previous))
    return list(current) + rng.sample(previous, n)
