"""Partial credit for the verifier judge (`judge.partial_credit=true`): how close an answer that
fails an instruction came to following it.

IFEval's checks are pass/fail. On a kind the policy almost never passes (all-lowercase,
quotation marks around the whole answer, JSON, a fixed closing phrase), every one of the K
samples fails, every pair ties, and the run learns nothing about that kind. A graded score
breaks the tie in the direction of the instruction: the answer with more of its letters in
lower case, or that at least opens with a quotation mark, is preferred. An instruction
followed counts 1; one failed counts CREDIT · g with g ∈ [0, 1] its closeness below, so any
pass still beats any failure. Only the judge's score s uses it: the evaluation stays IFEval's
strict and loose accuracy.

Each g reads the answer the way IFEval's checker does (same splitting and counting rules), so
moving g up moves the answer toward passing. Kinds with no sensible grade get g = 0.
"""

from __future__ import annotations

import collections
import json
import re
from typing import Any, Callable

import langdetect
from if_verifiable.ifeval.instructions_util import count_sentences, count_words, nltk

from judge import punkt

punkt.install()  # the sentence counters read nltk's punkt data

CREDIT = 0.5  # the most a failed instruction can earn: a pass (1) always beats a failure


def _ratio_at_least(actual: float, target: float) -> float:
    return min(actual / target, 1.0) if target > 0 else 1.0


def _ratio_less_than(actual: float, target: float) -> float:
    """`actual < target` wanted: 1 just under the target, falling as actual grows past it."""
    return min(target / (actual + 1.0), 1.0)


def _relation(actual: float, target: float, relation: str) -> float:
    return _ratio_less_than(actual, target) if relation == "less than" else _ratio_at_least(actual, target)


def _exactly(actual: int, target: int) -> float:
    return 1.0 - abs(actual - target) / max(actual, target, 1)


def _letters(text: str) -> list[str]:
    return [c for c in text if c.isalpha()]


def lowercase(text: str, kw: dict) -> float:
    letters = _letters(text)
    return sum(c.islower() for c in letters) / len(letters) if letters else 0.0


def capital(text: str, kw: dict) -> float:
    letters = _letters(text)
    return sum(c.isupper() for c in letters) / len(letters) if letters else 0.0


def quotation(text: str, kw: dict) -> float:
    text = text.strip()
    return (text[:1] == '"') / 2 + (text[-1:] == '"') / 2


def end_phrase(text: str, kw: dict) -> float:
    """The share of the phrase the answer ends with (longest common suffix), or ½ if the phrase is there but not last."""
    text, phrase = text.strip().strip('"').lower(), kw["end_phrase"].strip().lower()
    common = 0
    while common < min(len(text), len(phrase)) and text[-1 - common] == phrase[-1 - common]:
        common += 1
    return max(common / len(phrase), 0.5 if phrase in text else 0.0)


def json_format(text: str, kw: dict) -> float:
    body = text.strip().removeprefix("```json").removeprefix("```JSON").removeprefix("```").removesuffix("```").strip()
    if not body:
        return 0.0
    opened, closed = body[0] in "{[", body[-1] in "}]"
    try:  # a prefix that parses once closed: the answer was a truncated JSON object
        json.loads(body + "}")
        return 0.9
    except ValueError:
        return opened / 2 + closed / 2 * opened


def no_comma(text: str, kw: dict) -> float:
    return 1.0 / (1.0 + text.count(","))


def number_words(text: str, kw: dict) -> float:
    return _relation(count_words(text), kw["num_words"], kw["relation"])


def number_sentences(text: str, kw: dict) -> float:
    return _relation(count_sentences(text), kw["num_sentences"], kw["relation"])


def capital_word_frequency(text: str, kw: dict) -> float:
    capitals = sum(word.isupper() for word in nltk.word_tokenize(text))
    return _relation(capitals, kw["capital_frequency"], kw["capital_relation"])


def number_paragraphs(text: str, kw: dict) -> float:
    paragraphs = [p for p in re.split(r"\s?\*\*\*\s?", text) if p.strip()]
    return _exactly(len(paragraphs), kw["num_paragraphs"])


def nth_paragraph_first_word(text: str, kw: dict) -> float:
    paragraphs = [p.strip() for p in re.split(r"\n\n", text) if p.strip()]
    count = _exactly(len(paragraphs), kw["num_paragraphs"])
    n = kw["nth_paragraph"]
    starts = n <= len(paragraphs) and paragraphs[n - 1].split()[0].strip("'\"").lower().startswith(kw["first_word"].lower())
    return count / 2 + starts / 2


def placeholders(text: str, kw: dict) -> float:
    return _ratio_at_least(len(re.findall(r"\[.*?\]", text)), kw["num_placeholders"])


