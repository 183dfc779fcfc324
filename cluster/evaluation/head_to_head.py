"""Head-to-head evaluation: each checkpoint's answers against a baseline's (the SFT model's by
default), on held-out prompts (the engine of `python -m cluster.evaluate`).

One rollout actor (cluster/evaluation/answers.py) answers every prompt with the baseline's
weights, then with each checkpoint's (weights swapped in place, as in training). Each scorer
compares policy vs baseline answers per prompt: win (p > 0.5), loss (p < 0.5), tie (p = 0.5
exactly: e.g. identical answers). Win rate = (wins + ties/2) / n with a 95% bootstrap interval
over prompts. Mean answer lengths are reported too: preference training drifts toward longer
answers (the OSP paper's length-bias warning), and a win bought by length alone should be visible.
When the held-out prompts carry verifiable instructions (IFEval format), every answer set, the
baseline's included, also gets IFEval accuracy (prompt- and instruction-level, strict and loose,
with 95% bootstrap intervals), a per-instruction-kind table, and each checkpoint's paired gain
over the baseline with its interval (cluster/evaluation/instruction_eval.py). The files:
cluster/evaluation/report.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from cluster.data.prompts import SHIPPED, SHIPPED_EVAL, Prompt
from cluster.driver.progress import CountBar
from cluster.evaluation import instruction_eval
from cluster.evaluation.answers import Answerer
from cluster.evaluation.intervals import mean_with_interval
from core.config import RolloutConfig
from judge.scorers import make_scorer


@dataclass(frozen=True)
class HeadToHeadOptions:
    """How to evaluate. `sft_path`: the SFT model's folder (the answering engine's base, and the
    self-judge whatever the baseline); `scorers`: scorer specs (judge/scorers.make_scorer);
    `baseline`: a checkpoint hf/ folder to play against instead of the SFT model; `cpus`: the
    answering engine's cores; `chat_template`: the run's model.chat_template, which the model
    scorers encode their judging prompts with."""

    sft_path: str
    scorers: tuple[str, ...] | list[str]
    max_tokens: int
    temperature: float = 0.0  # 0: greedy
    seed: int = 0
    baseline: Path | None = None
    cpus: int = 1
    chat_template: str | None = None


@dataclass
class Outcome:
    scorer: str
    wins: int
    ties: int
    losses: int
    win_rate: float
    ci_low: float
    ci_high: float

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses


def outcome_values(strengths: list[float]) -> list[float]:
    """Per prompt: 1 win, 0.5 tie, 0 loss (for the policy, p = p(policy ≻ SFT))."""
    return [1.0 if p > 0.5 else 0.0 if p < 0.5 else 0.5 for p in strengths]


def summarise(scorer: str, strengths: list[float], seed: int = 0) -> Outcome:
    values = outcome_values(strengths)
    rate = mean_with_interval(values, seed)
    return Outcome(scorer, values.count(1.0), values.count(0.5), values.count(0.0),
                   rate["value"], rate["ci_low"], rate["ci_high"])


@dataclass(frozen=True)
class RunDefaults:
    """What an evaluation of a run folder defaults to, from the run's config.yaml: its model
    (model.path, None: the embedded default), chat template, prompt budget and answer length,
    and the held-out counterpart of its training prompts (`<data.prompts>-eval` when shipped)."""

    model: str | None = None
    chat_template: str | None = None
    max_prompt_tokens: int = 256
    max_tokens: int = 64
    prompts: str | Path = SHIPPED_EVAL

    @classmethod
    def of(cls, run_dir: Path | None) -> RunDefaults:
        config = run_dir / "config.yaml" if run_dir else None
        cfg = (yaml.safe_load(config.read_text()) or {}) if config and config.exists() else {}
        model, held_out = cfg.get("model", {}), f"{cfg.get('data', {}).get('prompts')}-eval"
        return cls(model.get("path"), model.get("chat_template"), model.get("max_prompt_tokens", 256),
                   cfg.get("rollout", {}).get("max_tokens", 64), held_out if held_out in SHIPPED else SHIPPED_EVAL)


def run_checkpoints(run_dir: Path) -> list[Path]:
    """Every ckpt-*/hf of a run folder, in step order; FileNotFoundError when it has none."""
    found = sorted(p / "hf" for p in run_dir.glob("ckpt-*") if (p / "hf").is_dir())
    if not found:
        raise FileNotFoundError(f"no ckpt-*/hf checkpoints in {run_dir}")
    return found


def evaluate(checkpoints: list[Path], prompts: list[Prompt], options: HeadToHeadOptions) -> list[dict]:
    """Evaluate each checkpoint's hf/ folder against the baseline; one result dict each."""
    answerer = Answerer.start(options.sft_path, RolloutConfig(k=1, temperature=1.0, top_p=1.0, max_tokens=options.max_tokens),
                              prompts, options.seed, "eval", options.cpus)
    bar = CountBar("answers", len(prompts) * (1 + len(checkpoints)))
    try:
        answerer.load(options.baseline)
        base = answerer.answer(prompts, options.max_tokens, options.temperature, options.seed, bar)
        policies = []
        for ckpt in checkpoints:
            answerer.load(ckpt)
            policies.append(answerer.answer(prompts, options.max_tokens, options.temperature, options.seed, bar))
    finally:
        bar.close()
        answerer.close()
    results = [_result(ckpt, prompts, answers, base, options) for ckpt, answers in zip(checkpoints, policies)]
    _add_ifeval(results, prompts, policies, base, options.seed)
    _add_outcomes(results, prompts, policies, base, options)
    return results


