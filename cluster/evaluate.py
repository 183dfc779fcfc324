"""Head-to-head evaluation: a checkpoint's answers against the SFT model's, on held-out prompts.

    python -m cluster.evaluate --checkpoint runs/osp/ckpt-000050/hf
    python -m cluster.evaluate --run runs/osp            # every checkpoint: win rate over training
    python -m cluster.evaluate --run runs/osp --scorers self heuristic lm:/models/judge
    python -m cluster.evaluate --run runs/verifier --prompts instructions-eval   # IFEval accuracy

One vLLM engine (a Ray actor) answers every prompt with the SFT weights, then with each
checkpoint's (weights swapped in place, as in training). Each scorer compares policy vs SFT
answers per prompt: win (p > 0.5), loss (p < 0.5), tie (p = 0.5 exactly: e.g. identical
answers). Win rate = (wins + ties/2) / n with a 95% bootstrap interval over prompts. Mean
answer lengths are reported too: preference training drifts toward longer answers (the OSP
paper's length-bias warning), and a win bought by length alone should be visible.
When the held-out prompts carry verifiable instructions (IFEval format), every answer set,
the baseline's included, also gets IFEval accuracy (prompt- and instruction-level, strict
and loose, with 95% bootstrap intervals), a per-instruction-kind table, and each
checkpoint's paired gain over the baseline with its interval (cluster/instruction_eval.py).
Results: <out>/eval.json, <out>/eval.md and <out>/eval.png (win rate and loss over training).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from cluster.env import apply_runtime_env

apply_runtime_env()

log = logging.getLogger("osp")


@dataclass
class Outcome:
    scorer: str
    wins: int
    ties: int
    losses: int
    win_rate: float
    ci_low: float
    ci_high: float

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses


def outcome_values(strengths: list[float]) -> list[float]:
    """Per prompt: 1 win, 0.5 tie, 0 loss (for the policy, p = p(policy ≻ SFT))."""
    return [1.0 if p > 0.5 else 0.0 if p < 0.5 else 0.5 for p in strengths]


def bootstrap_interval(values: list[float], samples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, resampling prompts with replacement."""
    if not values:
        raise ValueError("no outcomes to bootstrap")
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(samples))
    lo = means[int((1 - level) / 2 * samples)]
    hi = means[min(samples - 1, int((1 + level) / 2 * samples))]
    return lo, hi


def summarise(scorer: str, strengths: list[float], seed: int = 0) -> Outcome:
    values = outcome_values(strengths)
    lo, hi = bootstrap_interval(values, seed=seed)
    return Outcome(scorer, values.count(1.0), values.count(0.5), values.count(0.0),
                   sum(values) / len(values), lo, hi)


# ---------------------------------------------------------------------------------------


def _answers(engine, prompts, max_tokens: int, temperature: float, seed: int) -> list[dict]:
    import ray

    return ray.get(engine.complete.remote([list(p.tokens) for p in prompts], max_tokens, temperature, seed))


def evaluate(checkpoints: list[Path], sft_path: str, prompts, scorer_specs: list[str], max_tokens: int,
             temperature: float = 0.0, seed: int = 0, baseline: Path | None = None, cpus: int = 1) -> list[dict]:
    """Evaluate each checkpoint's hf/ folder against the baseline (the SFT model unless
    `baseline` names another checkpoint); one result dict each. The SFT model stays the
    self-judge either way."""
    import ray

    from actors.rollout import RolloutWorker
    from cluster import instruction_eval
    from judge.scorers import make_scorer

    # Nothing else runs during an evaluation: the engine may use every core it is given.
    engine = ray.remote(RolloutWorker).options(
        num_cpus=cpus, runtime_env={"env_vars": {"OMP_NUM_THREADS": str(int(cpus))}}).remote(
        sft_path, k=1, temperature=1.0, top_p=1.0, max_tokens=max_tokens, seed=seed, name="eval",
        max_model_len=max(len(p.tokens) for p in prompts) + max_tokens + 8)
    try:
        if baseline is not None:
            ray.get(engine.load_checkpoint.remote(str(baseline)))
        base = _answers(engine, prompts, max_tokens, temperature, seed)
        policies = []
        for ckpt in checkpoints:
            ray.get(engine.load_checkpoint.remote(str(ckpt)))
            policies.append(_answers(engine, prompts, max_tokens, temperature, seed))
    finally:
        ray.kill(engine)
    texts = [p.text for p in prompts]
    base_texts = [a["text"] for a in base]
    results = [
        {
            "checkpoint": str(ckpt),
            "baseline": str(baseline) if baseline else "sft",
            "prompts": len(prompts),
            "mean_tokens_policy": sum(len(a["tokens"]) for a in answers) / len(answers),
            "mean_tokens_baseline": sum(len(a["tokens"]) for a in base) / len(base),
            "identical_answers": sum(a["text"] == b for a, b in zip(answers, base_texts)),
            "outcomes": [],
            "examples": [
                {"prompt": t, "policy": a["text"], "baseline": b} for t, a, b in list(zip(texts, answers, base_texts))[:5]
            ],
            # Every answer, in prompt order: what the figures below were computed from.
            "prompt_ids": [p.prompt_id for p in prompts],
            "answers": [a["text"] for a in answers],
            "baseline_answers": base_texts,
        }
        for ckpt, answers in zip(checkpoints, policies)
    ]
    instructions = [p.instructions for p in prompts]
    if all(i is not None for i in instructions):
        base_verdicts = instruction_eval.verdicts(instructions, base_texts)
        base_report = instruction_eval.report(instructions, base_texts, seed=seed)
        for result, answers in zip(results, policies):
            policy_texts = [a["text"] for a in answers]
            result["ifeval"] = instruction_eval.report(instructions, policy_texts, base_verdicts, seed)
            result["ifeval_baseline"] = base_report
            result["truncated_policy"] = sum(a["finish_reason"] == "length" for a in answers) / len(answers)
            result["truncated_baseline"] = sum(a["finish_reason"] == "length" for a in base) / len(base)
    by_text = {p.text: p.instructions for p in prompts if p.instructions is not None}
    for spec in scorer_specs:
        scorer = make_scorer(spec, sft_path, by_text)
        for result, answers in zip(results, policies):
            policy_texts = [a["text"] for a in answers]
            # Identical answers tie by definition (and cost no judge call).
            strengths = [0.5] * len(texts)
            todo = [i for i, (a, b) in enumerate(zip(policy_texts, base_texts)) if a != b]
            if todo:
                judged = scorer.compare([texts[i] for i in todo], [policy_texts[i] for i in todo],
                                        [base_texts[i] for i in todo])
                for i, p in zip(todo, judged):
                    strengths[i] = float(p)
            result["outcomes"].append(asdict(summarise(scorer.name, strengths, seed)))
    return results