def postscript(text: str, kw: dict) -> float:
    marker = kw["postscript_marker"].lower().replace(".", "").replace(" ", "")
    squashed = text.lower().replace(".", "").replace(" ", "")
    return 0.5 if marker in squashed else 0.0  # the marker is there, not where IFEval wants it


def bullet_lists(text: str, kw: dict) -> float:
    n = len(re.findall(r"^\s*\*[^\*].*$", text, flags=re.MULTILINE)) + len(re.findall(r"^\s*-.*$", text, flags=re.MULTILINE))
    return _exactly(n, kw["num_bullets"])


def constrained_response(text: str, kw: dict) -> float:
    """½ for an answer that names one of IFEval's options ("My answer is yes." / "no." /
    "maybe.") without its exact sentence: the lead-in or an option as a whole word ("know" and
    "not" hold "no" but name no option)."""
    return 0.5 if re.search(r"\bmy answer is\b|\b(?:yes|no|maybe)\b", text, flags=re.IGNORECASE) else 0.0


def highlighted_sections(text: str, kw: dict) -> float:
    n = sum(1 for h in re.findall(r"\*[^\n\*]*\*", text) if h.strip("*").strip())
    return _ratio_at_least(n, kw["num_highlights"])


def multiple_sections(text: str, kw: dict) -> float:
    n = len(re.split(r"\s?" + kw["section_spliter"] + r"\s?\d+\s?", text)) - 1
    return _ratio_at_least(n, kw["num_sections"])


def title(text: str, kw: dict) -> float:
    return 0.5 if "<<" in text or ">>" in text else 0.0


def two_responses(text: str, kw: dict) -> float:
    return 0.5 if "******" in text else (0.25 if "***" in text else 0.0)


def repeat_prompt(text: str, kw: dict) -> float:
    """The share of the request repeated word for word at the start."""
    text, prompt = text.strip().lower(), kw["prompt_to_repeat"].strip().lower()
    common = 0
    while common < min(len(text), len(prompt)) and text[common] == prompt[common]:
        common += 1
    return common / len(prompt)


def keyword_existence(text: str, kw: dict) -> float:
    keywords = kw["keywords"]
    return sum(bool(re.search(k, text, flags=re.IGNORECASE)) for k in keywords) / len(keywords)


def keyword_frequency(text: str, kw: dict) -> float:
    return _relation(len(re.findall(kw["keyword"], text, flags=re.IGNORECASE)), kw["frequency"], kw["relation"])


def forbidden_words(text: str, kw: dict) -> float:
    words = kw["forbidden_words"]
    return sum(not re.search(r"\b" + w + r"\b", text, flags=re.IGNORECASE) for w in words) / len(words)


def letter_frequency(text: str, kw: dict) -> float:
    count = collections.Counter(text.lower())[kw["letter"]]
    return _relation(count, kw["let_frequency"], kw["let_relation"])


def response_language(text: str, kw: dict) -> float:
    try:
        return next((c.prob for c in langdetect.detect_langs(text) if c.lang == kw["language"]), 0.0)
    except langdetect.LangDetectException:
        return 0.0


GRADES: dict[str, Callable[[str, dict], float]] = {
    "change_case:english_lowercase": lowercase,
    "change_case:english_capital": capital,
    "startend:quotation": quotation,
    "startend:end_checker": end_phrase,
    "detectable_format:json_format": json_format,
    "punctuation:no_comma": no_comma,
    "length_constraints:number_words": number_words,
    "length_constraints:number_sentences": number_sentences,
    "change_case:capital_word_frequency": capital_word_frequency,
    "length_constraints:number_paragraphs": number_paragraphs,
    "length_constraints:nth_paragraph_first_word": nth_paragraph_first_word,
    "detectable_content:number_placeholders": placeholders,
    "detectable_content:postscript": postscript,
    "detectable_format:number_bullet_lists": bullet_lists,
    "detectable_format:constrained_response": constrained_response,
    "detectable_format:number_highlighted_sections": highlighted_sections,
    "detectable_format:multiple_sections": multiple_sections,
    "detectable_format:title": title,
    "combination:two_responses": two_responses,
    "combination:repeat_prompt": repeat_prompt,
    "keywords:existence": keyword_existence,
    "keywords:frequency": keyword_frequency,
    "keywords:forbidden_words": forbidden_words,
    "keywords:letter_frequency": letter_frequency,
    "language:response_language": response_language,
}


def instruction_score(instruction_id: str, kwargs: dict[str, Any], response: str, followed: bool) -> float:
    """1 for an instruction followed; CREDIT · closeness for one failed (0 for a kind with no grade)."""
    if followed:
        return 1.0
    grade = GRADES.get(instruction_id)
    if grade is None or not response.strip():
        return 0.0
    return CREDIT * min(max(grade(response, kwargs), 0.0), 1.0)
