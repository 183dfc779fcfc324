"""Judge kinds: each turns (prompt, a, b) into a soft preference p(a ≻ b) ∈ [0, 1].

`judge.kind` picks one; all feed the same ranked pairing and the same oriented strengths:

- `self`: the frozen SFT model reads a judging prompt (judge/strength.py) and p is the
  swap-averaged probability of its answer token — the OSP paper's self-judge;
- `checklist`: the frozen SFT model answers one yes/no question per instruction of the prompt
  about each answer (judge/checklist.py), p = σ((s_a − s_b)/τ) with s the mean P(yes);
- `lm:<model>`: another causal LM judging the same way (the SFT model stays the reference);
- `reward:<model>`: a sequence-classification reward model, p = σ((r_a − r_b)/τ);
- `verifier`: the prompt's verifiable instructions (judge/verifier.py), p = σ((s_a − s_b)/τ)
  with s the share of instructions a response follows;
- `python:<module>:<function>`: the user's function (prompt, a, b) → p.

`judge.noise` wraps any kind in a noisy judge (the preference-strength ablations), with
`judge.noise_scale` its size:
- `flip`: report 1 − p for a random share (noise_scale) of comparisons: a confident wrong
  verdict as often on a clear pair as on a close one;
- `logit`: p = σ(logit(p) + ε), ε ~ N(0, noise_scale²) per comparison: like an LLM judge, wrong
  mostly where the true margin is small, and as unsure as it is likely to be wrong. For the
  verifier, p = σ((s_a − s_b)/τ + ε). An exact tie (p = 0.5) becomes a coin flip with a small
  margin, as a judge that cannot say "tie" would give.
`judge.temperature` T rescales any judge's p after its noise, p ← σ(logit(p)/T): T > 1 softens
an overconfident judge toward ½ without changing its verdicts. `cluster.judge_report` fits the T
that calibrates a judge against the verifier.
Every draw is a hash of (seed, prompt, the two responses), so every judge's `compare` is a
pure function of its inputs: the same comparison gets the same noise in either order, on every
retry, restart and resume, and in every arm of an experiment that meets it.
A `<model>` is a local folder or a Hugging Face id `org/name[@rev]` (core/models.resolve_model),
resolved where the judge is built: on the judge actor's own node.
"""

from __future__ import annotations

import hashlib
import importlib
import math
from typing import Callable, Protocol

import torch

from core.chat import ChatEncoder, as_chat
from core.config import JudgeConfig
from core.models import resolve_model
from judge.checklist import ChecklistJudge
from judge.strength import JudgeTemplate, LMJudge, sigmoid
from judge.verifier import Instructions, VerifierJudge

KINDS = ("self", "checklist", "lm:<model>", "reward:<model>", "verifier", "python:<module>:<function>")


