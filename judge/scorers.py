"""Scorers for evaluation: p(response a is better than response b | prompt), in [0, 1].

Evaluation needs a judge that did *not* shape training, or a policy that learned to please
its own judge looks better than it is. `make_scorer(spec)` builds one of:

- `self` (or `self:<model>`): the OSP self-judge — the frozen SFT model, swap-averaged;
- any judge kind of judge/preferences.py: `lm:<model>` (independent when it is a different
  model), `reward:<model>`, `verifier` (the prompts' IFEval instructions), `python:<module>:<fn>`;
- `heuristic`: an offline, model-free proxy (below). Weak, but transparent, deterministic
  and independent of every model here — the one that always runs offline.

The heuristic scores a response on three things a helpful short answer has: it addresses
the prompt (share of the prompt's RAKE keywords it mentions), it is not degenerate (share of
repeated word trigrams, judge/repetition.repeated_share with n = 3, penalised), and it is not
empty. The higher score wins; equal scores tie (p = 0.5).
"""

from __future__ import annotations

import re

from core.chat import ChatEncoder
from core.config import JudgeConfig
from core.text import rake_keywords
from judge.preferences import Preference, check_kind, make_preference
from judge.repetition import repeated_share

_WORD = re.compile(r"[a-z0-9']+")


def heuristic_score(prompt: str, response: str) -> float:
    words = _WORD.findall(response.lower())
    if not words:
        return 0.0
    keywords = [k for k in rake_keywords(prompt) if k]
    text = " ".join(words)
    relevance = sum(1 for k in keywords if k.lower() in text) / len(keywords) if keywords else 0.0
    # Trigrams, not the loop penalty's 4-grams: a short answer has few 4-grams to repeat.
    return round(relevance - repeated_share(response, n=3) + 0.1, 9)  # +0.1: any non-empty answer beats silence


class HeuristicScorer:
    name = "heuristic"

    def compare(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        out = []
        for prompt, x, y in zip(prompts, a, b):
            sx, sy = heuristic_score(prompt, x), heuristic_score(prompt, y)
            out.append(1.0 if sx > sy else 0.0 if sx < sy else 0.5)
        return out


def make_scorer(spec: str, sft_path: str, instructions: dict | None = None, chat_template: str | None = None) -> Preference:
    """`heuristic`, `self` (or `self:<model>`), or any judge kind (judge/preferences.py):
    `lm:<model>`, `reward:<model>`, `verifier` (needs the prompts' `instructions`), `python:<module>:<fn>`.
    A model scorer encodes its prompts with `chat_template` (model.chat_template, core/chat.py)."""
    kind, _, path = spec.partition(":")
    if spec == "heuristic":
        return HeuristicScorer()
    if kind == "self":
        spec = f"lm:{path or sft_path}"
    try:
        check_kind(spec)
    except ValueError:
        raise ValueError(f"unknown scorer {spec!r}: use heuristic, self, self:<model>, lm:<model>, reward:<model>, "
                         "verifier or python:<module>:<function>") from None
    head = spec.partition(":")[0]
    chat = None
    if head in ("lm", "reward"):  # carries the chat choice to the scorer's own tokenizer
        from transformers import AutoTokenizer

        chat = ChatEncoder(AutoTokenizer.from_pretrained(spec.partition(":")[2]), chat_template)
    scorer = make_preference(JudgeConfig(kind=spec, tau=1e-3), chat=chat, instructions=instructions)  # any gap decides
    if kind == "self":
        scorer.name = "self-judge"
    return scorer
