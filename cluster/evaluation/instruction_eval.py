"""Held-out IFEval accuracy of a set of answers, with 95% bootstrap intervals.

As IFEval defines them:
- prompt-level accuracy: the share of prompts whose every instruction is followed;
- instruction-level accuracy: the share of all instructions (pooled over prompts) followed;
each strict (the answer as written) and loose (IFEval's relaxed variants, judge/verifier.py).

Intervals resample prompts with replacement (an instruction-level statistic keeps a prompt's
instructions together). A gain over a baseline is paired: both answer sets are resampled on
the same prompts, so the interval of the difference is much tighter than two separate ones.

Those intervals hold the weights fixed. Training is itself noisy (the same seed has given
gains of +0.075, +0.100 and +0.125: the loop is asynchronous), so a claim about a method
pools several runs: cluster/evaluation/intervals.pooled_over_runs resamples the runs, then the
prompts, and reports the between-run standard deviation beside it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from cluster.evaluation.intervals import percentile_interval, ratio_with_interval, resample_prompts
from judge.verifier import Instructions, Verdict, verify

METRICS = ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose")


def verdicts(instructions: Sequence[Instructions], answers: Sequence[str]) -> list[Verdict]:
    if len(instructions) != len(answers):
        raise ValueError(f"{len(answers)} answers for {len(instructions)} prompts")
    return [verify(a, i) for a, i in zip(answers, instructions)]


def _counts(vs: Sequence[Verdict], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt: (followed, out of) for `metric`."""
    level, mode = metric.split("_")
    flags = [v.strict if mode == "strict" else v.loose for v in vs]
    if level == "prompt":
        return np.array([float(all(f)) for f in flags]), np.ones(len(flags))
    return np.array([float(sum(f)) for f in flags]), np.array([float(len(f)) for f in flags])


def prompt_counts(vs: Sequence[Verdict], metric: str = "prompt_strict") -> tuple[np.ndarray, np.ndarray]:
    """Per prompt: (followed, out of) for `metric`: the numerators and denominators that
    `pooled_over_runs` takes."""
    return _counts(vs, metric)


def accuracy(vs: Sequence[Verdict], seed: int = 0) -> dict[str, dict[str, float]]:
    """{metric: {value, ci_low, ci_high}} for the four IFEval accuracies."""
    if not vs:
        raise ValueError("no answers to score")
    return {metric: ratio_with_interval(*_counts(vs, metric), seed) for metric in METRICS}


def gain(policy: Sequence[Verdict], baseline: Sequence[Verdict], seed: int = 0) -> dict[str, dict[str, float]]:
    """{metric: {value, ci_low, ci_high}} of policy − baseline, paired over the same prompts."""
    if len(policy) != len(baseline) or not policy:
        raise ValueError(f"a paired gain needs answers to the same prompts ({len(policy)} vs {len(baseline)})")
    idx = resample_prompts(len(policy), seed)
    out = {}
    for metric in METRICS:
        (a, den), (b, _) = _counts(policy, metric), _counts(baseline, metric)
        diffs = (a[idx].sum(1) - b[idx].sum(1)) / den[idx].sum(1)
        lo, hi = percentile_interval(diffs)
        out[metric] = {"value": float((a.sum() - b.sum()) / den.sum()), "ci_low": lo, "ci_high": hi}
    return out


def per_kind(instructions: Sequence[Instructions], vs: Sequence[Verdict]) -> dict[str, dict[str, float]]:
    """{instruction id: {n, strict, loose}}: pass rates of each instruction kind."""
    table: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for ins, v in zip(instructions, vs):
        for kind, s, l in zip(ins.ids, v.strict, v.loose):
            table[kind].append((s, l))
    return {kind: {"n": len(rows), "strict": sum(s for s, _ in rows) / len(rows),
                   "loose": sum(l for _, l in rows) / len(rows)} for kind, rows in sorted(table.items())}


def report(instructions: Sequence[Instructions], answers: Sequence[str], baseline: Sequence[Verdict] | None = None,
           seed: int = 0) -> dict:
    """Everything about one answer set: accuracies, per-kind rates, the gain over `baseline`."""
    vs = verdicts(instructions, answers)
    out = {"prompts": len(vs), "accuracy": accuracy(vs, seed), "per_kind": per_kind(instructions, vs)}
    if baseline is not None:
        out["gain"] = gain(vs, baseline, seed)
    return out


def format_accuracy(name: str, acc: dict[str, dict[str, float]]) -> str:
    m = acc["prompt_strict"]
    i = acc["instruction_strict"]
    return (f"{name}: prompt-level {m['value']:.3f} ({m['ci_low']:.3f}–{m['ci_high']:.3f}), "
            f"instruction-level {i['value']:.3f} ({i['ci_low']:.3f}–{i['ci_high']:.3f}) strict")
