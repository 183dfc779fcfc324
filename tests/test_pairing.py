"""Ranked pairing: K responses → K//2 judged pairs, for every anchor."""

from __future__ import annotations

import pytest
import torch

from judge.pairing import ANCHORS, JudgedPair, check_k, comparisons_per_prompt, judge_pairs, orient, preference_matrix, rank_pairs


class LengthJudge:
    """Bradley–Terry on length: p(a ≻ b) = len(a) / (len(a) + len(b)). Records every call."""

    def __init__(self):
        self.calls: list[list[tuple[str, str]]] = []

    def __call__(self, pairs):
        self.calls.append(list(pairs))
        return [len(a) / (len(a) + len(b)) for a, b in pairs]

    @property
    def comparisons(self) -> int:
        return sum(len(c) for c in self.calls)


class TableJudge:
    """p(a ≻ b) from an explicit table over response indices (p(b ≻ a) = 1 - p(a ≻ b);
    a response against itself: 0.5)."""

    def __init__(self, responses, table):
        self.index = {r: i for i, r in enumerate(responses)}
        self.table = table
        self.calls: list[list[tuple[str, str]]] = []

    def __call__(self, pairs):
        self.calls.append(list(pairs))
        out = []
        for a, b in pairs:
            i, j = self.index[a], self.index[b]
            if i == j:
                out.append(0.5)
                continue
            out.append(self.table[i, j] if (i, j) in self.table else 1.0 - self.table[j, i])
        return out


K4 = ["aa", "aaaa", "a", "aaa"]  # lengths 2, 4, 1, 3: best 1, then 3, 0, worst 2
K6 = ["aaa", "aaaaaa", "a", "aaaaa", "aa", "aaaa"]  # lengths 3, 6, 1, 5, 2, 4


def as_tuples(pairs: list[JudgedPair]) -> list[tuple[int, int, float]]:
    return [(p.chosen, p.rejected, p.strength) for p in pairs]


# -- check_k / rank_pairs / orient ---------------------------------------------------------


@pytest.mark.parametrize("k", [3, 5, 1, 0, -2])
def test_check_k_rejects_odd_and_small(k):
    with pytest.raises(ValueError, match=rf"even K ≥ 2 .* got K={k}"):
        check_k(k)


@pytest.mark.parametrize("k", [2, 4, 6, 8])
def test_check_k_accepts_even_and_every_response_lands_in_one_pair(k):
    """Would catch a K the pairing accepts but then pairs wrongly (a response left out or used twice)."""
    check_k(k)
    from judge.pairing import pairs_per_prompt

    assert pairs_per_prompt(k, "round_robin") == k // 2
    pairs = rank_pairs([float(i) for i in range(k)])
    assert sorted(i for pair in pairs for i in pair) == list(range(k))


def test_rank_pairs_best_with_worst():
    # Ranks by score: 1 (0.9), 3 (0.7), 0 (0.4), 2 (0.1).
    assert rank_pairs([0.4, 0.9, 0.1, 0.7]) == [(1, 2), (3, 0)]
    # K=6: 4 > 1 > 5 > 0 > 2 > 3.
    assert rank_pairs([0.3, 0.8, 0.2, 0.1, 0.9, 0.5]) == [(4, 3), (1, 2), (5, 0)]
    assert rank_pairs([0.2, 0.6]) == [(1, 0)]


def test_rank_pairs_ties_keep_lower_index_first():
    assert rank_pairs([0.5, 0.5, 0.5, 0.5]) == [(0, 3), (1, 2)]
    assert rank_pairs([0.1, 0.7, 0.7, 0.1]) == [(1, 3), (2, 0)]


def test_rank_pairs_uses_every_response_once():
    pairs = rank_pairs([0.6, 0.1, 0.3, 0.9, 0.2, 0.8])
    assert sorted(i for p in pairs for i in p) == list(range(6))


def test_rank_pairs_rejects_odd_k():
    with pytest.raises(ValueError, match="K=3"):
        rank_pairs([0.1, 0.2, 0.3])


def test_orient():
    assert orient(2, 5, 0.8) == JudgedPair(2, 5, 0.8)
    flipped = orient(2, 5, 0.3)
    assert (flipped.chosen, flipped.rejected) == (5, 2)
    assert flipped.strength == pytest.approx(0.7, abs=1e-15)
    assert orient(1, 0, 0.5) == JudgedPair(1, 0, 0.5)  # a tie keeps the given order
    assert orient(0, 1, 0.0) == JudgedPair(1, 0, 1.0)
    assert isinstance(orient(0, 1, torch.tensor(0.25, dtype=torch.float64)).strength, float)


# -- preference_matrix ------------------------------------------------------------------------


