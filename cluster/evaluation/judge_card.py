"""A judge's report card (the engine of `python -m cluster.judge_report`): how often it agrees
with a gold judge, how calibrated its strengths are, how position-consistent and how fast, on
answers a policy really samples.

One rollout actor samples K answers (T = 0.8, as in training) to each held-out instruction
prompt (cluster/evaluation/answers.py); every unordered pair of a prompt's answers is judged by
each judge under test and by the gold judge, the prompt's IFEval verifier (s = share of
instructions followed; gold prefers the answer with the higher s, and ties where they are
equal). A judge spec is a judge kind (judge/preferences.py) with an optional noise model:
`<kind>[+flip:<share>|+logit:<σ>]`. For each judge:

- agreement: on the pairs gold does not tie, the share where the judge prefers gold's side
  (p = 0.5 counts half), with a 95% interval resampling prompts;
- calibration: each pair read both ways, (p, y) and (1 − p, 1 − y) with y = 1, ½, 0 as gold
  prefers a, ties, prefers b; strengths binned in ten, and the expected calibration error
  ECE = Σ_bins (n_b / N)·|mean p − mean y|; the reliability diagram is reliability.png;
- temperature: the T whose strengths σ(logit(p)/T) have the lowest cross-entropy against gold's
  outcomes y (temperature scaling; `judge.temperature=T` trains on them), and ece_at_temperature,
  the ECE they reach;
- near_half_share: the share of p within 0.05 of 0.5 (how often the judge is nearly mute);
- position_gap: for an LM judge, mean |p_ab − (1 − p_ba)| before swap averaging;
- comparisons_per_s: comparisons judged per second, in this process.

The files (`write_files`): report.json, report.md, reliability.png; the command line also keeps
answers.json (reusable with --answers).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from cluster.data.prompts import Prompt
from cluster.evaluation.answers import Answerer
from cluster.evaluation.intervals import ratio_with_interval
from core.chat import ChatEncoder
from core.config import JudgeConfig, RolloutConfig
from judge.preferences import NOISES, base_judge, check_kind, make_preference
from judge.verifier import verify

log = logging.getLogger("osp")
BINS = 10


@dataclass(frozen=True)
class CardOptions:
    """`model_path`: the SFT model's folder (the self and checklist judges; loaded only for them);
    `chat`: its ChatEncoder (core/chat.py); `instructions`: each prompt text's IFEval instructions
    (the verifier, gold's and a judge's); `tau`: τ of score-based judges; `seed`: the noise's and
    the intervals'."""

    model_path: str
    chat: ChatEncoder
    instructions: dict
    tau: float = 0.5
    seed: int = 0


@dataclass(frozen=True)
class Comparisons:
    """Every unordered pair of each prompt's answers: its prompt text, the two answers, and the
    prompt's number (`owner`: the interval resamples prompts)."""

    prompts: list[str]
    a: list[str]
    b: list[str]
    owner: np.ndarray

    @classmethod
    def of(cls, rows: list[dict]) -> Comparisons:
        prompts, a, b, owner = [], [], [], []
        for n, row in enumerate(rows):
            answers = row["answers"]
            for i in range(len(answers)):
                for j in range(i + 1, len(answers)):
                    prompts.append(row["prompt"])
                    a.append(answers[i])
                    b.append(answers[j])
                    owner.append(n)
        return cls(prompts, a, b, np.array(owner))


def parse_judge_spec(spec: str) -> tuple[str, str, float]:
    """`<kind>[+<noise>:<scale>]` → (kind, noise, scale); ValueError naming the accepted forms."""
    kind, _, noise_part = spec.partition("+")
    noise, scale = "none", 0.0
    if noise_part:
        noise, _, raw = noise_part.partition(":")
        if noise not in NOISES[1:] or not raw:
            raise ValueError(f"judge spec {spec!r}: the noise part must be +flip:<share> or +logit:<σ>")
        scale = float(raw)
    check_kind(kind)
    return kind, noise, scale


