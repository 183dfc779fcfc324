"""How much of an answer repeats itself: the verifier judge's loop penalty (`judge.loop_penalty`).

A small model decoding greedily often falls into a loop (the same sentence, or "[postscript]",
again and again until the token cap). IFEval's checkers mostly do not see it: an answer can
loop and still follow its instructions, or fail them for reasons a loop hides. Subtracting
loop_penalty × repeated_share from the verifier's score ranks the answer that does not loop
above the one that does, among answers that follow the same instructions. Evaluation stays
IFEval's strict and loose.
"""

from __future__ import annotations

import re

NGRAM = 4  # words: short enough to catch a looping phrase, long enough that prose rarely repeats one


def repeated_share(text: str, n: int = NGRAM) -> float:
    """The share of the text's word n-grams that already occurred earlier in it: 0 for text that
    never repeats a phrase, → 1 for a phrase repeated until the end (case and punctuation ignored)."""
    words = re.findall(r"\w+", text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    # Every n-gram beyond its first occurrence is a repeat: all of them less the distinct ones.
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0