def test_preference_matrix_hand_values_and_one_call_per_unordered_pair():
    judge = LengthJudge()
    pref = preference_matrix(["a", "aa", "aaa"], judge)
    expected = torch.tensor(
        [
            [0.5, 1 / 3, 1 / 4],
            [2 / 3, 0.5, 2 / 5],
            [3 / 4, 3 / 5, 0.5],
        ],
        dtype=torch.float64,
    )
    assert pref.dtype == torch.float64
    torch.testing.assert_close(pref, expected, rtol=0, atol=1e-15)
    assert judge.calls == [[("a", "aa"), ("a", "aaa"), ("aa", "aaa")]]
    torch.testing.assert_close(pref + pref.T, torch.ones(3, 3, dtype=torch.float64), rtol=0, atol=1e-15)


# -- judge_pairs, one test per anchor -----------------------------------------------------------


def test_round_robin_k4_length_judge():
    judge = LengthJudge()
    pairs = judge_pairs(K4, judge, anchor="round_robin")
    # best (1, len 4) with worst (2, len 1): 4/5; then 3 (len 3) with 0 (len 2): 3/5.
    assert [(c, r) for c, r, _ in as_tuples(pairs)] == [(1, 2), (3, 0)]
    assert [p.strength for p in pairs] == pytest.approx([0.8, 0.6], abs=1e-15)
    assert judge.comparisons == comparisons_per_prompt(4, "round_robin") == 6
    assert len(judge.calls) == 1  # strengths come from the matrix: no further judging


def test_round_robin_k6_length_judge():
    judge = LengthJudge()
    pairs = judge_pairs(K6, judge, anchor="round_robin")
    # Ranked by length: 1 (6), 3 (5), 5 (4), 0 (3), 4 (2), 2 (1).
    assert [(p.chosen, p.rejected) for p in pairs] == [(1, 2), (3, 4), (5, 0)]
    assert [p.strength for p in pairs] == pytest.approx([6 / 7, 5 / 7, 4 / 7], abs=1e-15)
    assert judge.comparisons == comparisons_per_prompt(6, "round_robin") == 15


def test_round_robin_orients_a_pair_the_judge_reverses():
    # A non-transitive judge: 0 is ranked best (mean 2.2/3) and 3 worst (0.8/3), yet 3 beats 0.
    responses = ["r0", "r1", "r2", "r3"]
    table = {(0, 1): 0.9, (0, 2): 0.9, (0, 3): 0.4, (1, 2): 0.55, (1, 3): 0.9, (2, 3): 0.9}
    pairs = judge_pairs(responses, TableJudge(responses, table), anchor="round_robin")
    assert [(p.chosen, p.rejected) for p in pairs] == [(3, 0), (1, 2)]
    assert [p.strength for p in pairs] == pytest.approx([0.6, 0.55], abs=1e-15)
    assert all(p.strength >= 0.5 for p in pairs)


def test_sample0_anchor():
    judge = LengthJudge()
    pairs = judge_pairs(K4, judge, anchor="sample0")
    # Scores vs response 0 ("aa"): 0.5 (itself, not judged), 4/6, 1/3, 3/5 → ranks 1, 3, 0, 2.
    assert judge.calls[0] == [(r, "aa") for r in K4[1:]]  # never response 0 against itself
    assert judge.calls[1] == [("aaaa", "a")]  # (3, 0) already has p(3 ≻ 0) from the anchor round
    assert as_tuples(pairs) == [(1, 2, pytest.approx(0.8, abs=1e-15)), (3, 0, pytest.approx(0.6, abs=1e-15))]
    assert judge.comparisons == comparisons_per_prompt(4, "sample0") == 4


def test_sft_greedy_anchor_uses_the_given_answer():
    judge = LengthJudge()
    pairs = judge_pairs(K6, judge, anchor="sft_greedy", anchor_response="zzzz")
    assert judge.calls[0] == [(r, "zzzz") for r in K6]
    assert judge.calls[1] == [("aaaaaa", "a"), ("aaaaa", "aa"), ("aaaa", "aaa")]
    assert [(p.chosen, p.rejected) for p in pairs] == [(1, 2), (3, 4), (5, 0)]
    assert [p.strength for p in pairs] == pytest.approx([6 / 7, 5 / 7, 4 / 7], abs=1e-15)
    assert judge.comparisons == comparisons_per_prompt(6, "sft_greedy") == 9


def test_anchor_ranking_then_direct_judgement_is_oriented():
    # Against the anchor response 0, 1 scores highest and 3 lowest, but judged directly 3 ≻ 1.
    responses = ["r0", "r1", "r2", "r3"]
    table = {(0, 1): 0.2, (0, 2): 0.4, (0, 3): 0.7, (1, 2): 0.6, (1, 3): 0.3, (2, 3): 0.5}
    judge = TableJudge(responses, table)
    pairs = judge_pairs(responses, judge, anchor="sample0")
    # Scores p(i ≻ r0): 0.5, 0.8, 0.6, 0.3 → ranks 1, 2, 0, 3 → pairs (1, 3), (2, 0).
    assert judge.calls[1] == [("r1", "r3")]  # (2, 0): p(2 ≻ 0) = 0.6 from the anchor round
    assert [(p.chosen, p.rejected) for p in pairs] == [(3, 1), (2, 0)]
    assert [p.strength for p in pairs] == pytest.approx([0.7, 0.6], abs=1e-15)


