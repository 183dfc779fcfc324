"""Verifiable instructions (IFEval): which of a prompt's instructions a response follows.

The checkers are IFEval's own (Google Research, Apache-2.0) as maintained on PyPI by
`if-verifiable`; nothing here re-implements a check. A prompt carries its instructions in
IFEval's format: `instruction_id_list` (e.g. "punctuation:no_comma") and one `kwargs` dict
per id. Strict: the response as written follows the instruction. Loose (IFEval's definition):
some variant of it does — with its first and/or last line removed, or with `*` stripped.

Every IFEval kind is checked. The two that count sentences need nltk's punkt data, built
offline on first use (judge/punkt.py); `combination:repeat_prompt` reads the text to repeat
from its kwargs (`prompt_to_repeat`), as IFEval's rows carry it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import langdetect
from if_verifiable.common import get_loose_transformations
from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

from judge import punkt
from judge.partial_credit import instruction_score
from judge.repetition import repeated_share
from judge.strength import sigmoid

langdetect.DetectorFactory.seed = 0  # langdetect is random unless seeded: the case checkers use it
punkt.install()  # sentence splitting for number_sentences and capital_word_frequency, offline

UNSUPPORTED: dict[str, str] = {}  # instruction id → why it cannot be checked here (none today)
INSTRUCTIONS = sorted(set(INSTRUCTION_DICT) - set(UNSUPPORTED))


@dataclass(frozen=True)
class Instructions:
    """A prompt's verifiable instructions, IFEval format."""

    ids: tuple[str, ...]
    kwargs: tuple[dict[str, Any], ...]

    def to_json(self) -> dict[str, Any]:
        return {"instruction_id_list": list(self.ids), "kwargs": [dict(k) for k in self.kwargs]}


@dataclass(frozen=True)
class Verdict:
    strict: tuple[bool, ...]  # one per instruction
    loose: tuple[bool, ...]

    @property
    def fraction(self) -> float:
        """s: the share of the prompt's instructions followed (strict) — the verifier judge's score."""
        return sum(self.strict) / len(self.strict)


def _checker(instruction_id: str, kwargs: dict[str, Any]):
    checker = INSTRUCTION_DICT[instruction_id](instruction_id)
    checker.build_description(**{k: v for k, v in kwargs.items() if v is not None})
    return checker


def parse_instructions(ids: Any, kwargs: Any) -> Instructions:
    """Validate one row's instructions; ValueError with the reason (the caller adds file and line)."""
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise ValueError(f"instruction_id_list must be a non-empty list of strings, got {ids!r}")
    if kwargs is None:
        kwargs = [{} for _ in ids]
    if isinstance(kwargs, list):  # IFEval's own rows name every kwarg of every kind, unused ones None
        kwargs = [{k: v for k, v in kw.items() if v is not None} if isinstance(kw, dict) else kw for kw in kwargs]
    if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
        raise ValueError(f"kwargs must be a list of {len(ids)} objects (one per instruction id), got {kwargs!r}")
    for instruction_id, kw in zip(ids, kwargs):
        if instruction_id in UNSUPPORTED:
            raise ValueError(f"instruction {instruction_id!r} is not supported: {UNSUPPORTED[instruction_id]}")
        if instruction_id not in INSTRUCTION_DICT:
            raise ValueError(f"unknown instruction id {instruction_id!r}; known: {', '.join(INSTRUCTIONS)}")
        accepted = set(inspect.signature(INSTRUCTION_DICT[instruction_id].build_description).parameters) - {"self"}
        unknown = set(kw) - accepted
        if unknown:
            raise ValueError(f"instruction {instruction_id!r} takes kwargs {sorted(accepted) or 'none'}, "
                             f"got unknown {sorted(unknown)}")
        # IFEval's checkers draw a missing argument at random (a different check every call).
        missing = {k for k in accepted if kw.get(k) is None}
        if missing:
            raise ValueError(f"instruction {instruction_id!r} needs kwargs {sorted(accepted)}, missing {sorted(missing)}")
        try:
            _checker(instruction_id, kw)
        except Exception as err:  # the checker's own validation (e.g. an unknown relation)
            raise ValueError(f"instruction {instruction_id!r}: bad kwargs {kw!r}: {err}") from None
    return Instructions(tuple(ids), tuple(dict(k) for k in kwargs))


def describe(instruction_id: str, kwargs: dict[str, Any]) -> str:
    """The instruction as IFEval phrases it (used to write the shipped prompts)."""
    return _checker(instruction_id, kwargs).build_description(**kwargs)


def verify(response: str, instructions: Instructions) -> Verdict:
    """Strict and loose verdicts of one response on each instruction (IFEval's rules: an
    empty response follows nothing)."""
    if not response.strip():
        no = tuple(False for _ in instructions.ids)
        return Verdict(no, no)
    variants = [v for v in get_loose_transformations(response) if v.strip()]
    strict, loose = [], []
    for instruction_id, kw in zip(instructions.ids, instructions.kwargs):
        checker = _checker(instruction_id, kw)
        ok = bool(checker.check_following(response))
        strict.append(ok)
        loose.append(ok or any(checker.check_following(v) for v in variants))
    return Verdict(tuple(strict), tuple(loose))


class VerifierJudge:
    """IFEval instructions as the judge: p = σ((s_a − s_b)/τ), s = share of instructions followed.

    Equal shares give p = 0.5 exactly (no preference), so the pair carries no direction. With
    `partial_credit`, a failed instruction counts its closeness to passing (judge/partial_credit.py):
    pairs of answers that both fail are ranked by how nearly they follow. With `loop_penalty` λ,
    s − λ·(the share of the answer's word 4-grams it repeats, judge/repetition.py): of two answers
    that follow the same instructions, the one that loops less wins."""

    def __init__(self, instructions: dict[str, Instructions], tau: float = 0.25, partial_credit: bool = False,
                 loop_penalty: float = 0.0):
        self.instructions, self.tau, self.partial_credit = instructions, tau, partial_credit
        self.loop_penalty = loop_penalty
        self.name = ("verifier+partial" if partial_credit else "verifier") + (f"-loop{loop_penalty:g}" if loop_penalty else "")

    def share(self, prompt: str, response: str) -> float:
        if prompt not in self.instructions:
            raise KeyError(f"the verifier judge has no instructions for prompt {prompt[:80]!r}: "
                           "use a prompt file whose rows carry instruction_id_list and kwargs")
        instructions = self.instructions[prompt]
        verdict = verify(response, instructions)
        if self.partial_credit:
            scores = [instruction_score(i, kw, response, ok)
                      for i, kw, ok in zip(instructions.ids, instructions.kwargs, verdict.strict)]
            share = sum(scores) / len(scores)
        else:
            share = verdict.fraction
        return share - self.loop_penalty * repeated_share(response) if self.loop_penalty else share

    def compare(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        return [sigmoid((self.share(p, x) - self.share(p, y)) / self.tau) for p, x, y in zip(prompts, a, b)]
