"""The small-data experiment's outcomes → the `small_data` block of docs/results.json and its tables.

    .venv/bin/python experiments/small-data/summarise.py [--outcomes experiments/small-data/outcomes]

Per arm (its seeds pooled): the held-out accuracy at every checkpoint (the curve), the peak and
final gains over SFT, and the drop from the peak (final − peak step, the same runs at both steps,
so the runs are resampled once, paired), each with a two-stage interval (runs, then prompts);
the KL to SFT and the answer length along the way from the runs' training metrics. Also
docs/small_data.png: accuracy against step with each arm's band (the runs' range).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # experiment_summary: the shared helpers

from experiment_summary import _counts, ci, load_outcomes, method_stats, runs_of

from cluster.evaluation import instruction_eval
from cluster.evaluation.intervals import pooled_over_runs

HERE = Path(__file__).resolve().parent
ARMS = {"spce": "SPCE on the soft p (method=osp)", "dpo": "DPO on the verdict", "cdpo": "cDPO, ε = 0.37"}


def curve_of(results: dict, sft: dict, arm: str) -> list[dict]:
    steps = sorted({s for (name, s) in results if name.startswith(f"{arm}-s")})
    out = []
    for step in steps:
        stats = method_stats(results, sft, arm, step)
        if stats:
            out.append({"step": step, "accuracy": stats["accuracy"], "gain": stats["gain"],
                        "each_run": stats["gain"]["runs"][0], "truncated": stats["truncated"],
                        "mean_tokens": stats["mean_tokens"]})
    return out


def drop_from_peak(results: dict, arm: str, peak: int, final: int) -> dict:
    """final − peak accuracy, paired by run (a run's own two checkpoints)."""
    at_peak, den = _counts(runs_of(results, arm, peak), "prompt_strict")
    at_final, _ = _counts(runs_of(results, arm, final), "prompt_strict")
    return pooled_over_runs([(1.0, at_final - at_peak)], den)


def along_the_way(training: dict, arm: str) -> list[dict]:
    """Per run: the KL estimate and the chosen answers' length, every 16 steps (means over each window)."""
    out = []
    for name, series in sorted(training.items()):
        if not name.startswith(f"{arm}-s") or not series:
            continue
        steps = series["step"]
        rows = []
        for end in range(16, max(steps) + 1, 16):
            window = [i for i, s in enumerate(steps) if end - 16 < s <= end]

            def mean(key, window=window, series=series, steps=steps):
                xs = [series.get(key, [None] * len(steps))[i] for i in window]
                xs = [x for x in xs if x is not None]
                return float(np.mean(xs)) if xs else None

            rows.append({"step": end, "kl": mean("kl/policy_sft"), "length_chosen": mean("length/chosen")})
        out.append({"run": name, "windows": rows})
    return out


def summarise(outcomes: list[Path]) -> dict:
    sft, results, training = load_outcomes(outcomes)
    base = instruction_eval.accuracy(sft["verdicts"])["prompt_strict"]
    arms = {}
    for arm in ARMS:
        curve = curve_of(results, sft, arm)
        if not curve:
            continue
        peak = max(curve, key=lambda c: c["accuracy"]["value"])
        final = curve[-1]
        arms[arm] = {"seeds": [s for s, _ in runs_of(results, arm, final["step"])], "curve": curve,
                     "peak_step": peak["step"], "peak_gain": peak["gain"], "final_gain": final["gain"],
                     "drop_from_peak": drop_from_peak(results, arm, peak["step"], final["step"]),
                     "along_the_way": along_the_way(training, arm)}
    return {"small_data": {
        "task": f"held-out IFEval prompt-level accuracy (strict), {len(sft['instructions'])} prompts, 48 tokens, greedy",
        "setting": "64 training prompts from instructions, each seen 6 times (96 steps of 8 pairs), K=4, checklist "
                   "self-judge (τ 0.5), SmolLM2-135M + LoRA r=8, staleness 2",
        "interval": "95%, two-stage bootstrap: runs (seeds) resampled within each arm, then prompts (shared)",
        "sft_accuracy": base, "arms": arms}}


def plot(block: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for arm, a in block["arms"].items():
        steps = [c["step"] for c in a["curve"]]
        acc = [c["accuracy"]["value"] for c in a["curve"]]
        base = block["sft_accuracy"]["value"]
        lo = [base + min(c["each_run"]) for c in a["curve"]]
        hi = [base + max(c["each_run"]) for c in a["curve"]]
        ax.plot(steps, acc, marker="o", label=ARMS[arm])
        ax.fill_between(steps, lo, hi, alpha=0.2)
    ax.axhline(block["sft_accuracy"]["value"], color="grey", ls="--", label="SFT")
    ax.set_xlabel("learner step (each prompt seen once every 16 steps)")
    ax.set_ylabel("held-out prompt-level accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outcomes", nargs="+", type=Path, default=[HERE / "outcomes"])
    parser.add_argument("--out", default="docs/results.json")
    parser.add_argument("--plot", default="docs/small_data.png")
    args = parser.parse_args()
    keys = summarise(args.outcomes)
    out_path = Path(args.out)
    out = json.loads(out_path.read_text()) if out_path.exists() else {}
    out.update(keys)
    out_path.write_text(json.dumps(out, indent=1) + "\n")
    block = keys["small_data"]
    if block["arms"]:
        plot(block, Path(args.plot))
    print(f"wrote {out_path}\nSFT: {ci(block['sft_accuracy'])}\n")
    print("| arm | seeds | peak step | peak gain | final gain (step 96) | drop from peak |")
    print("|---|---|---|---|---|---|")
    for arm, a in block["arms"].items():
        print(f"| {ARMS[arm]} | {len(a['seeds'])} | {a['peak_step']} | {ci(a['peak_gain'], True)} | "
              f"{ci(a['final_gain'], True)} | {ci(a['drop_from_peak'], True)} |")


if __name__ == "__main__":
    main()
