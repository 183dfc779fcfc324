"""The verifier's loop penalty: the repeated share by hand, and what it does to a pair."""

from __future__ import annotations

import math

import pytest

from judge.preferences import VerifierJudge
from judge.repetition import repeated_share
from judge.verifier import Instructions


@pytest.mark.parametrize("text, share", [
    ("", 0.0),
    ("too short", 0.0),                                          # fewer than 4 words: no 4-gram
    ("the cat sat on the mat today", 0.0),                       # 4 distinct 4-grams
    ("a b c d a b c d", 1 / 5),                                  # 5 grams, only the last (a b c d) seen before
    ("The Sky is blue. the sky, IS blue!", 1 / 5),               # case and punctuation ignored
])
def test_repeated_share_by_hand(text, share):
    assert repeated_share(text) == pytest.approx(share)


def test_repeated_share_of_a_loop_approaches_one():
    # "x y z w" four times: 13 grams, the first 4 new (x y z w / y z w x / z w x y / w x y z), 9 repeats.
    assert repeated_share("x y z w " * 4) == pytest.approx(9 / 13)
    assert repeated_share("I have seen the peaks. " * 50) > 0.95


def test_the_loop_penalty_ranks_the_answer_that_does_not_loop_above_the_one_that_does():
    """Would catch the penalty not applied (a tie: both answers follow the instruction) or applied
    with the wrong sign (the looping answer would win)."""
    ins = Instructions(("punctuation:no_comma",), ({},))
    prose = "Tea is a drink made from leaves that people enjoy all over the world"
    loop = "Tea is good. " * 6  # 18 words, 15 grams, 12 repeated
    plain, penalised = VerifierJudge({"q": ins}, tau=0.5), VerifierJudge({"q": ins}, tau=0.5, loop_penalty=0.5)
    assert plain.compare(["q"], [prose], [loop]) == [0.5]
    assert penalised.share("q", prose) == 1.0
    assert penalised.share("q", loop) == pytest.approx(1.0 - 0.5 * 12 / 15)
    assert penalised.compare(["q"], [prose], [loop])[0] == pytest.approx(1 / (1 + math.exp(-(0.5 * 12 / 15) / 0.5)))
    # A followed instruction still outweighs the loop: a looping pass beats a fluent failure.
    assert penalised.compare(["q"], [loop], ["Tea, coffee, and water are drinks people enjoy"])[0] > 0.5
