"""The soft-vs-hard comparison (its README) into docs/results.json and a plot.

    .venv/bin/python experiments/soft-vs-hard/summarise.py --sigma 3 --eps 0.27 --temperature 7.24

Reads the judge report cards (outcomes/judges/*.json: cluster.judge_report's report.json, copied
there by run.sh) and the outcomes of the method runs (experiments/lib/experiment_outcomes.py):
at σ = 0 experiments/methods-ifeval's `osp` and `dpo` runs (cDPO at the judge's error rate 0 is
DPO), at σ this experiment's `osp-logit`, `dpo-logit` and `cdpo-logit` runs and `osp-logit-T`
(SPCE on the judge's p calibrated by temperature scaling, judge.temperature = --temperature). A σ
whose runs have no outcomes keeps the figures results.json already holds for it. Writes the
`judges` and `soft_vs_hard` blocks of docs/results.json (all seeds pooled; other keys are kept),
`soft_vs_hard_by_seed_set` (the planned seeds 0-2 and any further seeds, a replication, each
pooled on its own) and experiments/soft-vs-hard/soft_vs_hard.png (gain against noise, per method, with the
two-stage intervals).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # experiment_summary: the shared helpers

from experiment_summary import METHOD_HEADER, RUN_NAME, ci, difference, load_outcomes, method_row, method_stats

HERE = Path(__file__).resolve().parent

ARMS = {"spce": ("osp", "osp-logit"), "dpo": ("dpo", "dpo-logit"), "cdpo": ("dpo", "cdpo-logit"),
        "spce_calibrated": ("osp", "osp-logit-T")}  # at σ = 0 the verifier needs no calibration
LABELS = {"spce": "SPCE (soft p)", "dpo": "DPO (verdict)", "cdpo": "cDPO (verdict, ε = error rate)",
          "spce_calibrated": "SPCE (p calibrated, T)"}


NOISY_ARMS = ("osp-logit", "dpo-logit", "cdpo-logit", "osp-logit-T")
DIFFERENCES = (("osp-logit", "dpo-logit"), ("osp-logit", "cdpo-logit"), ("osp-logit-T", "dpo-logit"),
               ("osp-logit-T", "osp-logit"))


def gain_figures(stats: dict) -> dict:
    """A pooled method's figures as results.json keeps them."""
    return {"seeds": stats["seeds"], "accuracy": stats["accuracy"]["value"], "gain": stats["gain"]["value"],
            "gain_ci_low": stats["gain"]["ci_low"], "gain_ci_high": stats["gain"]["ci_high"],
            "between_run_sd": stats["between_run_sd"], "per_run_gain": stats["gain"]["runs"][0]}


