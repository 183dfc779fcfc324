"""Scorers for evaluation: p(response a is better than response b | prompt), in [0, 1].

Evaluation needs a judge that did *not* shape training, or a policy that learned to please
its own judge looks better than it is. `make_scorer(spec)` builds one of:

- `self` (or `self:<path>`): the training judge — the frozen SFT model, swap-averaged;
- `lm:<path>`: another local causal LM used as a judge with the same template and swap
  averaging (independent when it is a different model, e.g. a larger instruct model);
- `reward:<path>`: a local sequence-classification reward model, p = σ(r_a − r_b);
- `heuristic`: an offline, model-free proxy (below). Weak, but transparent, deterministic
  and independent of every model here — the one that always runs offline.

The heuristic scores a response on three things a helpful short answer has: it addresses
the prompt (share of the prompt's RAKE keywords it mentions), it is not degenerate (share of
repeated word trigrams, penalised), and it is not empty. The higher score wins; equal scores
tie (p = 0.5).
"""

from __future__ import annotations

import math
import re
from typing import Protocol

from learner.spo import rake_keywords

_WORD = re.compile(r"[a-z0-9']+")


class Scorer(Protocol):
    name: str

    def compare(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        """p(a ≻ b) for each (prompt, a, b)."""


def heuristic_score(prompt: str, response: str) -> float:
    words = _WORD.findall(response.lower())
    if not words:
        return 0.0
    keywords = [k for k in rake_keywords(prompt) if k]
    text = " ".join(words)
    relevance = sum(1 for k in keywords if k.lower() in text) / len(keywords) if keywords else 0.0
    trigrams = list(zip(words, words[1:], words[2:]))
    repetition = 1 - len(set(trigrams)) / len(trigrams) if trigrams else 0.0
    return round(relevance - repetition + 0.1, 9)  # +0.1: any non-empty answer beats silence


class HeuristicScorer:
    name = "heuristic"

    def compare(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        out = []
        for prompt, x, y in zip(prompts, a, b):
            sx, sy = heuristic_score(prompt, x), heuristic_score(prompt, y)
            out.append(1.0 if sx > sy else 0.0 if sx < sy else 0.5)
        return out


class LMJudgeScorer:
    """A causal LM judging with the training judge's template and swap averaging."""

    def __init__(self, model_path: str, name: str, batch_size: int = 8, threads: int | None = None):
        from judge.judge_actor import JudgeWorker

        self.name = name
        self.judge = JudgeWorker(model_path, batch_size=batch_size, threads=threads)

    def compare(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        return self.judge.strengths(list(zip(prompts, a, b)))


class RewardModelScorer:
    def __init__(self, model_path: str, name: str, batch_size: int = 8):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.name, self.batch_size, self.torch = name, batch_size, torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_path).eval()

    def _rewards(self, prompts: list[str], responses: list[str]) -> list[float]:
        out = []
        for i in range(0, len(prompts), self.batch_size):
            chats = [
                [{"role": "user", "content": p}, {"role": "assistant", "content": r}]
                for p, r in zip(prompts[i : i + self.batch_size], responses[i : i + self.batch_size])
            ]
            texts = [self.tokenizer.apply_chat_template(c, tokenize=False) for c in chats]
            enc = self.tokenizer(texts, return_tensors="pt", padding=True)
            with self.torch.no_grad():
                out += self.model(**enc).logits[:, 0].double().tolist()
        return out

    def compare(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        ra, rb = self._rewards(prompts, a), self._rewards(prompts, b)
        return [1 / (1 + math.exp(-(x - y))) for x, y in zip(ra, rb)]


def make_scorer(spec: str, sft_path: str) -> Scorer:
    """`self`, `self:<path>`, `lm:<path>`, `reward:<path>` or `heuristic`."""
    kind, _, path = spec.partition(":")
    if kind == "heuristic" and not path:
        return HeuristicScorer()
    if kind == "self":
        return LMJudgeScorer(path or sft_path, name="self-judge")
    if kind == "lm" and path:
        return LMJudgeScorer(path, name=f"lm:{path}")
    if kind == "reward" and path:
        return RewardModelScorer(path, name=f"reward:{path}")
    raise ValueError(f"unknown scorer {spec!r}: use self, self:<path>, lm:<path>, reward:<path> or heuristic")