def _result(ckpt: Path, prompts: list[Prompt], answers: list[dict], base: list[dict], options: HeadToHeadOptions) -> dict:
    texts = [p.text for p in prompts]
    base_texts = [a["text"] for a in base]
    return {
        "checkpoint": str(ckpt),
        "baseline": str(options.baseline) if options.baseline else "sft",
        "prompts": len(prompts),
        "mean_tokens_policy": sum(len(a["tokens"]) for a in answers) / len(answers),
        "mean_tokens_baseline": sum(len(a["tokens"]) for a in base) / len(base),
        "identical_answers": sum(a["text"] == b for a, b in zip(answers, base_texts)),
        "outcomes": [],
        "examples": [
            {"prompt": t, "policy": a["text"], "baseline": b} for t, a, b in list(zip(texts, answers, base_texts))[:5]
        ],
        # Every answer, in prompt order: what the figures below were computed from, with
        # each answer's length and whether max_tokens cut it (per-prompt outcomes are
        # rebuilt from these: experiments/lib/experiment_outcomes.py).
        "prompt_ids": [p.prompt_id for p in prompts],
        "answers": [a["text"] for a in answers],
        "baseline_answers": base_texts,
        "answer_tokens": [len(a["tokens"]) for a in answers],
        "baseline_answer_tokens": [len(a["tokens"]) for a in base],
        "answer_truncated": [a["finish_reason"] == "length" for a in answers],
        "baseline_answer_truncated": [a["finish_reason"] == "length" for a in base],
    }


def _add_ifeval(results: list[dict], prompts: list[Prompt], policies: list[list[dict]], base: list[dict], seed: int) -> None:
    """IFEval accuracy of every answer set and each checkpoint's paired gain, when every prompt
    carries instructions."""
    instructions = [p.instructions for p in prompts]
    if not all(i is not None for i in instructions):
        return
    base_texts = [a["text"] for a in base]
    base_verdicts = instruction_eval.verdicts(instructions, base_texts)
    base_report = instruction_eval.report(instructions, base_texts, seed=seed)
    for result, answers in zip(results, policies):
        policy_texts = [a["text"] for a in answers]
        result["ifeval"] = instruction_eval.report(instructions, policy_texts, base_verdicts, seed)
        result["ifeval_baseline"] = base_report
        result["truncated_policy"] = sum(a["finish_reason"] == "length" for a in answers) / len(answers)
        result["truncated_baseline"] = sum(a["finish_reason"] == "length" for a in base) / len(base)


def _add_outcomes(results: list[dict], prompts: list[Prompt], policies: list[list[dict]], base: list[dict],
                  options: HeadToHeadOptions) -> None:
    """Each scorer's per-prompt strengths p(policy ≻ baseline) and their summary, per checkpoint."""
    texts = [p.text for p in prompts]
    base_texts = [a["text"] for a in base]
    by_text = {p.text: p.instructions for p in prompts if p.instructions is not None}
    for spec in options.scorers:
        scorer = make_scorer(spec, options.sft_path, by_text, options.chat_template)
        for result, answers in zip(results, policies):
            policy_texts = [a["text"] for a in answers]
            # Identical answers tie by definition (and cost no judge call).
            strengths = [0.5] * len(texts)
            todo = [i for i, (a, b) in enumerate(zip(policy_texts, base_texts)) if a != b]
            if todo:
                judged = scorer.compare([texts[i] for i in todo], [policy_texts[i] for i in todo],
                                        [base_texts[i] for i in todo])
                for i, p in zip(todo, judged):
                    strengths[i] = float(p)
            # The per-prompt strengths too, so that the win rate can be recomputed from the file.
            result["outcomes"].append({**asdict(summarise(scorer.name, strengths, options.seed)), "strengths": strengths})
