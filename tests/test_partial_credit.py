"""Partial credit: how close a failed instruction came, by hand, kind by kind."""

from __future__ import annotations

import pytest

from judge.partial_credit import CREDIT, GRADES, instruction_score
from judge.preferences import VerifierJudge
from judge.verifier import INSTRUCTIONS, Instructions, verify


def test_every_checkable_kind_has_a_grade_or_is_named_as_having_none():
    """Would catch a kind added to the prompt sets with no grade: its all-fail pairs would stay ties."""
    assert set(INSTRUCTIONS) - set(GRADES) == set()


@pytest.mark.parametrize("kind, kwargs, text, grade", [
    ("change_case:english_lowercase", {}, "Hello world", 9 / 10),           # 9 of 10 letters lower case
    ("change_case:english_capital", {}, "HELLO world", 5 / 10),
    ("startend:quotation", {}, '"Tea is good.', 0.5),                      # opens, never closes
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Tea. Any other questions? Bye", 0.5),
    ("startend:end_checker", {"end_phrase": "Hope it helps?"}, "Tea. it helps?", 10 / 14),  # " it helps?" of "hope it helps?"
    ("detectable_format:json_format", {}, '```json\n{"tea": "green"', 0.9),  # a JSON object cut short
    ("detectable_format:json_format", {}, "{tea", 0.5),
    ("punctuation:no_comma", {}, "a, b, c", 1 / 3),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 100}, "word " * 25, 0.25),
    ("length_constraints:number_words", {"relation": "less than", "num_words": 10}, "word " * 19, 0.5),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 4}, "a *** b", 0.5),
    ("detectable_content:number_placeholders", {"num_placeholders": 4}, "[a] and [b]", 0.5),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Tea. ps enjoy", 0.5),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "* a\n* b\n* c\n* d\n* e\n* f", 0.5),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 4}, "*one* and *two*", 0.5),
    ("detectable_format:title", {}, "<< tea", 0.5),
    ("combination:two_responses", {}, "one ****** one", 0.5),               # the same answer twice fails
    ("combination:repeat_prompt", {"prompt_to_repeat": "Why is tea good?"}, "Why is coffee good?", 7 / 16),
    ("keywords:existence", {"keywords": ["tea", "milk"]}, "Tea only.", 0.5),
    ("keywords:frequency", {"keyword": "tea", "frequency": 3, "relation": "at least"}, "tea tea", 2 / 3),
    ("keywords:forbidden_words", {"forbidden_words": ["tea", "milk", "cup"]}, "tea and milk", 1 / 3),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 4, "let_relation": "at least"}, "zz", 0.5),
    ("length_constraints:number_sentences", {"num_sentences": 4, "relation": "at least"}, "Dr. Who came. Go.", 0.5),
    ("change_case:capital_word_frequency", {"capital_frequency": 3, "capital_relation": "less than"},
     "TEA AND MILK ARE HOT", 0.5),  # 5 capital words: 3 / (5 + 1)
])
def test_grades_by_hand(kind, kwargs, text, grade):
    """Each failing answer's closeness, computed by hand; the instruction really fails."""
    ins = Instructions((kind,), (kwargs,))
    assert not verify(text, ins).strict[0]
    assert GRADES[kind](text, kwargs) == pytest.approx(grade)
    assert instruction_score(kind, kwargs, text, False) == pytest.approx(CREDIT * grade)


def test_a_pass_always_beats_a_failure_and_ties_are_broken_toward_the_instruction():
    """The judge's whole point: two lowercase failures are no longer a tie (the bug it fixes:
    every pair on a kind SFT never passes ties, so nothing is learned), and a pass still wins."""
    ins = Instructions(("change_case:english_lowercase",), ({},))
    plain, partial = VerifierJudge({"q": ins}, tau=0.5), VerifierJudge({"q": ins}, tau=0.5, partial_credit=True)
    closer, farther = "tea is Good for you", "TEA IS GOOD"
    assert plain.compare(["q"], [closer], [farther]) == [0.5]
    assert partial.compare(["q"], [closer], [farther])[0] > 0.5
    assert partial.share("q", "tea is good for you") == 1.0 > CREDIT >= partial.share("q", closer)
    assert instruction_score("change_case:english_lowercase", {}, "", False) == 0.0  # nothing written, nothing earned


@pytest.mark.parametrize("text, grade", [
    ("I don't know.", 0.0),          # "no" inside "know"
    ("It is not clear to me.", 0.0),  # "no" inside "not"
    ("Nobody can say.", 0.0),
    ("No, it is not.", 0.5),          # the option's word, not IFEval's sentence
    ("Maybe", 0.5),
    ("My answer is yes", 0.5),        # no full stop: IFEval wants the whole sentence
])
def test_constrained_response_credits_a_whole_option_only(text, grade):
    """Bug it catches: partial credit for a substring, so "know" and "not" earned the ½ of an
    answer that names an option, and the judge preferred them over an answer without either."""
    kind = "detectable_format:constrained_response"
    assert not verify(text, Instructions((kind,), ({},))).strict[0]
    assert GRADES[kind](text, {}) == grade
