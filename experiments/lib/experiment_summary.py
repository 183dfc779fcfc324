"""What the experiment summaries share: read an experiment's evaluations, score every answer
with the shipped verifier, and pool a method's runs (seeds) with intervals that resample runs
as well as prompts (cluster.evaluation.pooled_over_runs).

Imported by experiments/<name>/summarise.py, which puts this folder on sys.path. A run is named
`<method>-s<seed>` (e.g. osp-s2, dpo-sigma1-s0); its checkpoints' answers are in the eval.json of the experiment's eval-*/ folders
(cluster.evaluate).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from cluster.data.prompts import SHIPPED, read_prompt_rows
from cluster.evaluation import instruction_eval
from cluster.evaluation.intervals import mean_with_interval, pooled_over_runs
from judge.repetition import repeated_share

RUN_NAME = re.compile(r"^(?P<method>.+)-s(?P<seed>\d+)$")


def run_and_step(checkpoint: str) -> tuple[str, int]:
    """runs/exp/osp-s1/ckpt-000015/hf → ("osp-s1", 15)."""
    path = Path(checkpoint)
    ckpt = path.parent if path.name == "hf" else path
    return ckpt.parent.name, int(ckpt.name.split("-")[1])


def mean_repeated_share(answers: list[str]) -> float:
    return float(np.mean([repeated_share(a) for a in answers]))


def load_evaluations(exp: Path, prompts: str = "instructions-eval") -> tuple[dict, dict]:
    """(sft, results): every evaluated answer set of the experiment, re-verified.

    sft: {"verdicts", "instructions", "report", "truncated", "mean_tokens", "repeated_share"} (the
    SFT answers must be the same in every evaluation: they are greedy); results: {(run, step):
    {"verdicts", "report", "truncated", "mean_tokens", "repeated_share"}}. repeated_share: the
    answers' mean share of word 4-grams they repeat (judge/repetition.py; a loop → 1)."""
    path = Path(SHIPPED.get(prompts, prompts))
    rows, _ = read_prompt_rows(path)
    instructions_by_id = {r.prompt_id: r.instructions for r in rows}
    sft, results = None, {}
    for eval_dir in sorted(d for d in exp.glob("eval-*") if (d / "eval.json").exists()):
        for r in json.loads((eval_dir / "eval.json").read_text()):
            instructions = [instructions_by_id[i] for i in r["prompt_ids"]]
            base = instruction_eval.verdicts(instructions, r["baseline_answers"])
            if sft is None:
                sft = {"verdicts": base, "instructions": instructions,
                       "report": instruction_eval.report(instructions, r["baseline_answers"]),
                       "truncated": r["truncated_baseline"], "mean_tokens": r["mean_tokens_baseline"],
                       "repeated_share": mean_repeated_share(r["baseline_answers"])}
            if [v.strict for v in base] != [v.strict for v in sft["verdicts"]]:
                raise SystemExit(f"{eval_dir}: the SFT answers differ from another evaluation's")
            results[run_and_step(r["checkpoint"])] = {
                "verdicts": instruction_eval.verdicts(instructions, r["answers"]),
                "report": instruction_eval.report(instructions, r["answers"], base),
                "truncated": r["truncated_policy"], "mean_tokens": r["mean_tokens_policy"],
                "repeated_share": mean_repeated_share(r["answers"])}
    if sft is None:
        raise SystemExit(f"no evaluations under {exp}")
    return sft, results


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


def training_summary(run_dir: Path) -> dict | None:
    """From a run's metrics.jsonl: wall time, pairs, and first → last fifth of the training signals."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    n, fifth = len(rows), max(1, len(rows) // 5)

    def mean(key, part):
        xs = [r[key] for r in part if key in r]
        return float(np.mean(xs)) if xs else None

    return {
        "steps": n, "wall_s": rows[-1]["time"], "pairs_trained": rows[-1]["run/pairs_trained"],
        "samples_pass_first_fifth": mean("samples/verifier_pass", rows[:fifth]),
        "samples_pass_last_fifth": mean("samples/verifier_pass", rows[-fifth:]),
        "samples_truncated_first_fifth": mean("samples/truncated", rows[:fifth]),
        "samples_truncated_last_fifth": mean("samples/truncated", rows[-fifth:]),
        "tie_share_mean": mean("judge/tie_share", rows),
        "loss_first_fifth": mean("loss", rows[:fifth]), "loss_last_fifth": mean("loss", rows[-fifth:]),
        "median_step_s": float(np.median([r["step_s"] for r in rows])),
        "median_push_s": float(np.median([r["push_s"] for r in rows if "push_s" in r] or [0.0])),
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
