"""Head-to-head evaluation: a checkpoint's answers against the SFT model's, on held-out prompts.

    python -m cluster.evaluate --checkpoint runs/osp/ckpt-000050/hf
    python -m cluster.evaluate --run runs/osp            # every checkpoint: win rate over training
    python -m cluster.evaluate --run runs/osp --scorers self heuristic lm:/models/judge
    python -m cluster.evaluate --run runs/verifier --prompts instructions-eval   # IFEval accuracy
    python -m cluster.evaluate --checkpoint HuggingFaceTB/SmolLM2-360M-Instruct --sft HuggingFaceTB/SmolLM2-135M-Instruct

One vLLM engine (a Ray actor) answers every prompt with the SFT weights, then with each
checkpoint's (weights swapped in place, as in training). Each scorer compares policy vs SFT
answers per prompt: win (p > 0.5), loss (p < 0.5), tie (p = 0.5 exactly: e.g. identical
answers). Win rate = (wins + ties/2) / n with a 95% bootstrap interval over prompts. Mean
answer lengths are reported too: preference training drifts toward longer answers (the OSP
paper's length-bias warning), and a win bought by length alone should be visible.
When the held-out prompts carry verifiable instructions (IFEval format), every answer set,
the baseline's included, also gets IFEval accuracy (prompt- and instruction-level, strict
and loose, with 95% bootstrap intervals), a per-instruction-kind table, and each
checkpoint's paired gain over the baseline with its interval (cluster/evaluation/instruction_eval.py).
Results: <out>/eval.json, <out>/eval.md and <out>/eval.png (win rate and loss over training).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from core.env import apply_runtime_env

apply_runtime_env()  # before Ray, vLLM and transformers read the environment at import

import ray
import yaml
from transformers import AutoTokenizer

from actors.rollout import RolloutActor
from cluster.data.prompts import SHIPPED, SHIPPED_EVAL, PromptFileError, load_prompts
from cluster.driver.checkpoint import check_adapter_base, policy_folder
from cluster.driver.progress import CountBar, setup_logging
from cluster.driver.ray_setup import init_ray, link_worker_logs
from cluster.evaluation import instruction_eval
from cluster.evaluation.intervals import mean_with_interval
from cluster.evaluation.report import write_report
from core.chat import ChatEncoder
from core.config import ModelConfig, RolloutConfig
from core.models import pin_model, resolve_model
from judge.scorers import make_scorer

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


def summarise(scorer: str, strengths: list[float], seed: int = 0) -> Outcome:
    values = outcome_values(strengths)
    rate = mean_with_interval(values, seed)
    return Outcome(scorer, values.count(1.0), values.count(0.5), values.count(0.0),
                   rate["value"], rate["ci_low"], rate["ci_high"])


# ---------------------------------------------------------------------------------------


CHUNK = 50  # prompts per engine call: the bar moves, vLLM still batches


def _answers(engine, prompts, max_tokens: int, temperature: float, seed: int, bar: CountBar) -> list[dict]:
    out = []
    for start in range(0, len(prompts), CHUNK):
        chunk = [list(p.tokens) for p in prompts[start:start + CHUNK]]
        out += ray.get(engine.complete.remote(chunk, max_tokens, temperature, seed))
        bar.advance(len(chunk))
    return out


def evaluate(checkpoints: list[Path], sft_path: str, prompts, scorer_specs: list[str], max_tokens: int,
             temperature: float = 0.0, seed: int = 0, baseline: Path | None = None, cpus: int = 1,
             chat_template: str | None = None) -> list[dict]:
    """Evaluate each checkpoint's hf/ folder against the baseline (the SFT model unless
    `baseline` names another checkpoint); one result dict each. The SFT model stays the
    self-judge either way. `chat_template`: the run's model.chat_template, which the model
    scorers encode their judging prompts with."""
    # Nothing else runs during an evaluation: the engine may use every core it is given.
    engine = ray.remote(RolloutActor).options(num_cpus=cpus).remote(
        sft_path, RolloutConfig(k=1, temperature=1.0, top_p=1.0, max_tokens=max_tokens),
        ModelConfig(max_prompt_tokens=max(len(p.tokens) for p in prompts)), seed=seed, name="eval", threads=cpus)
    bar = CountBar("answers", len(prompts) * (1 + len(checkpoints)))
    try:
        if baseline is not None:
            ray.get(engine.load_checkpoint.remote(str(baseline)))
        base = _answers(engine, prompts, max_tokens, temperature, seed, bar)
        policies = []
        for ckpt in checkpoints:
            ray.get(engine.load_checkpoint.remote(str(ckpt)))
            policies.append(_answers(engine, prompts, max_tokens, temperature, seed, bar))
    finally:
        bar.close()
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
            # Every answer, in prompt order: what the figures below were computed from, with
            # each answer's length and whether max_tokens cut it (per-prompt outcomes are
            # rebuilt from these: experiments/lib/experiment_outcomes.py).
            "prompt_ids": [p.prompt_id for p in prompts],
            "answers": [a["text"] for a in answers],
            "baseline_answers": base_texts,
            "answer_tokens": [len(a["tokens"]) for a in answers],
            "baseline_answer_tokens": [len(a["tokens"]) for a in base],
            "answer_truncated": [a["finish_reason"] == "length" for a in answers],
            "baseline_answer_truncated": [a["finish_reason"] == "length" for a in base],
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
        scorer = make_scorer(spec, sft_path, by_text, chat_template)
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
            # The per-prompt strengths too, so that the win rate can be recomputed from the file.
            result["outcomes"].append({**asdict(summarise(scorer.name, strengths, seed)), "strengths": strengths})
    return results


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


def run_checkpoints(run_dir: Path) -> list[Path]:
    return sorted(p / "hf" for p in run_dir.glob("ckpt-*") if (p / "hf").is_dir())


def main(argv: list[str] | None = None, prog: str = "python -m cluster.evaluate") -> int:
    setup_logging()
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", nargs="+",
                      help="checkpoint hf/ folder(s) (or ckpt-N folders): full weights or a LoRA adapter of the SFT "
                           "model; or Hugging Face ids org/name[@rev]")
    what.add_argument("--run", help="a run folder (checkpoint.dir): evaluates every ckpt-*/hf in it")
    parser.add_argument("--sft", default=None, help="the SFT model: a folder or a Hugging Face id org/name[@rev] "
                                                    "(default: the run's model.path, else the embedded default)")
    parser.add_argument("--baseline", default=None,
                        help="opponent: a checkpoint hf/ folder or a Hugging Face id (default: the SFT model)")
    parser.add_argument("--chat-template", default=None,
                        help="as model.chat_template: plain, or a .jinja file (default: the run's, else the tokenizer's own)")
    parser.add_argument("--prompts", default=None,
                        help="held-out prompts: a JSONL path or a shipped set (questions-eval, instructions-eval); "
                             "default: the held-out counterpart of the run's data.prompts")
    parser.add_argument("--num-prompts", type=int, default=None, help="default: all")
    parser.add_argument("--scorers", nargs="*", default=None,
                        help="head-to-head scorers: self | self:<model> | lm:<model> | reward:<model> | verifier | "
                             "python:<module>:<fn> | heuristic (default: verifier on instruction prompts, "
                             "else self heuristic)")
    parser.add_argument("--max-tokens", type=int, default=None, help="default: the run's rollout.max_tokens, else 64")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpus", type=int, default=None, help="threads for the answering engine (default: all cores)")
    parser.add_argument("--out", default=None, help="output folder (default: <run>/eval or ./eval)")
    parser.add_argument("--verbose", action="store_true",
                        help="also print the engine's own logs (vLLM, Ray); else they go to <out>/worker-logs")
    args = parser.parse_args(argv)

    run_dir = Path(args.run) if args.run else None
    run_cfg = {}
    if run_dir and (run_dir / "config.yaml").exists():
        run_cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    try:
        sft_ref = pin_model(args.sft or run_cfg.get("model", {}).get("path"))
        sft_path = str(resolve_model(sft_ref))
        if run_dir:
            checkpoints = run_checkpoints(run_dir)
            if not checkpoints:
                raise FileNotFoundError(f"no ckpt-*/hf checkpoints in {run_dir}")
        else:
            checkpoints = [policy_folder(c) for c in args.checkpoint]
        baseline = policy_folder(args.baseline) if args.baseline else None
        for folder in [*checkpoints, *([baseline] if baseline else [])]:  # an adapter applies to its own base
            check_adapter_base(folder, sft_path, "--sft", sft_ref)
        chat_template = args.chat_template or run_cfg.get("model", {}).get("chat_template")
        chat = ChatEncoder(AutoTokenizer.from_pretrained(sft_path), chat_template)
        max_prompt = run_cfg.get("model", {}).get("max_prompt_tokens", 256)
        trained_on = run_cfg.get("data", {}).get("prompts")
        default_prompts = f"{trained_on}-eval" if f"{trained_on}-eval" in SHIPPED else SHIPPED_EVAL
        prompts = load_prompts(args.prompts or default_prompts, chat, max_prompt, "error", args.num_prompts)
    except (FileNotFoundError, PromptFileError, ValueError) as err:
        log.error("%s", err)
        return 2
    max_tokens = args.max_tokens or run_cfg.get("rollout", {}).get("max_tokens", 64)
    if args.scorers is None:
        args.scorers = ["verifier"] if all(p.instructions for p in prompts) else ["self", "heuristic"]
    out = Path(args.out) if args.out else (run_dir / "eval" if run_dir else Path("eval"))
    out.mkdir(parents=True, exist_ok=True)
    init_ray(None, num_cpus=max(4, args.cpus or 0), worker_logs=args.verbose)
    if not args.verbose:
        log.info("the engine's logs: %s (--verbose prints them here)", link_worker_logs(out) or "the Ray dashboard")
    log.info("evaluating %d checkpoint(s) on %d prompts against %s; scorers: %s", len(checkpoints), len(prompts),
             sft_path, ", ".join(args.scorers))
    cpus = args.cpus or os.cpu_count() or 1
    results = evaluate(checkpoints, sft_path, prompts, args.scorers, max_tokens, args.temperature, args.seed, baseline,
                       cpus, chat_template)
    write_report(results, out, run_dir / "metrics.jsonl" if run_dir else None)
    for line in summary_lines(results):
        print(line)
    log.info("wrote %s/eval.json, eval.md (every table), eval.png", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
