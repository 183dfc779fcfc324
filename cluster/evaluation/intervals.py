"""Bootstrap intervals, the one implementation: over prompts, and over runs then prompts.

- `mean_with_interval`: the mean of a per-prompt quantity (a win, a paired difference).
- `ratio_with_interval`: Σ num / Σ den with per-prompt numerators and denominators (an
  instruction-level rate keeps a prompt's instructions together; a judge's agreement).
- `pooled_over_runs`: a statistic pooled over several training runs, resampling the runs as
  well as the prompts, with the between-run standard deviation.
Percentile intervals, 95%, 2,000 resamples; a seed fixes the draws.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

SAMPLES = 2000


def resample_prompts(n: int, seed: int, samples: int = SAMPLES) -> np.ndarray:
    """[samples, n] indices: each row a resample of n prompts with replacement."""
    if n < 1:
        raise ValueError("nothing to resample: no prompts")
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def percentile_interval(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def mean_with_interval(per_prompt: np.ndarray, seed: int = 0, samples: int = SAMPLES) -> dict[str, float]:
    """{value, ci_low, ci_high} of a per-prompt quantity's mean (e.g. a paired difference),
    resampling prompts."""
    per_prompt = np.asarray(per_prompt, dtype=float)
    idx = resample_prompts(len(per_prompt), seed, samples)
    lo, hi = percentile_interval(per_prompt[idx].mean(1))
    return {"value": float(per_prompt.mean()), "ci_low": lo, "ci_high": hi}


def ratio_with_interval(num: np.ndarray, den: np.ndarray, seed: int = 0) -> dict[str, float]:
    """{value, ci_low, ci_high} of Σ num / Σ den over prompts (per-prompt numerators and
    denominators: an instruction-level rate, a judge's agreement), resampling prompts."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    idx = resample_prompts(len(num), seed)
    totals = den[idx].sum(1)
    lo, hi = percentile_interval(num[idx].sum(1) / np.where(totals > 0, totals, 1))
    return {"value": float(num.sum() / den.sum()), "ci_low": lo, "ci_high": hi}


def pooled_over_runs(groups: Sequence[tuple[float, np.ndarray]], den: np.ndarray, seed: int = 0) -> dict:
    """Σ_g w_g · (mean over group g's runs of Σ_i num[r, i] / Σ_i den[i]), with a 95% interval.

    `groups`: (weight, num) with num of shape [runs, prompts]: the per-prompt numerators of
    each run (a gain: the run's counts minus the baseline's; a method difference: two groups
    with weights +1 and −1). Each bootstrap replicate draws, within every group, as many runs
    as it has, with replacement, and one draw of prompts shared by all runs: the runs answer
    the same prompts, so a prompt's difficulty is common to them, and resampling it separately
    per run would understate it. The prompt draws are those of `mean_with_interval` with the
    same seed, so runs that agree exactly give exactly its interval.

    Also returns `runs` (each run's own statistic, per group) and `between_run_sd` (their
    standard deviation, ddof = 1, per group; None for a single run)."""
    den = np.asarray(den, dtype=float)
    idx = resample_prompts(len(den), seed)  # [SAMPLES, prompts]
    run_rng = np.random.default_rng(seed + 1)
    total = np.zeros(SAMPLES)
    runs, sds, value = [], [], 0.0
    for weight, num in groups:
        num = np.atleast_2d(np.asarray(num, dtype=float))
        if num.shape[1] != len(den):
            raise ValueError(f"{num.shape[1]} prompts per run against {len(den)} denominators")
        per_run = num.sum(1) / den.sum()
        value += weight * per_run.mean()
        runs.append(per_run.tolist())
        sds.append(float(per_run.std(ddof=1)) if len(per_run) > 1 else None)
        picks = run_rng.integers(0, len(num), size=(SAMPLES, len(num)))  # [SAMPLES, runs]
        prompt_sums = num[:, idx].sum(2)  # [runs, SAMPLES]: each run on each replicate's prompts
        chosen = np.take_along_axis(prompt_sums.T, picks, axis=1)  # [SAMPLES, runs drawn]
        total += weight * chosen.mean(1) / den[idx].sum(1)
    lo, hi = percentile_interval(total)
    return {"value": float(value), "ci_low": lo, "ci_high": hi, "runs": runs,
            "between_run_sd": sds[0] if len(sds) == 1 else sds}
