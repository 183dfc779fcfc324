"""The judge's soft preference strength: p(a ≻ b) from the logits of two answer tokens.

The frozen SFT model reads a judging prompt showing the user prompt and two responses, and
we take the next-token logits of the answer tokens ("A", "B"). Restricted to those two
tokens, P(first shown is better) = σ(logit_A - logit_B). LMs favour one position, so each
pair is shown in both orders and the two estimates of p(a ≻ b) are averaged: a constant
position bias cancels exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DEFAULT_TEMPLATE = (
    "Which response answers the user's request better: more helpful, correct and clear?\n\n"
    "[User request]\n{prompt}\n\n"
    "[Response A]\n{response_a}\n\n"
    "[Response B]\n{response_b}\n\n"
    "Reply with a single letter, A or B."
)


@dataclass(frozen=True)
class JudgeTemplate:
    """How a pair is shown to the judge. `text` must contain {prompt}, {response_a}, {response_b}.

    With `chat=True` the text is the user turn of the tokenizer's chat template and the
    answer is read right after the generation prompt (plus `answer_prefix`).
    """

    text: str = DEFAULT_TEMPLATE
    answer_tokens: tuple[str, str] = ("A", "B")
    answer_prefix: str = ""
    chat: bool = True

    def __post_init__(self) -> None:
        for field in ("{prompt}", "{response_a}", "{response_b}"):
            if field not in self.text:
                raise ValueError(f"judge template must contain {field}; got {self.text!r}")
        if len(set(self.answer_tokens)) != 2:
            raise ValueError(f"judge needs two distinct answer tokens, got {self.answer_tokens}")

    def render(self, tokenizer, prompt: str, response_a: str, response_b: str) -> list[int]:
        """Token ids of the judging prompt; the answer token is predicted after the last id."""
        text = self.text.format(prompt=prompt, response_a=response_a, response_b=response_b)
        if self.chat and getattr(tokenizer, "chat_template", None):
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
            )
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # BatchEncoding in newer transformers
                ids = ids["input_ids"]
            ids = list(ids)
        else:
            ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        if self.answer_prefix:
            ids += tokenizer(self.answer_prefix, add_special_tokens=False)["input_ids"]
        return ids


def answer_token_ids(tokenizer, answers: tuple[str, str]) -> tuple[int, int]:
    """The single token id of each answer string; a clear error if the tokenizer splits one."""
    ids = []
    for answer in answers:
        encoded = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise ValueError(
                f"judge answer {answer!r} is not a single token for this tokenizer "
                f"(encodes to {encoded}); choose other judge.answer_tokens"
            )
        ids.append(encoded[0])
    if ids[0] == ids[1]:
        raise ValueError(f"judge answers {answers} map to the same token id {ids[0]}")
    return ids[0], ids[1]


def sigmoid(x: float) -> float:
    """σ(x) for a float, finite for any x (a score gap over τ can be large)."""
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def first_is_better(logit_first: torch.Tensor, logit_second: torch.Tensor) -> torch.Tensor:
    """P(first shown response is better): softmax over the two answer tokens only."""
    return torch.sigmoid(logit_first - logit_second)


def swap_averaged_strength(p_a_first: torch.Tensor, p_b_first: torch.Tensor) -> torch.Tensor:
    """p(a ≻ b) from both orders.

    p_a_first: P("first is better") with a shown first  (an estimate of p(a ≻ b)).
    p_b_first: P("first is better") with b shown first  (an estimate of p(b ≻ a)).
    """
    return 0.5 * (p_a_first + (1.0 - p_b_first))
