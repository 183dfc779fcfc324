"""The pairing ablation's outcomes → the `pairing` block of docs/results.json and its tables.

    .venv/bin/python experiments/pairing/summarise.py [--outcomes experiments/pairing/outcomes]

Each arm pools its runs (seeds); gains and the differences between arms carry 95% intervals
that resample runs, then prompts (experiments/lib/experiment_summary.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # experiment_summary: the shared helpers

from experiment_summary import METHOD_HEADER, ci, difference, load_outcomes, method_row, method_stats

HERE = Path(__file__).resolve().parent
ARMS = {"ranked": "ranked pairs (K/2: best–worst, 2nd–3rd)", "bestworst": "one best–worst pair a prompt",
        "random": "random pairs (K/2, oriented by the judge)"}
STEP = 15


def summarise(outcomes: list[Path]) -> dict:
    sft, results, _ = load_outcomes(outcomes)
    stats = {arm: s for arm in ARMS if (s := method_stats(results, sft, arm, STEP))}
    pairs = [("ranked", "bestworst"), ("ranked", "random"), ("bestworst", "random")]
    return {"pairing": {
        "task": f"held-out IFEval prompt-level accuracy (strict), {len(sft['instructions'])} prompts, 48 tokens, greedy",
        "setting": "OSP, verifier judge (τ 0.5), K=4, 15 steps of 4 pairs, fresh prompts, SmolLM2-135M + LoRA r=8",
        "interval": "95%, two-stage bootstrap: runs (seeds) resampled within each arm, then prompts (shared)",
        "sft_accuracy": sft["report"]["accuracy"]["prompt_strict"]["value"],
        "arms": stats,
        "differences": {f"{a}_minus_{b}": difference(results, a, b, STEP) for a, b in pairs if a in stats and b in stats},
    }}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outcomes", nargs="+", type=Path, default=[HERE / "outcomes"])
    parser.add_argument("--out", default="docs/results.json")
    args = parser.parse_args()
    keys = summarise(args.outcomes)
    out_path = Path(args.out)
    out = json.loads(out_path.read_text()) if out_path.exists() else {}
    out.update(keys)
    out_path.write_text(json.dumps(out, indent=1) + "\n")
    block = keys["pairing"]
    print(f"wrote {out_path}\nSFT: {block['sft_accuracy']:.3f}\n")
    print(METHOD_HEADER)
    for arm, s in block["arms"].items():
        print(method_row(ARMS[arm], s))
    for name, d in block["differences"].items():
        print(f"{name}: {ci(d)}")


if __name__ == "__main__":
    main()
