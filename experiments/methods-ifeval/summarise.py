"""Turn the method comparison's outcomes into docs/results.json and the tables of its README.

    .venv/bin/python experiments/methods-ifeval/summarise.py [--outcomes experiments/methods-ifeval/outcomes]

Reads the outcomes that experiments/methods-ifeval/run.sh writes when its evaluation ends
(outcomes/*.json: every held-out answer's IFEval verdicts, length and truncation, and each run's
training metrics; experiments/lib/experiment_outcomes.py), recomputes every figure from them and
prints the markdown tables. A method's figures pool its runs (seeds): the 95% interval resamples
runs, then prompts (a two-stage bootstrap), and the between-run standard deviation of the gain is
reported beside it. Keys of results.json other than the ones written here (other experiments'
blocks: broad, judges, soft_vs_hard) are kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # experiment_summary: the shared helpers

from experiment_summary import METHOD_HEADER, ci, difference, load_outcomes, method_row, method_stats, training_summary

HERE = Path(__file__).resolve().parent
METHODS = {"osp": "OSP (SPCE, soft p)", "dpo": "online DPO (the verdict)", "dno": "DNO-Prct", "spo": "SPO"}
STEP = 15
# Keys earlier versions of this summary wrote; a re-summary drops them.
STALE = ("osp_accuracy_step30_seed0", "osp_gain_step30_seed0", "dpo_accuracy_step30_seed0", "dpo_gain_step30_seed0",
         "ablation_step15", "methods_seed0_step15", "osp_gain", "dpo_gain", "osp_minus_dpo",
         "kind_scan_sft_greedy_96_tokens")


def summarise(outcomes: list[Path]) -> dict:
    """The results.json keys this experiment owns, recomputed from its outcomes."""
    sft, results, training = load_outcomes(outcomes)
    stats = {m: s for m in METHODS if (s := method_stats(results, sft, m, STEP))}
    n = len(sft["instructions"])
    keys = {
        "task": f"held-out IFEval prompt-level accuracy (strict), {n} instruction prompts on questions never trained on",
        "model": "SmolLM2-135M-Instruct (Q4_1 dequantised) + LoRA r=8",
        "interval": "95%, two-stage bootstrap: runs (seeds) resampled within each method, then prompts (shared)",
        "headline_step": STEP,
        "sft": {"accuracy": sft["report"]["accuracy"], "per_kind": sft["report"]["per_kind"],
                "truncated": sft["truncated"], "mean_tokens": sft["mean_tokens"]},
        "sft_accuracy": sft["report"]["accuracy"]["prompt_strict"]["value"],
        "methods": stats,
        "runs": {f"{name}@{step}": {"accuracy": r["report"]["accuracy"], "gain": r["report"]["gain"],
                                    "truncated": r["truncated"], "mean_tokens": r["mean_tokens"],
                                    "training": training_summary(training.get(name))}
                 for (name, step), r in sorted(results.items())},
    }
    osp_vs_dpo = difference(results, "osp", "dpo", STEP)
    if "osp" in stats and "dpo" in stats:
        o, d = stats["osp"], stats["dpo"]
        keys.update({
            "seeds": o["seeds"],
            "osp_accuracy": o["accuracy"]["value"], "dpo_accuracy": d["accuracy"]["value"],
            "osp_gain": o["gain"]["value"], "osp_gain_ci_low": o["gain"]["ci_low"], "osp_gain_ci_high": o["gain"]["ci_high"],
            "dpo_gain": d["gain"]["value"], "dpo_gain_ci_low": d["gain"]["ci_low"], "dpo_gain_ci_high": d["gain"]["ci_high"],
            "between_run_sd": {"osp": o["between_run_sd"], "dpo": d["between_run_sd"]},
            "osp_minus_dpo": osp_vs_dpo["value"], "osp_minus_dpo_ci_low": osp_vs_dpo["ci_low"],
            "osp_minus_dpo_ci_high": osp_vs_dpo["ci_high"],
        })
    return keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outcomes", nargs="+", type=Path, default=[HERE / "outcomes"],
                        help="outcomes files, or folders of them (default: this experiment's outcomes/)")
    parser.add_argument("--out", default="docs/results.json")
    args = parser.parse_args()
    out_path = Path(args.out)
    keys = summarise(args.outcomes)
    out = json.loads(out_path.read_text()) if out_path.exists() else {}
    for stale in STALE:
        out.pop(stale, None)
    out.update(keys)
    out_path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {out_path}\n")

    sft, stats = keys["sft"], keys["methods"]
    a = sft["accuracy"]["prompt_strict"]
    print(f"SFT: {ci(a)}, truncated {sft['truncated']:.2f}, mean tokens {sft['mean_tokens']:.1f}\n")
    print(METHOD_HEADER)
    for m, s in stats.items():
        print(method_row(METHODS[m], s))
    if "osp_minus_dpo" in keys:
        print(f"\nOSP − DPO: {keys['osp_minus_dpo']:+.3f} ({keys['osp_minus_dpo_ci_low']:+.3f} to "
              f"{keys['osp_minus_dpo_ci_high']:+.3f})")
    shown = list(stats)
    print("\n| kind | n | SFT | " + " | ".join(shown) + " |")
    print("|---|---|---|" + "---|" * len(shown))
    for kind, b in sft["per_kind"].items():
        print(f"| {kind} | {b['n']} | {b['strict']:.2f} | "
              + " | ".join(f"{stats[m]['per_kind'][kind]['strict']:.2f}" for m in shown) + " |")
    print("\n| run | wall | pairs | fresh-sample pass, first → last fifth | truncated, first → last | tie share | "
          "loss first → last fifth | median step / push |")
    print("|---|---|---|---|---|---|---|---|")
    for key, entry in out["runs"].items():
        t = entry["training"]
        if not t:
            continue
        f = {k: "—" if v is None else f"{v:.3f}" if k.startswith("loss") else f"{v:.2f}" for k, v in t.items()}
        print(f"| {key} | {t['wall_s'] / 60:.1f} min | {t['pairs_trained']:.0f} | {f['samples_pass_first_fifth']} → "
              f"{f['samples_pass_last_fifth']} | {f['samples_truncated_first_fifth']} → "
              f"{f['samples_truncated_last_fifth']} | {f['tie_share_mean']} | {f['loss_first_fifth']} → "
              f"{f['loss_last_fifth']} | {t['median_step_s']:.1f} s / {t['median_push_s']:.1f} s |")


if __name__ == "__main__":
    main()
