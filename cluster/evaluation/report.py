"""The head-to-head evaluation's report (cluster/evaluation/head_to_head.py): eval.json, eval.md
(win rates, IFEval tables), eval.png, and the console's summary lines."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display: before pyplot is imported
import matplotlib.pyplot as plt


def step_of(checkpoint: Path) -> int | None:
    name = checkpoint.parent.name if checkpoint.name == "hf" else checkpoint.name
    return int(name.split("-")[1]) if name.startswith("ckpt-") else None


def write_report(results: list[dict], out: Path, metrics: Path | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(results, indent=1))
    lines = ["| checkpoint | vs | scorer | win | tie | loss | win rate (95% CI) | mean tokens policy / baseline |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for o in r["outcomes"]:
            lines.append(
                f"| {r['checkpoint']} | {r['baseline']} | {o['scorer']} | {o['wins']} | {o['ties']} | {o['losses']} | "
                f"{o['win_rate']:.3f} ({o['ci_low']:.3f}–{o['ci_high']:.3f}) | "
                f"{r['mean_tokens_policy']:.1f} / {r['mean_tokens_baseline']:.1f} |"
            )
    if results and "ifeval" in results[0]:
        lines += ["", *ifeval_table(results)]
    (out / "eval.md").write_text("\n".join(lines) + "\n")
    plot(results, metrics, out / "eval.png")


def _ci(m: dict, signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(m['value'])} ({f.format(m['ci_low'])} to {f.format(m['ci_high'])})"


def ifeval_table(results: list[dict]) -> list[str]:
    """Markdown: IFEval accuracy of the baseline and each checkpoint, gains, per-kind rates."""
    base = results[0]["ifeval_baseline"]
    lines = ["Held-out IFEval accuracy (95% bootstrap CI over prompts):", "",
             "| answers | prompt strict | prompt loose | instruction strict | instruction loose | truncated |",
             "|---|---|---|---|---|---|"]
    rows = [(results[0]["baseline"], base["accuracy"], results[0]["truncated_baseline"])]
    rows += [(r["checkpoint"], r["ifeval"]["accuracy"], r["truncated_policy"]) for r in results]
    for name, acc, trunc in rows:
        lines.append(f"| {name} | " + " | ".join(_ci(acc[m]) for m in ("prompt_strict", "prompt_loose",
                     "instruction_strict", "instruction_loose")) + f" | {trunc:.2f} |")
    lines += ["", f"Gain over {results[0]['baseline']} (paired bootstrap):", "",
              "| checkpoint | prompt strict | instruction strict |", "|---|---|---|"]
    for r in results:
        g = r["ifeval"]["gain"]
        lines.append(f"| {r['checkpoint']} | {_ci(g['prompt_strict'], True)} | {_ci(g['instruction_strict'], True)} |")
    last = results[-1]
    lines += ["", f"Per instruction kind (strict pass rate), {results[0]['baseline']} vs {last['checkpoint']}:", "",
              "| kind | n | baseline | checkpoint | difference |", "|---|---|---|---|---|"]
    for kind, b in base["per_kind"].items():
        c = last["ifeval"]["per_kind"][kind]
        lines.append(f"| {kind} | {b['n']} | {b['strict']:.3f} | {c['strict']:.3f} | {c['strict'] - b['strict']:+.3f} |")
    return lines


def _by_run(results: list[dict]) -> dict[str, list[dict]]:
    """Results grouped by run folder (the parent of ckpt-N), each group in step order."""
    groups: dict[str, list[dict]] = {}
    for r in sorted(results, key=lambda r: step_of(Path(r["checkpoint"])) or 0):
        path = Path(r["checkpoint"])
        ckpt = path.parent if path.name == "hf" else path
        groups.setdefault(ckpt.parent.name if ckpt.name.startswith("ckpt-") else ckpt.name, []).append(r)
    return groups


def plot(results: list[dict], metrics: Path | None, target: Path) -> None:
    """Win rate (with CI) per scorer against the checkpoint's step; loss over training."""
    with_ifeval = bool(results) and "ifeval" in results[0]
    fig, axes = plt.subplots(1, 3 if with_ifeval else 2, figsize=(16 if with_ifeval else 11, 4))
    left, right = axes[0], axes[-1]
    runs = _by_run(results)  # one line per run: checkpoints of several runs may be evaluated together
    for run, members in runs.items():
        suffix = f" {run}" if len(runs) > 1 else ""
        if with_ifeval:  # held-out accuracy against step, the baseline at step 0
            points = [(0, members[0]["ifeval_baseline"]["accuracy"])]
            points += [(step_of(Path(r["checkpoint"])) or 0, r["ifeval"]["accuracy"]) for r in members]
            for metric in ("prompt_strict",) if len(runs) > 1 else ("prompt_strict", "instruction_strict"):
                ms = [a[metric] for _, a in points]
                axes[1].errorbar([x for x, _ in points], [m["value"] for m in ms], capsize=3, marker="o",
                                 label=metric + suffix,
                                 yerr=[[m["value"] - m["ci_low"] for m in ms], [m["ci_high"] - m["value"] for m in ms]])
        scorers = sorted({o["scorer"] for r in members for o in r["outcomes"]})
        for name in scorers:
            points = [(step_of(Path(r["checkpoint"])) or 0, o) for r in members for o in r["outcomes"] if o["scorer"] == name]
            xs = [x for x, _ in points]
            ys = [o["win_rate"] for _, o in points]
            err = [[o["win_rate"] - o["ci_low"] for _, o in points], [o["ci_high"] - o["win_rate"] for _, o in points]]
            left.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name + suffix)
    if with_ifeval:
        axes[1].set(title="held-out IFEval accuracy (95% CI)", xlabel="learner step", ylabel="accuracy", ylim=(0, 1))
        axes[1].legend(fontsize="small")
    left.axhline(0.5, color="grey", lw=0.8, ls="--")
    vs = results[0]["baseline"] if results else "sft"
    left.set(title=f"win rate vs {vs} (95% bootstrap CI)", xlabel="learner step", ylabel="win rate", ylim=(0, 1))
    left.legend(fontsize="small")
    if metrics is not None and metrics.exists():
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        right.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="loss (batch)")
        probe = [(r["step"], r["loss/probe"]) for r in rows if "loss/probe" in r]
        if probe:
            right.plot(*zip(*probe), marker=".", label="loss (fixed probe batch)")
        right.legend()
    right.set(title="training loss", xlabel="learner step")
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)


def summary_lines(results: list[dict]) -> list[str]:
    """One line per checkpoint for the console: IFEval accuracy and gain (instruction prompts),
    then each scorer's win rate. The full tables are in eval.md."""
    lines = []
    for r in results:
        head = f"{r['checkpoint']} vs {r['baseline']} ({r['prompts']} prompts):"
        if "ifeval" in r:
            a, g = r["ifeval"]["accuracy"]["prompt_strict"], r["ifeval"]["gain"]["prompt_strict"]
            b = r["ifeval_baseline"]["accuracy"]["prompt_strict"]
            head += (f" prompt-level {b['value']:.3f} → {a['value']:.3f}, gain {g['value']:+.3f} "
                     f"(95% CI {g['ci_low']:+.3f} to {g['ci_high']:+.3f});")
        for o in r["outcomes"]:
            head += f" {o['scorer']} win rate {o['win_rate']:.3f} ({o['ci_low']:.3f}–{o['ci_high']:.3f})"
        lines.append(head)
    return lines