def differences_of(results: dict) -> dict:
    """The arms' pairwise differences at σ (runs resampled per arm, prompts shared)."""
    out = {}
    for a, b in DIFFERENCES:
        d = difference(results, a, b, 15)
        if d:
            out[f"{a} − {b}"] = {"value": d["value"], "ci_low": d["ci_low"], "ci_high": d["ci_high"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outcomes", nargs="+", type=Path,
                        default=[HERE / "outcomes", HERE.parent / "methods-ifeval" / "outcomes"],
                        help="outcomes files, or folders of them (default: this experiment's and methods-ifeval's, "
                             "whose osp and dpo runs are the σ = 0 arms)")
    parser.add_argument("--judges", type=Path, default=HERE / "outcomes" / "judges",
                        help="a folder of judge report cards (cluster.judge_report's report.json, one file each)")
    parser.add_argument("--sigma", type=float, required=True)
    parser.add_argument("--eps", type=float, required=True)
    parser.add_argument("--temperature", type=float, default=None, help="judge.temperature of the osp-logit-T runs")
    parser.add_argument("--out", default="docs/results.json")
    parser.add_argument("--plot", type=Path, default=HERE / "soft_vs_hard.png")
    args = parser.parse_args()
    out_path = Path(args.out)
    out = json.loads(out_path.read_text()) if out_path.exists() else {}

    judges = dict(out.get("judges", {}))  # cards measured before stay unless re-measured here
    for report in sorted(args.judges.glob("*.json")):
        for name, card in json.loads(report.read_text())["judges"].items():
            judges[name] = {"agreement": card["agreement"], "agreement_ci": card["agreement_ci"], "ece": card["ece"],
                            "near_half_share": card["near_half_share"], "position_gap": card["position_gap"],
                            "comparisons_per_s": card["comparisons_per_s"], "pairs": card["pairs"],
                            "gold_decided": card["gold_decided"],
                            **{k: card[k] for k in ("temperature", "ece_at_temperature") if k in card}}
    out["judges"] = judges

    sft, results, _ = load_outcomes(args.outcomes)
    table: dict[str, dict[str, dict]] = {}
    for sigma, column in ((0.0, 0), (args.sigma, 1)):
        for method, runs in ARMS.items():
            stats = method_stats(results, sft, runs[column], 15)
            if stats is None:
                continue
            table.setdefault(f"{sigma:g}", {})[method] = {"runs": runs[column], **gain_figures(stats)}
    noisy = f"{args.sigma:g}"
    differences = differences_of(results)
    for sigma, row in out.get("soft_vs_hard", {}).items():  # measured before, runs not here
        for method, figures in row.items():
            table.setdefault(sigma, {}).setdefault(method, figures)
    out["soft_vs_hard"] = table
    # The same arms by seed set: the planned seeds 0-2 and any further seeds (a replication),
    # each pooled on its own (all seeds pooled are the table above).
    by_seeds = {}
    for label, planned in (("0-2", True), ("3+", False)):
        subset = {k: v for k, v in results.items()
                  if (m := RUN_NAME.match(k[0])) and (int(m["seed"]) <= 2) == planned}
        block = {runs: gain_figures(stats) for runs in NOISY_ARMS if (stats := method_stats(subset, sft, runs, 15))}
        if block:
            by_seeds[label] = {**block, **differences_of(subset)}
    out["soft_vs_hard_by_seed_set"] = by_seeds
    checklist = method_stats(results, sft, "osp-checklist", 15)
    if checklist:
        out["checklist_judge_osp"] = {
            "judge": "checklist (the SFT model, one yes/no question per instruction), τ = 0.5", **gain_figures(checklist)}
    out["soft_vs_hard_setup"] = {
        "noise": f"logit: p = σ((s_a − s_b)/τ + ε), ε ~ N(0, σ²), τ = 0.5, σ = {args.sigma:g}",
        "cdpo_label_smoothing": args.eps, "spce_calibrated_temperature": args.temperature, "steps": 15,
        "differences_at_sigma": differences,
        "interval": "95%, two-stage bootstrap (runs, then prompts)"}
    out_path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {out_path}\n")

    print("| judge | agreement (95% CI) | ECE | p within 0.05 of ½ | position gap | comparisons/s |\n|---|---|---|---|---|---|")
    for name, c in judges.items():
        agree = "—" if c["agreement"] is None else f"{c['agreement']:.3f} ({c['agreement_ci'][0]:.3f}–{c['agreement_ci'][1]:.3f})"
        gap = "—" if c["position_gap"] is None else f"{c['position_gap']:.3f}"
        print(f"| {name} | {agree} | {c['ece']:.3f} | {c['near_half_share']:.2f} | {gap} | {c['comparisons_per_s']:.1f} |")
    print("\n" + METHOD_HEADER)
    for runs in (*NOISY_ARMS, "osp-checklist"):
        stats = method_stats(results, sft, runs, 15)
        if stats:
            print(method_row(runs if runs == "osp-checklist" else f"{runs} (σ = {noisy})", stats))
    for name, d in differences.items():
        print(f"\n{name}: {ci(d, True)}")
    for label, block in by_seeds.items():
        print(f"\nseeds {label}:")
        for name, f in block.items():
            if "gain" in f:
                print(f"  {name}: gain {f['gain']:+.3f} ({f['gain_ci_low']:+.3f} to {f['gain_ci_high']:+.3f}), "
                      f"runs {f['per_run_gain']}")
            else:
                print(f"  {name}: {f['value']:+.3f} ({f['ci_low']:+.3f} to {f['ci_high']:+.3f})")
    plot(table, args.plot)


def plot(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, method in enumerate(ARMS):
        points = sorted((float(s), row[method]) for s, row in table.items() if method in row)
        if not points:
            continue
        xs = [s + 0.06 * (i - 1.5) for s, _ in points]  # side by side at each σ
        ys = [r["gain"] for _, r in points]
        err = [[r["gain"] - r["gain_ci_low"] for _, r in points], [r["gain_ci_high"] - r["gain"] for _, r in points]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=LABELS[method])
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("judge noise σ (logit scale)")
    ax.set_ylabel("held-out prompt-level gain over SFT")
    ax.set_title("Gain against judge noise (95% CI over runs and prompts)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
