"""Turn the experiment's runs into docs/results.json and the tables of docs/results.md.

    .venv/bin/python scripts/summarise_ifeval_experiment.py [--exp runs/exp] [--out docs/results.json]

Reads the evaluations written by scripts/run_ifeval_experiment.sh (eval-main/, eval-ablation/:
every held-out answer is in their eval.json) and each run's metrics.jsonl, recomputes every
figure from the answers with the shipped verifier, and prints the markdown tables.
Pooled-seed gains: per prompt, a method's score is its mean over seeds; the 95% interval
resamples prompts (paired with the SFT answers to the same prompts).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cluster import instruction_eval
from cluster.prompts import SHIPPED, read_prompt_rows

def run_name(checkpoint: str) -> tuple[str, int]:
    path = Path(checkpoint)
    ckpt = path.parent if path.name == "hf" else path
    return ckpt.parent.name, int(ckpt.name.split("-")[1])


def prompt_pass(verdicts) -> np.ndarray:
    return np.array([float(all(v.strict)) for v in verdicts])


def pooled_gain(policies: list[np.ndarray], baseline: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Mean over seeds per prompt, minus the baseline; paired bootstrap over prompts."""
    return instruction_eval.mean_with_interval(np.mean(policies, axis=0) - baseline, seed)


def training_summary(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    n = len(rows)
    fifth = max(1, n // 5)

    def mean(key, part):
        xs = [r[key] for r in part if key in r]
        return float(np.mean(xs)) if xs else None

    return {
        "steps": n,
        "wall_s": rows[-1]["time"],
        "pairs_trained": rows[-1]["run/pairs_trained"],
        "samples_pass_first_fifth": mean("samples/verifier_pass", rows[:fifth]),
        "samples_pass_last_fifth": mean("samples/verifier_pass", rows[-fifth:]),
        "samples_truncated_first_fifth": mean("samples/truncated", rows[:fifth]),
        "samples_truncated_last_fifth": mean("samples/truncated", rows[-fifth:]),
        "tie_share_mean": mean("judge/tie_share", rows),
        "loss_first_fifth": mean("loss", rows[:fifth]),
        "loss_last_fifth": mean("loss", rows[-fifth:]),
        "median_step_s": float(np.median([r["step_s"] for r in rows])),
        "median_push_s": float(np.median([r["push_s"] for r in rows if "push_s" in r])),
    }


def ci(m: dict, signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(m['value'])} ({f.format(m['ci_low'])} to {f.format(m['ci_high'])})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exp", default="runs/exp")
    parser.add_argument("--out", default="docs/results.json")
    args = parser.parse_args()
    exp = Path(args.exp)
    rows, _ = read_prompt_rows(SHIPPED["instructions-eval"])
    instructions_by_id = {prompt_id: ins for _, prompt_id, _, ins in rows}

    results, sft = {}, None
    for eval_dir in sorted(d for d in exp.glob("eval-*") if d.is_dir()):
        for r in json.loads((eval_dir / "eval.json").read_text()):
            instructions = [instructions_by_id[i] for i in r["prompt_ids"]]
            verdicts = instruction_eval.verdicts(instructions, r["answers"])
            base = instruction_eval.verdicts(instructions, r["baseline_answers"])
            if sft is None:
                sft = {"verdicts": base, "instructions": instructions, "report": instruction_eval.report(instructions, r["baseline_answers"]),
                       "truncated": r["truncated_baseline"], "mean_tokens": r["mean_tokens_baseline"]}
            assert [all(v.strict) for v in base] == [all(v.strict) for v in sft["verdicts"]], "SFT answers differ between evaluations"
            name, step = run_name(r["checkpoint"])
            results[(name, step)] = {"verdicts": verdicts, "report": instruction_eval.report(instructions, r["answers"], base),
                                     "truncated": r["truncated_policy"], "mean_tokens": r["mean_tokens_policy"]}
    if sft is None:
        raise SystemExit(f"no evaluations under {exp}")
    base_pass = prompt_pass(sft["verdicts"])

    def final(method: str, seeds=(0, 1), step=15):
        return [results[(f"{method}-s{s}", step)] for s in seeds if (f"{method}-s{s}", step) in results]

    out: dict = {
        "task": "held-out IFEval prompt-level accuracy (strict), 200 instruction prompts on questions never trained on",
        "model": "SmolLM2-135M-Instruct (Q4_1 dequantised) + LoRA r=8",
        "sft": {"accuracy": sft["report"]["accuracy"], "per_kind": sft["report"]["per_kind"],
                "truncated": sft["truncated"], "mean_tokens": sft["mean_tokens"]},
        "runs": {},
    }
    for (name, step), r in sorted(results.items()):
        entry = {"accuracy": r["report"]["accuracy"], "gain": r["report"]["gain"], "per_kind": r["report"]["per_kind"],
                 "truncated": r["truncated"], "mean_tokens": r["mean_tokens"]}
        if (exp / name / "metrics.jsonl").exists():
            entry["training"] = training_summary(exp / name)
        out["runs"][f"{name}@{step}"] = entry

    osp, dpo = final("osp"), final("dpo")
    seeds = [s for s in (0, 1) if (f"osp-s{s}", 15) in results and (f"dpo-s{s}", 15) in results]
    out["seeds"] = seeds
    out["headline_step"] = 15  # both seeds; seed 0 continues to step 30 (runs["osp-s0@30"], ...)
    out["sft_accuracy"] = sft["report"]["accuracy"]["prompt_strict"]["value"]
    if osp and dpo:
        osp_gain = pooled_gain([prompt_pass(r["verdicts"]) for r in osp], base_pass)
        dpo_gain = pooled_gain([prompt_pass(r["verdicts"]) for r in dpo], base_pass)
        osp_vs_dpo = pooled_gain([prompt_pass(r["verdicts"]) for r in osp],
                                 np.mean([prompt_pass(r["verdicts"]) for r in dpo], axis=0))
        out.update({
            "osp_accuracy": float(np.mean([r["report"]["accuracy"]["prompt_strict"]["value"] for r in osp])),
            "dpo_accuracy": float(np.mean([r["report"]["accuracy"]["prompt_strict"]["value"] for r in dpo])),
            "osp_gain": osp_gain["value"], "osp_gain_ci_low": osp_gain["ci_low"], "osp_gain_ci_high": osp_gain["ci_high"],
            "dpo_gain": dpo_gain["value"], "dpo_gain_ci_low": dpo_gain["ci_low"], "dpo_gain_ci_high": dpo_gain["ci_high"],
            "osp_minus_dpo": osp_vs_dpo["value"], "osp_minus_dpo_ci_low": osp_vs_dpo["ci_low"],
            "osp_minus_dpo_ci_high": osp_vs_dpo["ci_high"],
        })
        for method in ("osp", "dpo"):
            r30 = results.get((f"{method}-s0", 30))
            if r30:
                out[f"{method}_accuracy_step30_seed0"] = r30["report"]["accuracy"]["prompt_strict"]["value"]
                g = r30["report"]["gain"]["prompt_strict"]
                out[f"{method}_gain_step30_seed0"] = [g["value"], g["ci_low"], g["ci_high"]]
    ablation = {}
    for method in ("osp", "dpo"):
        for eps, name in ((0.0, f"{method}-s0"), (0.2, f"{method}-flip20"), (0.35, f"{method}-flip35")):
            if (name, 15) in results:
                r = results[(name, 15)]
                ablation[f"{method}@eps{eps}"] = {"run": f"{name}@15", "accuracy": r["report"]["accuracy"]["prompt_strict"],
                                                  "gain": r["report"]["gain"]["prompt_strict"]}
    if ablation:
        out["ablation_step15"] = ablation
    methods = {}
    for name in ("osp-s0", "dpo-s0", "dno-s0", "spo-s0"):
        if (name, 15) in results:
            r = results[(name, 15)]
            methods[name] = {"accuracy": r["report"]["accuracy"]["prompt_strict"], "gain": r["report"]["gain"]["prompt_strict"]}
    if len(methods) > 2:
        out["methods_seed0_step15"] = methods
    pilot = Path("runs/pilot_greedy/eval.json")
    if pilot.exists():
        out["kind_scan_sft_greedy_96_tokens"] = json.loads(pilot.read_text())[0]["ifeval_baseline"]["per_kind"]
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}\n")

    # Markdown tables for docs/results.md.
    print("| answers | prompt strict | prompt loose | instruction strict | instruction loose | gain, prompt strict (paired) | truncated | mean tokens |")
    print("|---|---|---|---|---|---|---|---|")
    a = sft["report"]["accuracy"]
    print(f"| SFT | {ci(a['prompt_strict'])} | {ci(a['prompt_loose'])} | {ci(a['instruction_strict'])} | "
          f"{ci(a['instruction_loose'])} | — | {sft['truncated']:.2f} | {sft['mean_tokens']:.1f} |")
    for (name, step), r in sorted(results.items(), key=lambda x: (x[0][1], x[0][0])):
        a, g = r["report"]["accuracy"], r["report"]["gain"]
        print(f"| {name} step {step} | {ci(a['prompt_strict'])} | {ci(a['prompt_loose'])} | {ci(a['instruction_strict'])} | "
              f"{ci(a['instruction_loose'])} | {ci(g['prompt_strict'], True)} | {r['truncated']:.2f} | {r['mean_tokens']:.1f} |")
    if osp and dpo:
        print(f"\npooled over seeds {seeds}: OSP gain {ci(osp_gain, True)}, DPO gain {ci(dpo_gain, True)}, "
              f"OSP − DPO {ci(osp_vs_dpo, True)}")
    shown = [k for k in sorted(results, key=lambda k: (k[1], k[0])) if "flip" not in k[0]]
    print("\n| kind | n | SFT | " + " | ".join(f"{n}@{s}" for n, s in shown) + " |")
    print("|---|---|---|" + "---|" * len(shown))
    for kind, b in sft["report"]["per_kind"].items():
        cells = [f"{results[k]['report']['per_kind'][kind]['strict']:.2f}" for k in shown]
        print(f"| {kind} | {b['n']} | {b['strict']:.2f} | " + " | ".join(cells) + " |")
    print("\n| run | wall | pairs | fresh-sample pass, first → last fifth | truncated, first → last | tie share | loss first → last fifth | median step / push |")
    print("|---|---|---|---|---|---|---|---|")
    for key, entry in out["runs"].items():
        t = entry.get("training")
        if not t or not key.endswith(f"@{t['steps']}"):
            continue
        print(f"| {key} | {t['wall_s'] / 60:.1f} min | {t['pairs_trained']:.0f} | {t['samples_pass_first_fifth']:.2f} → "
              f"{t['samples_pass_last_fifth']:.2f} | {t['samples_truncated_first_fifth']:.2f} → {t['samples_truncated_last_fifth']:.2f} | "
              f"{t['tie_share_mean']:.2f} | {t['loss_first_fifth']:.3f} → {t['loss_last_fifth']:.3f} | "
              f"{t['median_step_s']:.1f} s / {t['median_push_s']:.1f} s |")
    if len(methods) > 2:
        print("\n| method (seed 0, step 15) | prompt strict | gain over SFT (paired) |\n|---|---|---|")
        for name, m in methods.items():
            print(f"| {name} | {ci(m['accuracy'])} | {ci(m['gain'], True)} |")
    if ablation:
        print("\n| judge | OSP (SPCE) step 15 | DPO step 15 |\n|---|---|---|")
        for eps in (0.0, 0.2, 0.35):
            o, d = ablation.get(f"osp@eps{eps}"), ablation.get(f"dpo@eps{eps}")
            if o or d:
                print(f"| ε = {eps} | {ci(o['gain'], True) if o else '—'} | {ci(d['gain'], True) if d else '—'} |")


if __name__ == "__main__":
    main()
