"""The broad experiment (its README) into the `broad` block of docs/results.json.

    .venv/bin/python experiments/broad-ifeval/summarise.py --outcomes experiments/broad-ifeval/outcomes/broad-keep
    .venv/bin/python experiments/broad-ifeval/summarise.py --outcomes experiments/broad-ifeval/outcomes/broad-lose \
        --step 20 --block broad_first_attempt

Reads an arm's outcomes (outcomes/<arm>/*.json, written by run.sh when its evaluation ends:
every held-out answer's IFEval verdicts, length, truncation and repetition, of SFT and of each
run's checkpoint, and the runs' training metrics; experiments/lib/experiment_outcomes.py),
recomputes every figure from them, pools each
method's runs (two-stage bootstrap: runs, then prompts) and marks every instruction kind:
`improved` (OSP's gain on the prompts holding that kind has a 95% interval above 0), `regressed`
(below 0) or `flat`. Prints the tables of its README.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from cluster.evaluation.intervals import pooled_over_runs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # experiment_summary: the shared helpers

from experiment_summary import METHOD_HEADER, ci, difference, load_outcomes, method_row, method_stats, runs_of, training_summary


def kind_gains(results: dict, sft: dict, method: str, step: int) -> dict[str, dict]:
    """Per kind: SFT's and the method's pass rate on the held-out instructions of that kind, and
    the gain with the two-stage interval over the prompts that hold it."""
    runs = runs_of(results, method, step)
    out = {}
    kinds = sorted({k for ins in sft["instructions"] for k in ins.ids})
    for kind in kinds:
        where = [(i, ins.ids.index(kind)) for i, ins in enumerate(sft["instructions"]) if kind in ins.ids]
        base = np.array([float(sft["verdicts"][i].strict[j]) for i, j in where])
        num = np.stack([[float(r["verdicts"][i].strict[j]) for i, j in where] for _, r in runs])
        g = pooled_over_runs([(1.0, num - base)], np.ones(len(where)))
        mark = "improved" if g["ci_low"] > 0 else "regressed" if g["ci_high"] < 0 else "flat"
        out[kind] = {"n": len(where), "sft": float(base.mean()), "method": float(num.mean()), "gain": g["value"],
                     "gain_ci_low": g["ci_low"], "gain_ci_high": g["ci_high"], "mark": mark}
    return out


def summarise(outcomes: list[Path], step: int, old: dict | None = None, training: list[Path] = ()) -> tuple[dict, dict]:
    """(block, sft): one `broad*` block of results.json, recomputed from an arm's outcomes, and the
    SFT answers' summary (experiment_summary.load_outcomes). `old`: the block as results.json holds
    it, whose hand-written keys are kept (see below). `training`: the outcomes of the arm that
    trained the runs, when `outcomes` are another held-out set's answers."""
    sft, results, training = load_outcomes(outcomes, training)
    stats = {m: s for m in ("osp", "dpo") if (s := method_stats(results, sft, m, step))}
    if not stats:
        raise SystemExit(f"no osp-s* or dpo-s* answer sets at step {step} in {', '.join(map(str, outcomes))}")
    kinds = {m: kind_gains(results, sft, m, step) for m in stats}
    osp_vs_dpo = difference(results, "osp", "dpo", step)
    n = len(sft["instructions"])  # the evaluated rows: the set's own count, written once (in its file)
    described = {"broad-eval": f"broad-eval: {n} held-out prompts over all 25 IFEval kinds (questions never trained on)",
                 "broad-tasks-eval": f"broad-tasks-eval: {n} held-out prompts over all 25 IFEval kinds on 50 writing "
                                     "tasks, instructions before the task in a third (built unlike the training rows)"}
    block = {"prompts": described.get(sft["prompts"], sft["prompts"]),
             "step": step, "sft_accuracy": sft["report"]["accuracy"]["prompt_strict"]["value"],
             "sft_instruction_accuracy": sft["report"]["accuracy"]["instruction_strict"]["value"],
             "sft_truncated": sft["truncated"], "sft_repeated_share": sft["repeated_share"], "kinds": kinds,
             "methods": stats,
             "runs": {f"{run}@{s}": {"training": training_summary(training.get(run)), "truncated": r["truncated"],
                                     "repeated_share": r["repeated_share"],
                                     "accuracy": r["report"]["accuracy"]["prompt_strict"]["value"]}
                      for (run, s), r in sorted(results.items())}}
    if "osp" in stats:
        o = stats["osp"]
        block.update({"osp_accuracy": o["accuracy"]["value"], "osp_gain": o["gain"]["value"],
                      "osp_gain_ci_low": o["gain"]["ci_low"], "osp_gain_ci_high": o["gain"]["ci_high"],
                      "seeds": o["seeds"], "between_run_sd": o["between_run_sd"],
                      "kinds_improved": sum(k["mark"] == "improved" for k in kinds["osp"].values()),
                      "kinds_regressed": sum(k["mark"] == "regressed" for k in kinds["osp"].values()),
                      "kinds_total": len(kinds["osp"])})
    if "dpo" in stats:
        block["dpo_accuracy"] = stats["dpo"]["accuracy"]["value"]
        block["dpo_gain"] = stats["dpo"]["gain"]["value"]
    if osp_vs_dpo:
        block["osp_minus_dpo"] = {k: osp_vs_dpo[k] for k in ("value", "ci_low", "ci_high")}
    # Written by hand, not computed: the arm's description and the notes on what was not run. A
    # re-summary keeps them, except a note on a method that now has runs.
    block.update({k: v for k, v in (old or {}).items()
                  if k == "arm" or (k.endswith("_note") and k.split("_")[0] not in stats)})
    return block, sft


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outcomes", nargs="+", type=Path, required=True,
                        help="the arm's outcomes: files, or folders of them (e.g. experiments/broad-ifeval/outcomes/broad-keep)")
    parser.add_argument("--training", nargs="*", type=Path, default=[],
                        help="the outcomes of the arm that trained the runs, when --outcomes only answer another "
                             "held-out set (e.g. experiments/broad-ifeval/outcomes/broad-keep): their training columns")
    parser.add_argument("--step", type=int, default=60)
    parser.add_argument("--out", default="docs/results.json")
    parser.add_argument("--block", default="broad",
                        help="the results.json block written; another arm (e.g. broad_first_attempt) leaves `broad` as it is")
    parser.add_argument("--arm", help="what this arm is (settings, runs folder, date); kept from the block when omitted")
    args = parser.parse_args()
    out_path = Path(args.out)
    out = json.loads(out_path.read_text()) if out_path.exists() else {}
    block, sft = summarise(args.outcomes, args.step, out.get(args.block), args.training)
    if args.arm:
        block["arm"] = args.arm
    out[args.block] = block
    out_path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {out_path}\n")
    stats, kinds = block["methods"], block["kinds"]
    a = sft["report"]["accuracy"]
    print(f"SFT: prompt-level {ci(a['prompt_strict'])}, instruction-level {ci(a['instruction_strict'])}, "
          f"truncated {sft['truncated']:.2f}, repeated share {sft['repeated_share']:.2f}\n")
    print(METHOD_HEADER)
    for m, s in stats.items():
        print(method_row({"osp": "OSP (SPCE, soft p)", "dpo": "online DPO (the verdict)"}[m], s))
    if "osp_minus_dpo" in block:
        print(f"\nOSP − DPO: {ci(block['osp_minus_dpo'], True)}")
    print("\ntruncated / repeated share of each method's answers: " + ", ".join(
        f"{m} {st['truncated']:.2f} / {st['repeated_share']:.2f}" for m, st in stats.items()))
    methods = list(kinds)
    print("\n| kind | n | SFT | " + " | ".join(f"{m} (gain, 95% CI)" for m in methods) + f" | {methods[0]} |")
    print("|---|---|---|" + "---|" * len(methods) + "---|")
    for kind, k in kinds[methods[0]].items():
        cells = [f"{kinds[m][kind]['method']:.2f} ({kinds[m][kind]['gain']:+.2f}, {kinds[m][kind]['gain_ci_low']:+.2f} "
                 f"to {kinds[m][kind]['gain_ci_high']:+.2f})" for m in methods]
        print(f"| {kind} | {k['n']} | {k['sft']:.2f} | " + " | ".join(cells) + f" | {kinds[methods[0]][kind]['mark']} |")


if __name__ == "__main__":
    main()
