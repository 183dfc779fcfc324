import random

import pytest
import torch

from cluster.driver.scheduler import replay_mix
from judge.pairing import select_dno_pair, win_rates

# 0 beats 1 and 2, 1 beats 2: win rates [1, 0.5, 0]. Diagonal holds junk on purpose.
PREF = torch.tensor([[0.9, 0.7, 0.8], [0.3, 0.1, 0.6], [0.2, 0.4, 0.99]])


def test_win_rates():
    assert win_rates(PREF).tolist() == [1.0, 0.5, 0.0]


def test_win_rates_exact_tie_counts_half():
    # 0 vs 1 tied (0.5 both ways); both beat 2 -> r = [(0.5+1)/2, (0.5+1)/2, 0]
    pref = torch.tensor([[0.5, 0.5, 0.9], [0.5, 0.5, 0.8], [0.1, 0.2, 0.5]])
    assert win_rates(pref).tolist() == [0.75, 0.75, 0.0]


def test_win_rates_bad_shape():
    with pytest.raises(ValueError, match="square"):
        win_rates(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="at least 2"):
        win_rates(torch.zeros(1, 1))


def test_select_pair():
    assert select_dno_pair(PREF, margin=0.0) == (0, 2)
    assert select_dno_pair(PREF, margin=1.0) == (0, 2)  # gap exactly 1 is kept


def test_select_pair_margin_filters():
    # a 3-cycle: every response wins once, r = [0.5, 0.5, 0.5]
    cycle = torch.tensor([[0.5, 0.8, 0.3], [0.2, 0.5, 0.7], [0.7, 0.3, 0.5]])
    assert win_rates(cycle).tolist() == [0.5, 0.5, 0.5]
    assert select_dno_pair(cycle, margin=0.0) is None  # nothing separates them
    # 4 responses, r = [2/3, 2/3, 1/3, 1/3]: gap 1/3 passes 0.3, fails 0.5
    pref = torch.tensor(
        [[0.5, 0.6, 0.7, 0.4],
         [0.4, 0.5, 0.6, 0.8],
         [0.3, 0.4, 0.5, 0.9],
         [0.6, 0.2, 0.1, 0.5]]
    )
    assert win_rates(pref).tolist() == pytest.approx([2 / 3, 2 / 3, 1 / 3, 1 / 3])
    assert select_dno_pair(pref, margin=0.3) == (0, 2)  # first index on ties, both ends
    assert select_dno_pair(pref, margin=0.5) is None


def test_select_pair_ties_take_first_index():
    pref = torch.tensor([[0.5, 0.5, 0.9], [0.5, 0.5, 0.8], [0.1, 0.2, 0.5]])
    assert select_dno_pair(pref, margin=0.5) == (0, 2)


def test_select_pair_needs_two():
    with pytest.raises(ValueError):
        select_dno_pair(torch.zeros(1, 1), margin=0.0)


def test_replay_counts():
    current, previous = list(range(7)), [f"old{i}" for i in range(10)]
    out = replay_mix(current, previous, 0.3, random.Random(0))
    # 3 / (3 + 7) = 0.3 exactly; 4 would be 4/11 > 0.3
    assert out[:7] == current and len(out) == 10
    replayed = out[7:]
    assert len(set(replayed)) == 3 and set(replayed) <= set(previous)


def test_replay_short_previous():
    out = replay_mix(list(range(7)), ["a", "b"], 0.3, random.Random(0))
    assert len(out) == 9 and sorted(out[7:]) == ["a", "b"]
    assert replay_mix(list(range(7)), [], 0.3, random.Random(0)) == list(range(7))


def test_replay_zero_and_rounding_down():
    assert replay_mix([1, 2], [9, 8, 7], 0.0, random.Random(0)) == [1, 2]
    # 0.3 · 2 / 0.7 = 0.857 -> 0 replayed (one would be 1/3 > 0.3)
    assert replay_mix([1, 2], [9, 8, 7], 0.3, random.Random(0)) == [1, 2]
    # 0.5 · 2 / 0.5 = 2 -> half the output replayed
    assert len(replay_mix([1, 2], [9, 8, 7], 0.5, random.Random(0))) == 4


def test_replay_deterministic_and_does_not_mutate():
    current, previous = list(range(7)), list(range(100, 120))
    a = replay_mix(current, previous, 0.3, random.Random(42))
    b = replay_mix(current, previous, 0.3, random.Random(42))
    assert a == b
    assert current == list(range(7)) and previous == list(range(100, 120))


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_replay_bad_fraction(fraction):
    with pytest.raises(ValueError, match="fraction"):
        replay_mix([1], [2], fraction, random.Random(0))