def run_checkpoints(run_dir: Path) -> list[Path]:
    return sorted(p / "hf" for p in run_dir.glob("ckpt-*") if (p / "hf").is_dir())


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def main(argv: list[str] | None = None) -> int:
    from cluster.progress import setup_logging

    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m cluster.evaluate", description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", nargs="+", help="checkpoint hf/ folder(s) (or ckpt-N folders)")
    what.add_argument("--run", help="a run folder (checkpoint.dir): evaluates every ckpt-*/hf in it")
    parser.add_argument("--sft", default=None, help="the SFT model (default: the run's model.path, else the embedded default)")
    parser.add_argument("--baseline", default=None, help="opponent checkpoint hf/ folder (default: the SFT model)")
    parser.add_argument("--prompts", default=None,
                        help="held-out prompts: a JSONL path or a shipped set (questions-eval, instructions-eval); "
                             "default: the held-out counterpart of the run's data.prompts")
    parser.add_argument("--num-prompts", type=int, default=None, help="default: all")
    parser.add_argument("--scorers", nargs="*", default=None,
                        help="head-to-head scorers: self | self:<path> | lm:<path> | reward:<path> | verifier | "
                             "python:<module>:<fn> | heuristic (default: verifier on instruction prompts, "
                             "else self heuristic)")
    parser.add_argument("--max-tokens", type=int, default=None, help="default: the run's rollout.max_tokens, else 64")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpus", type=int, default=None, help="threads for the answering engine (default: all cores)")
    parser.add_argument("--out", default=None, help="output folder (default: <run>/eval or ./eval)")
    args = parser.parse_args(argv)

    import yaml
    from transformers import AutoTokenizer

    from cluster.models import resolve_model_path
    from cluster.prompts import SHIPPED_EVAL, PromptFileError, load_prompts
    from cluster.ray_setup import init_ray

    run_dir = Path(args.run) if args.run else None
    run_cfg = {}
    if run_dir and (run_dir / "config.yaml").exists():
        run_cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    try:
        sft_path = str(resolve_model_path(args.sft or run_cfg.get("model", {}).get("path")))
        if run_dir:
            checkpoints = run_checkpoints(run_dir)
            if not checkpoints:
                raise FileNotFoundError(f"no ckpt-*/hf checkpoints in {run_dir}")
        else:
            checkpoints = [Path(c) / "hf" if (Path(c) / "hf").is_dir() else Path(c) for c in args.checkpoint]
            for c in checkpoints:
                if not (c / "config.json").exists():
                    raise FileNotFoundError(f"{c} is not an HF checkpoint folder (no config.json)")
        tokenizer = AutoTokenizer.from_pretrained(sft_path)
        max_prompt = run_cfg.get("model", {}).get("max_prompt_tokens", 256)
        trained_on = run_cfg.get("data", {}).get("prompts")
        default_prompts = "instructions-eval" if trained_on == "instructions" else SHIPPED_EVAL
        prompts = load_prompts(args.prompts or default_prompts, tokenizer, max_prompt, "error", args.num_prompts)
    except (FileNotFoundError, PromptFileError, ValueError) as err:
        log.error("%s", err)
        return 2
    max_tokens = args.max_tokens or run_cfg.get("rollout", {}).get("max_tokens", 64)
    if args.scorers is None:
        args.scorers = ["verifier"] if all(p.instructions for p in prompts) else ["self", "heuristic"]
    init_ray(None, num_cpus=max(4, args.cpus or 0))
    log.info("evaluating %d checkpoint(s) on %d prompts against %s; scorers: %s", len(checkpoints), len(prompts),
             sft_path, ", ".join(args.scorers))
    baseline = None
    if args.baseline:
        baseline = Path(args.baseline) / "hf" if (Path(args.baseline) / "hf").is_dir() else Path(args.baseline)
    cpus = args.cpus or os.cpu_count() or 1
    results = evaluate(checkpoints, sft_path, prompts, args.scorers, max_tokens, args.temperature, args.seed, baseline,
                       cpus)
    out = Path(args.out) if args.out else (run_dir / "eval" if run_dir else Path("eval"))
    write_report(results, out, run_dir / "metrics.jsonl" if run_dir else None)
    print((out / "eval.md").read_text())
    log.info("wrote %s/eval.json, eval.md, eval.png", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
