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

from core.chat import ChatEncoder, as_chat
from core.tokens import pad_token_id

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

    With `chat=True` the text is the user turn of a chat, encoded as every side encodes chats
    (core/chat.py, model.chat_template), and the answer is read right after the generation
    prompt (plus `answer_prefix`); with `chat=False` it is encoded as plain text.
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

    @classmethod
    def from_config(cls, judge) -> "JudgeTemplate":
        """The template a judge section (core/config.JudgeConfig) asks for: its `template` text
        (null: the default) and its answer tokens."""
        return cls(**({"text": judge.template} if judge.template else {}), answer_tokens=tuple(judge.answer_tokens))

    def render(self, chat: ChatEncoder, prompt: str, response_a: str, response_b: str) -> list[int]:
        """Token ids of the judging prompt; the answer token is predicted after the last id.
        `chat`: the ChatEncoder (a bare tokenizer: its own template)."""
        chat = as_chat(chat)
        text = self.text.format(prompt=prompt, response_a=response_a, response_b=response_b)
        ids = chat.user_prompt(text) if self.chat else chat.plain(text)
        if self.answer_prefix:
            ids += chat.tokenizer(self.answer_prefix, add_special_tokens=False)["input_ids"]
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


class LMJudge:
    """A causal LM reading a judging prompt; p is swap-averaged over both presentation orders.
    `chat`: its tokenizer's ChatEncoder (core/chat.py; a bare tokenizer: its own template)."""

    def __init__(self, model, chat: ChatEncoder, name: str, template: JudgeTemplate | None = None, batch_size: int = 8):
        self.chat = as_chat(chat)
        self.model, self.tokenizer, self.name, self.batch_size = model, self.chat.tokenizer, name, batch_size
        self.template = template or JudgeTemplate()
        # Fails here, before any pair is made, if the tokenizer splits an answer token.
        self.answer_ids = answer_token_ids(self.tokenizer, self.template.answer_tokens)
        self.pad_id = pad_token_id(self.tokenizer)
        # Position consistency of the comparisons made so far: Σ|p_ab − (1 − p_ba)| and their count
        # (0 for a judge without position bias; swap averaging cancels a constant bias).
        self.position_gap_sum, self.position_gap_count = 0.0, 0

    @torch.no_grad()
    def first_better_probs(self, rendered: list[list[int]]) -> torch.Tensor:
        """P(first shown is better) for each rendered judging prompt (left-padded batches)."""
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(rendered), self.batch_size):
            chunk = rendered[start : start + self.batch_size]
            width = max(len(x) for x in chunk)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, seq in enumerate(chunk):  # left padding: the answer is read at the last column
                ids[i, width - len(seq) :] = torch.tensor(seq)
                mask[i, width - len(seq) :] = 1
            # Position ids must count from the first real token, not from the padding.
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                                position_ids=positions.to(device), logits_to_keep=1).logits[:, -1]
            logits = logits.double().cpu()
            out.append(first_is_better(logits[:, self.answer_ids[0]], logits[:, self.answer_ids[1]]))
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    def compare(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        rendered = []
        for prompt, x, y in zip(prompts, a, b):
            rendered.append(self.template.render(self.chat, prompt, x, y))
            rendered.append(self.template.render(self.chat, prompt, y, x))
        probs = self.first_better_probs(rendered)
        self.position_gap_sum += float((probs[0::2] - (1.0 - probs[1::2])).abs().sum())
        self.position_gap_count += len(prompts)
        return swap_averaged_strength(probs[0::2], probs[1::2]).tolist()
