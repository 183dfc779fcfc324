"""What the experiment summaries share: read an experiment's outcomes (experiment_outcomes: every
answer's verdicts, kept in experiments/<name>/outcomes/), and pool a method's runs (seeds) with
intervals that resample runs as well as prompts (cluster.evaluation.pooled_over_runs).

Imported by experiments/<name>/summarise.py, which puts this folder on sys.path. A run is named
`<method>-s<seed>` (e.g. osp-s2, dpo-sigma1-s0); an answer set of its checkpoint at step N is
`<run>@<N>`, the SFT model's `sft`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from experiment_outcomes import AnswerSet, load, load_training

from cluster.evaluation import instruction_eval
from cluster.evaluation.intervals import mean_with_interval, pooled_over_runs

RUN_NAME = re.compile(r"^(?P<method>.+)-s(?P<seed>\d+)$")


def report(instructions: list, answers: AnswerSet, baseline: list | None = None) -> dict:
    """instruction_eval.report, from the kept verdicts instead of the answers."""
    out = {"prompts": len(answers.verdicts), "accuracy": instruction_eval.accuracy(answers.verdicts),
           "per_kind": instruction_eval.per_kind(instructions, answers.verdicts)}
    if baseline is not None:
        out["gain"] = instruction_eval.gain(answers.verdicts, baseline)
    return out


def summary_of(instructions: list, answers: AnswerSet, baseline: list | None = None) -> dict:
    """{"verdicts", "report", "truncated", "mean_tokens", "repeated_share"} of one answer set: the
    shares and means over its prompts (repeated_share: the mean share of word 4-grams an answer
    repeats; a loop → 1)."""
    return {"verdicts": answers.verdicts, "report": report(instructions, answers, baseline),
            "truncated": float(answers.truncated.mean()), "mean_tokens": float(answers.tokens.mean()),
            "repeated_share": float(answers.repeated_share.mean())}


def load_outcomes(paths: list[Path], training_from: list[Path] = ()) -> tuple[dict, dict, dict]:
    """(sft, results, training) of the outcomes in `paths` (files, or folders of them).

    sft: summary_of the SFT answers, plus "instructions" and "prompts" (the set's name); results:
    {(run, step): summary_of the checkpoint's answers, its gain paired with SFT's}; training:
    {run: its metrics columns}, from `paths` and `training_from` (the outcomes of the arm whose
    runs these evaluations answered with)."""
    outcomes = load(paths)
    if outcomes.instructions is None:
        raise SystemExit(f"the outcomes in {', '.join(map(str, paths))} carry no IFEval verdicts ({outcomes.prompts})")
    if "sft" not in outcomes.sets:
        raise SystemExit(f"no SFT answers in {', '.join(map(str, paths))}")
    base = outcomes.sets["sft"].verdicts
    sft = {**summary_of(outcomes.instructions, outcomes.sets["sft"]), "instructions": outcomes.instructions,
           "prompts": outcomes.prompts}
    results = {}
    for name, answers in outcomes.sets.items():
        if name != "sft":
            run, step = name.split("@")
            results[(run, int(step))] = summary_of(outcomes.instructions, answers, base)
    return sft, results, {**load_training(list(training_from)), **outcomes.training}


def runs_of(results: dict, method: str, step: int) -> list[tuple[int, dict]]:
    """(seed, result) of every run of `method` evaluated at `step`, by seed."""
    out = []
    for (name, s), r in results.items():
        m = RUN_NAME.match(name)
        if m and m["method"] == method and s == step:
            out.append((int(m["seed"]), r))
    return sorted(out, key=lambda x: x[0])


def _counts(runs: list[tuple[int, dict]], metric: str) -> tuple[np.ndarray, np.ndarray]:
    nums, den = [], None
    for _, r in runs:
        num, den = instruction_eval.prompt_counts(r["verdicts"], metric)
        nums.append(num)
    return np.stack(nums), den


def method_stats(results: dict, sft: dict, method: str, step: int, metric: str = "prompt_strict") -> dict | None:
    """A method's runs pooled: accuracy and gain over SFT, each with the two-stage interval
    (runs, then prompts) and the between-run SD, plus the prompt-only interval of the gain
    (per prompt, the mean over runs) for comparison."""
    runs = runs_of(results, method, step)
    if not runs:
        return None
    num, den = _counts(runs, metric)
    base, _ = instruction_eval.prompt_counts(sft["verdicts"], metric)
    accuracy = pooled_over_runs([(1.0, num)], den)
    gain = pooled_over_runs([(1.0, num - base)], den)
    prompt_only = mean_with_interval((num.mean(0) - base) / den.mean(), 0) if metric.startswith(
        "prompt") else None
    return {"seeds": [s for s, _ in runs], "step": step, "metric": metric,
            "accuracy": accuracy, "gain": gain, "gain_prompt_only_ci": prompt_only,
            "between_run_sd": gain["between_run_sd"],
            "per_kind": per_kind_mean([r for _, r in runs]),
            "truncated": float(np.mean([r["truncated"] for _, r in runs])),
            "mean_tokens": float(np.mean([r["mean_tokens"] for _, r in runs])),
            "repeated_share": float(np.mean([r["repeated_share"] for _, r in runs]))}


def difference(results: dict, a: str, b: str, step: int, metric: str = "prompt_strict") -> dict | None:
    """Method a − method b, their runs resampled separately, the prompts together."""
    ra, rb = runs_of(results, a, step), runs_of(results, b, step)
    if not ra or not rb:
        return None
    (na, den), (nb, _) = _counts(ra, metric), _counts(rb, metric)
    return pooled_over_runs([(1.0, na), (-1.0, nb)], den)


def per_kind_mean(reports: list[dict]) -> dict[str, dict[str, float]]:
    kinds = reports[0]["report"]["per_kind"]
    return {k: {"n": v["n"], "strict": float(np.mean([r["report"]["per_kind"][k]["strict"] for r in reports]))}
            for k, v in kinds.items()}


def training_summary(series: dict | None) -> dict | None:
    """From a run's kept metrics columns (experiment_outcomes.training_series): wall time, pairs,
    and first → last fifth of the training signals."""
    if not series:
        return None
    n, fifth = len(series["step"]), max(1, len(series["step"]) // 5)

    def mean(key, part):
        xs = [x for x in series.get(key, [None] * n)[part] if x is not None]
        return float(np.mean(xs)) if xs else None

    first, last = slice(0, fifth), slice(n - fifth, n)
    pushes = [x for x in series.get("push_s", []) if x is not None]
    return {
        "steps": n, "wall_s": series["time"][-1], "pairs_trained": series["run/pairs_trained"][-1],
        "samples_pass_first_fifth": mean("samples/verifier_pass", first),
        "samples_pass_last_fifth": mean("samples/verifier_pass", last),
        "samples_truncated_first_fifth": mean("samples/truncated", first),
        "samples_truncated_last_fifth": mean("samples/truncated", last),
        "tie_share_mean": mean("judge/tie_share", slice(0, n)),
        "loss_first_fifth": mean("loss", first), "loss_last_fifth": mean("loss", last),
        "median_step_s": float(np.median([x for x in series["step_s"] if x is not None])),
        "median_push_s": float(np.median(pushes or [0.0])),
    }


def ci(m: dict, signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(m['value'])} ({f.format(m['ci_low'])} to {f.format(m['ci_high'])})"


def method_row(name: str, stats: dict) -> str:
    """A markdown row: method, seeds, accuracy, gain (runs+prompts CI), prompt-only CI, between-run SD."""
    runs = ", ".join(f"{x:+.3f}" for x in stats["gain"]["runs"][0])
    sd = stats["between_run_sd"]
    po = stats["gain_prompt_only_ci"]
    return (f"| {name} | {len(stats['seeds'])} | {ci(stats['accuracy'])} | **{ci(stats['gain'], True)}** | "
            f"{po['ci_low']:+.3f} to {po['ci_high']:+.3f} | {'—' if sd is None else f'{sd:.3f}'} | {runs} |")


METHOD_HEADER = ("| method | runs | held-out accuracy (runs + prompts CI) | gain over SFT (runs + prompts CI) | "
                 "gain CI, prompts only | between-run SD of the gain | each run's gain |\n"
                 "|---|---|---|---|---|---|---|")
