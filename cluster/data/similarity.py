"""How near a held-out prompt is to a training one: the share of its content words found in one.

A held-out task that rewords a training question ("Write a toast for your best friend's
wedding." beside "Write a short toast for a friend's wedding.") measures recall, not transfer.
This module finds such pairs with a rule simple enough to read:

- **content words**: a text's words, lower-cased, less English function words and the words
  every request shares (`write`, `short`, `please`, …: STOP_WORDS), each reduced to its Porter
  stem (nltk's, no data needed), so `helped`/`help` and `wedding`/`weddings` are one word;
- **found**: two stems match when equal, or when one (of ≥ 4 letters) begins the other
  (`snow` in `snowfal`, the stem of `snowfall`);
- **share**: of the candidate's content words, the share found in the reference;
- **near**: share ≥ NEAR_SHARE (½) with at least NEAR_MIN_SHARED (2) words found, so that one
  common word (`poem`, `day`) never makes two tasks near.

The candidate's share, not a symmetric one: a short training question is wholly inside many
longer tasks that are not about it ("What is the water cycle?" in a butterfly's life cycle).
Measured on the shipped sets (tests/test_similarity.py): the five writing tasks that reworded
training questions score ½–¾, the paper-airplane one ½; the next highest task scores 0.4.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

from nltk.stem import PorterStemmer

NEAR_SHARE = 0.5
NEAR_MIN_SHARED = 2
MIN_PREFIX = 4  # a stem shorter than this matches only itself

# English function words, and the frame words of any request (which say nothing of its topic).
STOP_WORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between both
but by can could did do does doing down during each either else ever every few for from further had has have having
he her here hers herself him himself his how i if in into is it its itself just let like may me might more most must
my myself neither no nor not now of off on once only or other our ours ourselves out over own per please same shall
she should so some such than that the their theirs them themselves then there these they this those through to too
under until up upon us very via was we were what when where whether which while who whom whose why will with within
without would yet you your yours yourself yourselves
write writing written make made give tell use using get want need short brief briefly simple something someone thing
things way ways kind sure really
""".split())

_WORD = re.compile(r"[a-z]+")
_stemmer = PorterStemmer()
_STOP_STEMS = frozenset(_stemmer.stem(w) for w in STOP_WORDS)  # `making` goes where `make` goes


@lru_cache(maxsize=None)
def _stem(word: str) -> str:
    return _stemmer.stem(word)


def content_words(text: str) -> frozenset[str]:
    """The stems of `text`'s content words (a hyphen or apostrophe splits a word: thank-you → thank)."""
    stems = (_stem(w) for w in _WORD.findall(text.lower()) if w not in STOP_WORDS and len(w) > 1)
    return frozenset(s for s in stems if s not in _STOP_STEMS)


def _found(word: str, others: frozenset[str]) -> bool:
    if word in others:
        return True
    return any(min(len(word), len(o)) >= MIN_PREFIX and (word.startswith(o) or o.startswith(word)) for o in others)


def shared_words(candidate: str, reference: str) -> frozenset[str]:
    """The candidate's content words found in the reference."""
    others = content_words(reference)
    return frozenset(w for w in content_words(candidate) if _found(w, others))


def share(candidate: str, reference: str) -> float:
    """The share of the candidate's content words found in the reference (0 for a text without any)."""
    words = content_words(candidate)
    return len(shared_words(candidate, reference)) / len(words) if words else 0.0


def is_near(candidate: str, reference: str) -> bool:
    shared = shared_words(candidate, reference)
    return len(shared) >= NEAR_MIN_SHARED and share(candidate, reference) >= NEAR_SHARE


class NearPair(NamedTuple):
    candidate: int  # index into the candidates
    reference: int  # index into the references: the one holding most of the candidate's words
    share: float
    shared: tuple[str, ...]  # the stems found, sorted


def near_pairs(candidates: Sequence[str], references: Sequence[str]) -> list[NearPair]:
    """Every candidate near some reference, with its nearest such reference (indices from 0)."""
    pairs = []
    for i, text in enumerate(candidates):
        near = [j for j, ref in enumerate(references) if is_near(text, ref)]
        if near:
            j = max(near, key=lambda j: (share(text, references[j]), -j))
            pairs.append(NearPair(i, j, share(text, references[j]), tuple(sorted(shared_words(text, references[j])))))
    return pairs


def describe(pairs: Sequence[NearPair], candidates: Sequence[str], references: Sequence[str]) -> str:
    """One line per pair, for a failing test or a generator's refusal."""
    return "; ".join(f"#{p.candidate + 1} {candidates[p.candidate]!r} ~ #{p.reference + 1} {references[p.reference]!r} "
                     f"(share {p.share:.2f}: {', '.join(p.shared)})" for p in pairs)