def test_sft_greedy_needs_the_anchor_answer():
    with pytest.raises(ValueError, match="sft_greedy.*greedy answer"):
        judge_pairs(K4, LengthJudge(), anchor="sft_greedy")


def test_every_anchor_gives_oriented_pairs_covering_responses():
    for anchor in ANCHORS:
        judge = LengthJudge()
        pairs = judge_pairs(K6, judge, anchor=anchor, anchor_response="aaa")
        assert all(p.strength >= 0.5 for p in pairs), anchor
        assert judge.comparisons == comparisons_per_prompt(6, anchor), anchor
        assert sorted(i for p in pairs for i in (p.chosen, p.rejected)) == list(range(6)), anchor
        assert as_tuples(pairs)[0][:2] == (1, 2), anchor


def test_k2_gives_one_pair():
    pairs = judge_pairs(["aaa", "a"], LengthJudge(), anchor="round_robin")
    assert as_tuples(pairs) == [(0, 1, pytest.approx(0.75, abs=1e-15))]


def test_judge_pairs_rejects_odd_k_and_unknown_anchor():
    with pytest.raises(ValueError, match="K=3"):
        judge_pairs(["a", "b", "c"], LengthJudge())
    with pytest.raises(ValueError, match="unknown judge.anchor 'best'"):
        judge_pairs(K4, LengthJudge(), anchor="best")


# -- comparisons_per_prompt -------------------------------------------------------------------


def test_comparisons_per_prompt():
    assert comparisons_per_prompt(2, "round_robin") == 1
    assert comparisons_per_prompt(4, "round_robin") == 6
    assert comparisons_per_prompt(2, "sample0") == 1  # the one pair is the anchor comparison
    assert comparisons_per_prompt(6, "sample0") == 7
    assert comparisons_per_prompt(8, "sft_greedy") == 12
    with pytest.raises(ValueError, match="unknown judge.anchor"):
        comparisons_per_prompt(4, "nope")
    with pytest.raises(ValueError, match="K=5"):
        comparisons_per_prompt(5, "round_robin")


# -- the pair-construction ablation: ranked, best_worst, random ------------------------------


def test_best_worst_keeps_one_pair_the_best_with_the_worst():
    """K6 by length: best 1, worst 2 (the first ranked pair); one comparison matrix, one pair.
    Would catch best_worst returning the ranked list or the middle pair."""
    judge = LengthJudge()
    pairs = judge_pairs(K6, judge, anchor="round_robin", pairing="best_worst")
    assert as_tuples(pairs) == [(1, 2, pytest.approx(6 / 7))]
    assert judge.comparisons == comparisons_per_prompt(6, "round_robin")
    from judge.pairing import pairs_per_prompt

    assert pairs_per_prompt(6, "round_robin", "best_worst") == 1 and pairs_per_prompt(6, "round_robin") == 3


def test_random_pairs_are_a_seeded_perfect_matching_oriented_by_the_judge():
    """Every answer once, each pair oriented (strength ≥ ½), the same matching for the same answers
    (a retry or a resume), and not the ranked one for K6. Would catch a matching that repeats an
    answer, pairs unoriented, or a matching drawn from the global random stream."""
    from judge.pairing import random_pairs

    pairs = judge_pairs(K6, LengthJudge(), anchor="round_robin", pairing="random")
    assert sorted(i for p in pairs for i in (p.chosen, p.rejected)) == list(range(6))
    assert all(p.strength >= 0.5 for p in pairs)
    for p in pairs:  # each strength is the judge's own p of that pair
        a, b = len(K6[p.chosen]), len(K6[p.rejected])
        assert p.strength == pytest.approx(a / (a + b))
    assert random_pairs(K6) == random_pairs(list(K6))
    ranked = {(p.chosen, p.rejected) for p in judge_pairs(K6, LengthJudge(), anchor="round_robin")}
    assert {(p.chosen, p.rejected) for p in pairs} != ranked


def test_pairing_other_than_ranked_needs_the_round_robin_matrix():
    with pytest.raises(ValueError, match="needs judge.anchor=round_robin"):
        judge_pairs(K4, LengthJudge(), anchor="sample0", pairing="random")
    with pytest.raises(ValueError, match="unknown judge.pairing 'pairs'"):
        judge_pairs(K4, LengthJudge(), pairing="pairs")