class Preference(Protocol):
    name: str

    def compare(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        """p(a ≻ b) for each (prompt, a, b)."""


def check_kind(kind: str) -> None:
    """Refuse a malformed `judge.kind` (ValueError naming the accepted forms)."""
    head, _, rest = kind.partition(":")
    ok = (kind in ("self", "checklist", "verifier") or (head in ("lm", "reward") and rest)
          or (head == "python" and rest.count(":") == 1 and all(rest.split(":"))))
    if not ok:
        raise ValueError(f"unknown judge kind {kind!r}; choose one of {', '.join(KINDS)}")


class RewardJudge:
    """A sequence-classification reward model: p = σ((r_a − r_b)/τ). It scores each (prompt,
    response) as a two-turn chat encoded by core/chat.py with `chat_template` (model.chat_template)."""

    def __init__(self, model_ref: str, tau: float = 1.0, batch_size: int = 8, chat_template: str | None = None):
        """`model_ref`: a local folder or a hub id (core/models), resolved in this process."""
        # Lazy (as every model import in the judge): the actor applies the stack's environment
        # before any model library loads; the driver imports this module too.
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.name, self.tau = f"reward:{model_ref}", tau
        folder = resolve_model(model_ref)
        self.chat = ChatEncoder(AutoTokenizer.from_pretrained(folder), chat_template)
        self.model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        # The model reads its score at the last token that is not its pad id: rows are padded
        # with that id, and one at a time when it has none (transformers refuses a batch then).
        self.pad_id = self.model.config.pad_token_id
        self.batch_size = batch_size if self.pad_id is not None else 1

    @torch.no_grad()
    def rewards(self, prompts: list[str], responses: list[str]) -> list[float]:
        out = []
        for i in range(0, len(prompts), self.batch_size):
            rows = [self.chat.conversation([{"role": "user", "content": p}, {"role": "assistant", "content": r}])
                    for p, r in zip(prompts[i : i + self.batch_size], responses[i : i + self.batch_size])]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), self.pad_id if self.pad_id is not None else 0, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, row in enumerate(rows):  # right padding
                ids[j, : len(row)] = torch.tensor(row)
                mask[j, : len(row)] = 1
            out += self.model(input_ids=ids, attention_mask=mask).logits[:, 0].double().tolist()
        return out

    def compare(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        ra, rb = self.rewards(prompts, a), self.rewards(prompts, b)
        return [sigmoid((x - y) / self.tau) for x, y in zip(ra, rb)]


class PythonJudge:
    """A user's preference function `module:function`, called as fn(prompt, a, b) → p."""

    def __init__(self, spec: str):
        module, _, function = spec.partition(":")
        self.name = f"python:{spec}"
        try:
            self.fn: Callable[[str, str, str], float] = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"judge python:{spec}: cannot load {function!r} from module {module!r}: {err}") from None

    def compare(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        out = []
        for p, x, y in zip(prompts, a, b):
            value = float(self.fn(p, x, y))
            if not 0.0 <= value <= 1.0:  # also refuses NaN
                raise ValueError(f"{self.name} returned {value} for prompt {p[:60]!r}; a preference must be in [0, 1]")
            out.append(value)
        return out


NOISES = ("none", "flip", "logit")


def _comparison_uniforms(seed: int, prompt: str, a: str, b: str) -> tuple[float, float, bool]:
    """Two uniforms in (0, 1) from a hash of the comparison, and whether (a, b) is in the
    hash's canonical (sorted) order: the draw is the same for (b, a), its sign is not."""
    first, second = sorted((a, b))
    digest = hashlib.blake2b("\x00".join([str(seed), prompt, first, second]).encode(), digest_size=16).digest()
    u1 = (int.from_bytes(digest[:8], "big") + 0.5) / 2**64
    u2 = (int.from_bytes(digest[8:], "big") + 0.5) / 2**64
    return u1, u2, (a, b) == (first, second)


class FlippedJudge:
    """judge.noise=flip: reports 1 − p for a random `prob` share of comparisons, the same
    comparisons in either presentation order."""

    def __init__(self, inner: Preference, prob: float, seed: int = 0):
        self.inner, self.prob, self.seed = inner, prob, seed
        self.name = f"{inner.name}+flip{prob:g}"

    def flipped(self, prompt: str, a: str, b: str) -> bool:
        return _comparison_uniforms(self.seed, prompt, a, b)[0] < self.prob

    def compare(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        ps = self.inner.compare(prompts, a, b)
        return [1.0 - p if self.flipped(q, x, y) else p for p, q, x, y in zip(ps, prompts, a, b)]


def logit(p: float) -> float:
    """log(p / (1 − p)), with p kept off 0 and 1 so that a certain verdict stays finite."""
    p = min(max(p, 1e-12), 1.0 - 1e-12)
    return math.log(p / (1.0 - p))


class LogitNoiseJudge:
    """judge.noise=logit: p = σ(logit(p) + ε), ε ~ N(0, scale²) per comparison (Box–Muller on the
    comparison's hash). ε changes sign with the presentation order, so p(b ≻ a) = 1 − p(a ≻ b)
    still holds exactly."""

    def __init__(self, inner: Preference, scale: float, seed: int = 0):
        self.inner, self.scale, self.seed = inner, scale, seed
        self.name = f"{inner.name}+logit{scale:g}"

    def epsilon(self, prompt: str, a: str, b: str) -> float:
        u1, u2, canonical = _comparison_uniforms(self.seed, prompt, a, b)
        z = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
        return self.scale * z if canonical else -self.scale * z

    def compare(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        out = []
        for p, q, x, y in zip(self.inner.compare(prompts, a, b), prompts, a, b):
            out.append(sigmoid(logit(p) + self.epsilon(q, x, y)))
        return out


class TemperedJudge:
    """judge.temperature: p ← σ(logit(p) / temperature). A tie stays a tie, a verdict keeps its
    side, and p(b ≻ a) = 1 − p(a ≻ b) still holds; only the confidence changes."""

    def __init__(self, inner: Preference, temperature: float):
        if temperature <= 0:
            raise ValueError(f"judge temperature must be > 0, got {temperature}")
        self.inner, self.temperature = inner, temperature
        self.name = f"{inner.name}/T{temperature:g}"

    def compare(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        return [0.5 if p == 0.5 else sigmoid(logit(p) / self.temperature)
                for p in self.inner.compare(prompts, a, b)]


def tempered(judge: Preference, temperature: float) -> Preference:
    """`judge` with its strengths rescaled by `temperature` (judge.temperature; 1: itself)."""
    return judge if temperature == 1.0 else TemperedJudge(judge, temperature)


def base_judge(judge: Preference) -> Preference:
    """The judge under its noise and temperature wrappers (where its own counters live)."""
    while hasattr(judge, "inner"):
        judge = judge.inner
    return judge


def with_noise(judge: Preference, noise: str, scale: float, seed: int) -> Preference:
    """`judge` wrapped in the noise model `noise` (judge.noise) of size `scale`."""
    if noise == "none" or scale == 0:
        return judge
    if noise == "flip":
        return FlippedJudge(judge, scale, seed)
    if noise == "logit":
        return LogitNoiseJudge(judge, scale, seed)
    raise ValueError(f"unknown judge.noise {noise!r}; choose one of {NOISES}")


def make_preference(judge: JudgeConfig, sft_model=None, chat=None, *, instructions: dict[str, Instructions] | None = None,
                    seed: int = 0, dtype: str = "float32") -> Preference:
    """The judge a judge section (core/config.JudgeConfig) describes: its kind, τ, template, batch
    size, noise, temperature and the verifier's options. `self` judges with the given SFT model
    (no second copy). `chat`: the SFT model's ChatEncoder (core/chat.py; a bare tokenizer: its own
    template); an lm: or reward: judge encodes with its own tokenizer and the same
    `model.chat_template` choice. `seed`: the noise's; `dtype`: an lm: judge model's."""
    kind, tau, batch_size = judge.kind, judge.tau, judge.batch_size
    template = JudgeTemplate.from_config(judge)
    check_kind(kind)
    head, _, rest = kind.partition(":")
    choice = chat.choice if isinstance(chat, ChatEncoder) else None
    if kind == "self":
        preference: Preference = LMJudge(sft_model, as_chat(chat), "self-judge", template, batch_size)
    elif head == "lm":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = resolve_model(rest)  # a hub id resolves on this node: transformers gets the folder
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval().requires_grad_(False)
        if sft_model is not None:
            model = model.to(next(sft_model.parameters()).device)
        preference = LMJudge(model, ChatEncoder(AutoTokenizer.from_pretrained(folder), choice), kind, template, batch_size)
    elif head == "reward":
        preference = RewardJudge(rest, tau, batch_size, choice)
    elif kind == "checklist":
        if not instructions:
            raise ValueError("judge kind 'checklist' needs prompts with verifiable instructions "
                             "(rows with instruction_id_list and kwargs, e.g. data.prompts=instructions)")
        preference = ChecklistJudge(sft_model, as_chat(chat), instructions, tau, batch_size)
    elif kind == "verifier":
        if not instructions:
            raise ValueError("judge kind 'verifier' needs prompts with verifiable instructions "
                             "(rows with instruction_id_list and kwargs, e.g. data.prompts=instructions)")
        preference = VerifierJudge(instructions, tau, judge.partial_credit, judge.loop_penalty)
    else:
        preference = PythonJudge(rest)
    return tempered(with_noise(preference, judge.noise, judge.noise_scale, seed), judge.temperature)