def sample_answers(model_path: str, prompts: list[Prompt], rollout: RolloutConfig, seed: int,
                   adapter: Path | None = None) -> list[dict]:
    """K answers per prompt (`rollout`: k, max_tokens; T = 0.8, top-p 0.95 by default, as the
    default training) from one rollout actor on both cores; `adapter`: a checkpoint's LoRA
    adapter, merged into `model_path`'s weights first."""
    with Answerer.start(model_path, rollout, prompts, seed, "judge-report", cpus=2) as answerer:
        answerer.load(adapter)
        return answerer.sample(prompts)


def report_card(p: np.ndarray, gold: np.ndarray, prompt_of: np.ndarray, seed: int = 0) -> dict:
    """Agreement (with its interval), ECE, the reliability bins and the near-½ share of a judge's
    strengths `p` against gold scores differences `gold` (s_a − s_b), comparisons grouped by
    prompt (`prompt_of`) for the interval."""
    p, gold, prompt_of = np.asarray(p, float), np.asarray(gold, float), np.asarray(prompt_of)
    decided = gold != 0
    right = np.where(p == 0.5, 0.5, ((p > 0.5) == (gold > 0)).astype(float))
    prompts = np.unique(prompt_of)
    num = np.array([(right * decided)[prompt_of == q].sum() for q in prompts])
    den = np.array([decided[prompt_of == q].sum() for q in prompts], dtype=float)
    agreement = ratio_with_interval(num, den, seed) if den.sum() else None
    y = np.where(gold > 0, 1.0, np.where(gold < 0, 0.0, 0.5))
    both_p, both_y = np.concatenate([p, 1 - p]), np.concatenate([y, 1 - y])
    index = np.minimum((both_p * BINS).astype(int), BINS - 1)
    bins, ece = [], 0.0
    for b in range(BINS):
        sel = index == b
        if sel.any():
            bins.append({"p": float(both_p[sel].mean()), "gold": float(both_y[sel].mean()), "n": int(sel.sum())})
            ece += sel.sum() / len(both_p) * abs(both_p[sel].mean() - both_y[sel].mean())
    return {"agreement": None if agreement is None else agreement["value"],
            "agreement_ci": None if agreement is None else [agreement["ci_low"], agreement["ci_high"]],
            "ece": float(ece), "near_half_share": float((np.abs(p - 0.5) < 0.05).mean()),
            "pairs": int(len(p)), "gold_decided": int(decided.sum()), "reliability": bins}


def tempered(p: np.ndarray, temperature: float) -> np.ndarray:
    """σ(logit(p) / T), as judge.temperature applies it (judge/preferences.TemperedJudge)."""
    p = np.clip(np.asarray(p, float), 1e-12, 1 - 1e-12)
    return 1.0 / (1.0 + np.exp(-np.log(p / (1 - p)) / temperature))


def fit_temperature(p: np.ndarray, gold: np.ndarray) -> float:
    """The T minimising the cross-entropy −Σ[y log q + (1 − y) log(1 − q)], q = σ(logit(p)/T),
    y = 1, ½, 0 as gold prefers a, ties, prefers b: a grid over log T, then a finer grid around
    its best point (the loss is smooth and one-dimensional; no optimiser needed)."""
    p, gold = np.asarray(p, float), np.asarray(gold, float)
    y = np.where(gold > 0, 1.0, np.where(gold < 0, 0.0, 0.5))

    def cross_entropy(t: float) -> float:
        q = np.clip(tempered(p, t), 1e-12, 1 - 1e-12)
        return float(-(y * np.log(q) + (1 - y) * np.log(1 - q)).mean())

    grid = np.exp(np.linspace(np.log(0.05), np.log(100.0), 121))
    best = grid[int(np.argmin([cross_entropy(t) for t in grid]))]
    fine = best * np.exp(np.linspace(-0.07, 0.07, 57))
    return float(fine[int(np.argmin([cross_entropy(t) for t in fine]))])


