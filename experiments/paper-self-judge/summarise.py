"""The paper's setting (its README): the training and win-rate tables, from its outcomes.

    .venv/bin/python experiments/paper-self-judge/summarise.py [--outcomes experiments/paper-self-judge/outcomes]

Reads each outcomes file on its own (one evaluation each: a run's checkpoints against SFT, or OSP
against online DPO at one answer cap; experiments/lib/experiment_outcomes.py) and prints, per
checkpoint and scorer, wins, ties and losses against the baseline with the win rate's 95%
bootstrap interval over prompts (a win: the scorer's p(policy ≻ baseline) > 0.5, a tie exactly
0.5, as cluster.evaluate counts them; identical answers tie), the answers identical to the
baseline's and both sides' mean length; and per run the training table. Writes nothing to
docs/results.json (this experiment has no block there).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from cluster.evaluation.intervals import mean_with_interval

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # experiment_outcomes: the kept outcomes

from experiment_outcomes import files_of, load

HERE = Path(__file__).resolve().parent


def win_rate(strengths: list[float]) -> dict:
    """Wins, ties, losses and the win rate (wins + ties/2)/n with its interval over prompts."""
    values = np.array([1.0 if p > 0.5 else 0.0 if p < 0.5 else 0.5 for p in strengths])
    rate = mean_with_interval(values)
    return {"wins": int((values == 1).sum()), "ties": int((values == 0.5).sum()), "losses": int((values == 0).sum()),
            "win_rate": rate["value"], "ci_low": rate["ci_low"], "ci_high": rate["ci_high"]}


def head_to_head(path: Path) -> list[dict]:
    """One row per checkpoint and scorer of one evaluation's outcomes."""
    outcomes = load([path])
    rows = []
    for name, answers in outcomes.sets.items():
        if not answers.versus:
            continue
        baseline = outcomes.sets[answers.versus["baseline"]]
        identical = answers.versus["identical"].count("1")
        for scorer, strengths in answers.versus["strengths"].items():
            rows.append({"policy": name, "baseline": baseline.name, "scorer": scorer, **win_rate(strengths),
                         "identical": identical, "prompts": len(outcomes.prompt_ids),
                         "mean_tokens": float(answers.tokens.mean()), "baseline_mean_tokens": float(baseline.tokens.mean())})
    return rows


def training_row(run: str, series: dict) -> dict:
    """Steps, pairs, wall time, the judge's mean p, loss first → last step, median step and push."""
    def present(key):
        return [x for x in series.get(key, []) if x is not None]

    return {"run": run, "steps": len(series["step"]), "pairs": series["run/pairs_trained"][-1], "wall_s": series["time"][-1],
            "mean_p": float(np.mean(present("strength/mean"))) if present("strength/mean") else None,
            "loss_first": present("loss")[0], "loss_last": present("loss")[-1],
            "median_step_s": float(np.median(present("step_s"))),
            "median_push_s": float(np.median(present("push_s") or [0.0]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outcomes", nargs="+", type=Path, default=[HERE / "outcomes"],
                        help="outcomes files, or folders of them (default: this experiment's outcomes/)")
    args = parser.parse_args()
    files = files_of(args.outcomes)
    if not files:
        raise SystemExit(f"no outcomes in {', '.join(map(str, args.outcomes))} (the measured runs' outcomes were lost: "
                         "see the README)")
    training = {}
    print("| policy | vs | scorer | win | tie | loss | win rate (95% CI) | answers identical | mean tokens |")
    print("|---|---|---|---|---|---|---|---|---|")
    for f in files:
        for r in head_to_head(f):
            print(f"| {r['policy']} | {r['baseline']} | {r['scorer']} | {r['wins']} | {r['ties']} | {r['losses']} | "
                  f"{r['win_rate']:.3f} ({r['ci_low']:.3f}–{r['ci_high']:.3f}) | {r['identical']}/{r['prompts']} | "
                  f"{r['mean_tokens']:.1f} vs {r['baseline_mean_tokens']:.1f} |")
        training.update(load([f]).training)
    print("\n| run | steps | pairs | wall time | mean p (judge) | loss first → last | median learner step | median push |")
    print("|---|---|---|---|---|---|---|---|")
    for run, series in sorted(training.items()):
        t = training_row(run, series)
        p = "—" if t["mean_p"] is None else f"{t['mean_p']:.3f}"
        print(f"| {run} | {t['steps']} | {t['pairs']:.0f} | {t['wall_s'] / 60:.1f} min | {p} | "
              f"{t['loss_first']:.4f} → {t['loss_last']:.4f} | {t['median_step_s']:.1f} s | {t['median_push_s']:.1f} s |")


if __name__ == "__main__":
    main()
