"""Judge kinds: each turns (prompt, a, b) into a soft preference p(a ≻ b) ∈ [0, 1].

`judge.kind` picks one; all feed the same ranked pairing and the same oriented strengths:

- `self`: the frozen SFT model reads a judging prompt (judge/strength.py) and p is the
  swap-averaged probability of its answer token — the OSP paper's self-judge;
- `checklist`: the frozen SFT model answers one yes/no question per instruction of the prompt
  about each answer (judge/checklist.py), p = σ((s_a − s_b)/τ) with s the mean P(yes);
- `lm:<path>`: another local causal LM judging the same way (the SFT model stays the reference);
- `reward:<path>`: a local sequence-classification reward model, p = σ((r_a − r_b)/τ);
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
Every draw is a hash of (seed, prompt, the two responses), so every judge's `compare` is a
pure function of its inputs: the same comparison gets the same noise in either order, on every
retry, restart and resume, and in every arm of an experiment that meets it.
"""

from __future__ import annotations

import hashlib
import importlib
import math
from typing import Callable, Protocol

import torch

from judge.checklist import ChecklistJudge
from judge.partial_credit import instruction_score
from judge.strength import JudgeTemplate, answer_token_ids, first_is_better, sigmoid, swap_averaged_strength
from judge.verifier import Instructions, verify

KINDS = ("self", "checklist", "lm:<path>", "reward:<path>", "verifier", "python:<module>:<function>")


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


class LMJudge:
    """A causal LM reading a judging prompt; p is swap-averaged over both presentation orders."""

    def __init__(self, model, tokenizer, name: str, template: JudgeTemplate | None = None, batch_size: int = 8):
        self.model, self.tokenizer, self.name, self.batch_size = model, tokenizer, name, batch_size
        self.template = template or JudgeTemplate()
        # Fails here, before any pair is made, if the tokenizer splits an answer token.
        self.answer_ids = answer_token_ids(tokenizer, self.template.answer_tokens)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
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
            rendered.append(self.template.render(self.tokenizer, prompt, x, y))
            rendered.append(self.template.render(self.tokenizer, prompt, y, x))
        probs = self.first_better_probs(rendered)
        self.position_gap_sum += float((probs[0::2] - (1.0 - probs[1::2])).abs().sum())
        self.position_gap_count += len(prompts)
        return swap_averaged_strength(probs[0::2], probs[1::2]).tolist()


class RewardJudge:
    """A sequence-classification reward model: p = σ((r_a − r_b)/τ)."""

    def __init__(self, model_path: str, tau: float = 1.0, batch_size: int = 8):
        # Lazy (as every model import in the judge): the actor applies the stack's environment
        # (HF_HUB_OFFLINE, …) before any model library loads; the driver imports this module too.
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.name, self.tau, self.batch_size = f"reward:{model_path}", tau, batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_path).eval()

    @torch.no_grad()
    def rewards(self, prompts: list[str], responses: list[str]) -> list[float]:
        out = []
        for i in range(0, len(prompts), self.batch_size):
            chats = [[{"role": "user", "content": p}, {"role": "assistant", "content": r}]
                     for p, r in zip(prompts[i : i + self.batch_size], responses[i : i + self.batch_size])]
            if getattr(self.tokenizer, "chat_template", None):
                texts = [self.tokenizer.apply_chat_template(c, tokenize=False) for c in chats]
            else:
                texts = [f"{c[0]['content']}\n{c[1]['content']}" for c in chats]
            enc = self.tokenizer(texts, return_tensors="pt", padding=True)
            out += self.model(**enc).logits[:, 0].double().tolist()
        return out

    def compare(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        ra, rb = self.rewards(prompts, a), self.rewards(prompts, b)
        return [sigmoid((x - y) / self.tau) for x, y in zip(ra, rb)]


class VerifierJudge:
    """IFEval instructions as the judge: p = σ((s_a − s_b)/τ), s = share of instructions followed.

    Equal shares give p = 0.5 exactly (no preference), so the pair carries no direction. With
    `partial_credit`, a failed instruction counts its closeness to passing (judge/partial_credit.py):
    pairs of answers that both fail are ranked by how nearly they follow."""

    def __init__(self, instructions: dict[str, Instructions], tau: float = 0.25, partial_credit: bool = False):
        self.instructions, self.tau, self.partial_credit = instructions, tau, partial_credit
        self.name = "verifier+partial" if partial_credit else "verifier"

    def share(self, prompt: str, response: str) -> float:
        if prompt not in self.instructions:
            raise KeyError(f"the verifier judge has no instructions for prompt {prompt[:80]!r}: "
                           "use a prompt file whose rows carry instruction_id_list and kwargs")
        instructions = self.instructions[prompt]
        verdict = verify(response, instructions)
        if not self.partial_credit:
            return verdict.fraction
        scores = [instruction_score(i, kw, response, ok)
                  for i, kw, ok in zip(instructions.ids, instructions.kwargs, verdict.strict)]
        return sum(scores) / len(scores)

    def compare(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        return [sigmoid((self.share(p, x) - self.share(p, y)) / self.tau) for p, x, y in zip(prompts, a, b)]


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
            p = min(max(p, 1e-12), 1.0 - 1e-12)  # a certain verdict stays finite in logit space
            out.append(sigmoid(math.log(p / (1.0 - p)) + self.epsilon(q, x, y)))
        return out


def with_noise(judge: Preference, noise: str, scale: float, seed: int) -> Preference:
    """`judge` wrapped in the noise model `noise` (judge.noise) of size `scale`."""
    if noise == "none" or scale == 0:
        return judge
    if noise == "flip":
        return FlippedJudge(judge, scale, seed)
    if noise == "logit":
        return LogitNoiseJudge(judge, scale, seed)
    raise ValueError(f"unknown judge.noise {noise!r}; choose one of {NOISES}")


def make_preference(kind: str, sft_model=None, sft_tokenizer=None, *, instructions: dict[str, Instructions] | None = None,
                    tau: float = 0.25, template: JudgeTemplate | None = None, batch_size: int = 8,
                    noise: str = "none", noise_scale: float = 0.0, seed: int = 0, dtype: str = "float32",
                    partial_credit: bool = False) -> Preference:
    """Build the judge `kind`. `self` judges with the given SFT model (no second copy)."""
    check_kind(kind)
    head, _, rest = kind.partition(":")
    if kind == "self":
        judge: Preference = LMJudge(sft_model, sft_tokenizer, "self-judge", template, batch_size)
    elif head == "lm":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(rest, dtype=getattr(torch, dtype)).eval().requires_grad_(False)
        if sft_model is not None:
            model = model.to(next(sft_model.parameters()).device)
        judge = LMJudge(model, AutoTokenizer.from_pretrained(rest), kind, template, batch_size)
    elif head == "reward":
        judge = RewardJudge(rest, tau, batch_size)
    elif kind == "checklist":
        if not instructions:
            raise ValueError("judge kind 'checklist' needs prompts with verifiable instructions "
                             "(rows with instruction_id_list and kwargs, e.g. data.prompts=instructions)")
        judge = ChecklistJudge(sft_model, sft_tokenizer, instructions, tau, batch_size)
    elif kind == "verifier":
        if not instructions:
            raise ValueError("judge kind 'verifier' needs prompts with verifiable instructions "
                             "(rows with instruction_id_list and kwargs, e.g. data.prompts=instructions)")
        judge = VerifierJudge(instructions, tau, partial_credit)
    else:
        judge = PythonJudge(rest)
    return with_noise(judge, noise, noise_scale, seed)