def judge_all(spec: str, sft_model, comparisons: Comparisons, options: CardOptions):
    """(p, seconds, position gap or None) of judge `spec` on every comparison; `sft_model`: the
    loaded SFT model (self and checklist judges), else None."""
    kind, noise, scale = parse_judge_spec(spec)
    judge = make_preference(JudgeConfig(kind=kind, tau=options.tau, noise=noise, noise_scale=scale), sft_model,
                            options.chat, instructions=options.instructions, seed=options.seed)
    start = time.perf_counter()
    p = np.array(judge.compare(comparisons.prompts, comparisons.a, comparisons.b), dtype=float)
    seconds = time.perf_counter() - start
    inner = base_judge(judge)
    gap = inner.position_gap_sum / inner.position_gap_count if getattr(inner, "position_gap_count", 0) else None
    return p, seconds, gap


def judge_cards(specs: list[str], rows: list[dict], options: CardOptions) -> tuple[dict[str, dict], dict]:
    """Each judge's card on every pair of the rows' answers ({"prompt", "answers"} each), and
    the comparisons' count and gold's tie share."""
    comparisons = Comparisons.of(rows)
    by_text = options.instructions
    gold = np.array([verify(x, by_text[q]).fraction - verify(y, by_text[q]).fraction
                     for q, x, y in zip(comparisons.prompts, comparisons.a, comparisons.b)])
    log.info("%d comparisons; gold (the verifier) ties %.0f%% of them", len(gold), 100 * (gold == 0).mean())
    sft = None
    if any(parse_judge_spec(s)[0] in ("self", "checklist") for s in specs):
        sft = AutoModelForCausalLM.from_pretrained(options.model_path, dtype=torch.float32).eval().requires_grad_(False)
    cards, owner = {}, comparisons.owner
    for spec in specs:
        p, seconds, gap = judge_all(spec, sft, comparisons, options)
        card = report_card(p, gold, owner, options.seed)
        temperature = fit_temperature(p, gold)
        card.update(temperature=temperature, ece_at_temperature=report_card(tempered(p, temperature), gold, owner)["ece"])
        card.update(position_gap=gap, comparisons_per_s=len(p) / max(seconds, 1e-9), seconds=seconds)
        cards[spec] = card
        log.info("%s: agreement %s, ECE %.3f, near ½ %.2f, %.1f comparisons/s", spec,
                 "—" if card["agreement"] is None else f"{card['agreement']:.3f}", card["ece"],
                 card["near_half_share"], card["comparisons_per_s"])
    return cards, {"comparisons": len(gold), "gold_tie_share": float((gold == 0).mean())}


def plot_reliability(cards: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="calibrated")
    for name, card in cards.items():
        bins = card["reliability"]
        ax.plot([b["p"] for b in bins], [b["gold"] for b in bins], marker="o", lw=1.2,
                label=f"{name} (ECE {card['ece']:.3f})")
    ax.set_xlabel("judge's p(a ≻ b), binned")
    ax.set_ylabel("gold: how often the verifier prefers a (tie = ½)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("Judge reliability against the IFEval verifier")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(cards: dict[str, dict]) -> str:
    lines = ["| judge | agreement with gold (95% CI) | ECE | calibrating T (ECE at T) | p within 0.05 of ½ | position gap "
             "| comparisons/s |", "|---|---|---|---|---|---|---|"]
    for name, c in cards.items():
        agree = "—" if c["agreement"] is None else f"{c['agreement']:.3f} ({c['agreement_ci'][0]:.3f}–{c['agreement_ci'][1]:.3f})"
        gap = "—" if c["position_gap"] is None else f"{c['position_gap']:.3f}"
        fitted = f"{c['temperature']:.2f} ({c['ece_at_temperature']:.3f})" if "temperature" in c else "—"
        lines.append(f"| {name} | {agree} | {c['ece']:.3f} | {fitted} | {c['near_half_share']:.2f} | {gap} | "
                     f"{c['comparisons_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def write_files(out: Path, meta: dict, cards: dict[str, dict]) -> None:
    """report.json (the run's settings and every card), report.md, reliability.png."""
    (out / "report.json").write_text(json.dumps({"meta": meta, "judges": cards}, indent=1))
    (out / "report.md").write_text(markdown(cards))
    plot_reliability(cards, out / "reliability.png")
