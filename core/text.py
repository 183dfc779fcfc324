"""Text utilities shared by the judge and the learner: RAKE keyword phrases, and removing a
response's key content (SPO's degradation; the heuristic scorer's keywords).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence

# A compact English stopword list: enough for RAKE to split phrases at function words.
STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each
    few for from further had has have having he her here hers herself him himself his how
    i if in into is it its itself just me more most my myself no nor not now of off on
    once only or other our ours ourselves out over own same she should so some such than
    that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with
    would you your yours yourself yourselves
    """.split()
)

# Words (with an optional contraction like "don't") or any single punctuation mark.
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
_WORD_CHAR = r"[A-Za-z0-9']"


def _candidate_phrases(text: str) -> list[tuple[str, ...]]:
    """Maximal runs of content words, split at stopwords and punctuation."""
    phrases, run = [], []
    for tok in _TOKEN.findall(text.lower()):
        if tok[0].isalnum() and tok not in STOPWORDS:
            run.append(tok)
        elif run:
            phrases.append(tuple(run))
            run = []
    if run:
        phrases.append(tuple(run))
    return phrases


def rake_keywords(text: str) -> list[str]:
    """RAKE keyword phrases of `text` (lower-case), best first; ties keep first appearance."""
    phrases = _candidate_phrases(text)
    freq: dict[str, int] = {}
    degree: dict[str, int] = {}
    for phrase in phrases:
        for word in phrase:
            freq[word] = freq.get(word, 0) + 1
            degree[word] = degree.get(word, 0) + len(phrase)
    # dict keeps insertion order, so a stable sort breaks score ties by first appearance.
    scores = {" ".join(ph): sum(degree[w] / freq[w] for w in ph) for ph in phrases}
    return sorted(scores, key=lambda ph: -scores[ph])


def phrases_removed(ratio: float, phrases: int) -> int:
    """How many of a response's `phrases` keyword phrases a degradation at `ratio` removes."""
    if not 0 <= ratio <= 1:
        raise ValueError(f"ratio must lie in [0, 1], got {ratio}")
    # The epsilon stops float noise (0.3 * 10 = 3.0000000000000004) rounding up a whole phrase.
    return math.ceil(ratio * phrases - 1e-9)


def degrees_distinct(text: str, ratios: Sequence[float]) -> bool:
    """Whether every ratio removes a different number of `text`'s keyword phrases. A short
    answer has too few phrases for the classes to differ ("Yes." has one: every non-zero
    ratio removes it), so its degree label could not be learned from the text."""
    n = len(rake_keywords(text))
    return len({phrases_removed(r, n) for r in ratios}) == len(ratios)


def remove_key_content(text: str, ratio: float) -> str:
    """Delete every occurrence of the top ceil(ratio·n) of the n keyword phrases."""
    phrases = rake_keywords(text)
    k = phrases_removed(ratio, len(phrases))
    if k == 0:
        return text
    for phrase in phrases[:k]:
        words = r"\s+".join(re.escape(w) for w in phrase.split())
        text = re.sub(rf"(?<!{_WORD_CHAR}){words}(?!{_WORD_CHAR})", " ", text, flags=re.I)
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r" ([.,;:!?])", r"\1", text)  # no orphaned space before punctuation


def degrade(text: str, ratios: Sequence[float], rng: random.Random) -> tuple[str, int]:
    """Remove key content at a uniformly drawn ratio; returns (text, index of the ratio)."""
    index = rng.randrange(len(ratios))
    return remove_key_content(text, ratios[index]), index
