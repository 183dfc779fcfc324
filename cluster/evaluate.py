"""Head-to-head evaluation: a checkpoint's answers against the SFT model's, on held-out prompts.

    python -m cluster.evaluate --checkpoint runs/osp/ckpt-000050/hf
    python -m cluster.evaluate --run runs/osp            # every checkpoint: win rate over training
    python -m cluster.evaluate --run runs/osp --scorers self heuristic lm:/models/judge
    python -m cluster.evaluate --run runs/verifier --prompts instructions-eval   # IFEval accuracy
    python -m cluster.evaluate --checkpoint HuggingFaceTB/SmolLM2-360M-Instruct --sft HuggingFaceTB/SmolLM2-135M-Instruct

The command line only: what is measured is cluster/evaluation/head_to_head.py; the results,
<out>/eval.json, eval.md and eval.png (win rate and loss over training), cluster/evaluation/report.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from core.env import apply_runtime_env

apply_runtime_env()  # before Ray, vLLM and transformers read the environment at import

from transformers import AutoTokenizer

from cluster.data.prompts import PromptFileError, load_prompts
from cluster.driver.checkpoint import check_adapter_base, policy_folder
from cluster.driver.progress import setup_logging
from cluster.driver.ray_setup import init_ray, link_worker_logs
from cluster.evaluation.head_to_head import HeadToHeadOptions, RunDefaults, evaluate, run_checkpoints
from cluster.evaluation.report import summary_lines, write_report
from core.chat import ChatEncoder
from core.models import pin_model, resolve_model

log = logging.getLogger("osp")


def main(argv: list[str] | None = None, prog: str = "python -m cluster.evaluate") -> int:
    setup_logging()
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", nargs="+", help="checkpoint hf/ folder(s) (or ckpt-N folders): full weights or a "
                      "LoRA adapter of the SFT model; or Hugging Face ids org/name[@rev]")
    what.add_argument("--run", help="a run folder (checkpoint.dir): evaluates every ckpt-*/hf in it")
    parser.add_argument("--sft", default=None, help="the SFT model: a folder or a Hugging Face id org/name[@rev] "
                                                    "(default: the run's model.path, else the embedded default)")
    parser.add_argument("--baseline", default=None,
                        help="opponent: a checkpoint hf/ folder or a Hugging Face id (default: the SFT model)")
    parser.add_argument("--chat-template", default=None,
                        help="as model.chat_template: plain, or a .jinja file (default: the run's, else the tokenizer's own)")
    parser.add_argument("--prompts", default=None, help="held-out prompts: a JSONL path or a shipped set (questions-eval, "
                        "instructions-eval); default: the held-out counterpart of the run's data.prompts")
    parser.add_argument("--num-prompts", type=int, default=None, help="default: all")
    parser.add_argument("--scorers", nargs="*", default=None, help="head-to-head scorers: self | self:<model> | lm:<model> | "
                        "reward:<model> | verifier | python:<module>:<fn> | heuristic (default: verifier on instruction "
                        "prompts, else self heuristic)")
    parser.add_argument("--max-tokens", type=int, default=None, help="default: the run's rollout.max_tokens, else 64")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpus", type=int, default=None, help="threads for the answering engine (default: all cores)")
    parser.add_argument("--out", default=None, help="output folder (default: <run>/eval or ./eval)")
    parser.add_argument("--verbose", action="store_true", help="also print the engine's own logs (vLLM, Ray); else they go "
                        "to <out>/worker-logs")
    args = parser.parse_args(argv)

    run_dir = Path(args.run) if args.run else None
    defaults = RunDefaults.of(run_dir)
    try:
        sft_ref = pin_model(args.sft or defaults.model)
        sft_path = str(resolve_model(sft_ref))
        checkpoints = run_checkpoints(run_dir) if run_dir else [policy_folder(c) for c in args.checkpoint]
        baseline = policy_folder(args.baseline) if args.baseline else None
        for folder in [*checkpoints, *([baseline] if baseline else [])]:  # an adapter applies to its own base
            check_adapter_base(folder, sft_path, "--sft", sft_ref)
        chat_template = args.chat_template or defaults.chat_template
        chat = ChatEncoder(AutoTokenizer.from_pretrained(sft_path), chat_template)
        prompts = load_prompts(args.prompts or defaults.prompts, chat, defaults.max_prompt_tokens, "error", args.num_prompts)
    except (FileNotFoundError, PromptFileError, ValueError) as err:
        log.error("%s", err)
        return 2
    if args.scorers is None:
        args.scorers = ["verifier"] if all(p.instructions for p in prompts) else ["self", "heuristic"]
    out = Path(args.out) if args.out else (run_dir / "eval" if run_dir else Path("eval"))
    out.mkdir(parents=True, exist_ok=True)
    init_ray(None, num_cpus=max(4, args.cpus or 0), worker_logs=args.verbose)
    if not args.verbose:
        log.info("the engine's logs: %s (--verbose prints them here)", link_worker_logs(out) or "the Ray dashboard")
    log.info("evaluating %d checkpoint(s) on %d prompts against %s; scorers: %s", len(checkpoints), len(prompts),
             sft_path, ", ".join(args.scorers))
    results = evaluate(checkpoints, prompts, HeadToHeadOptions(sft_path, args.scorers, args.max_tokens or defaults.max_tokens,
                       args.temperature, args.seed, baseline, args.cpus or os.cpu_count() or 1, chat_template))
    write_report(results, out, run_dir / "metrics.jsonl" if run_dir else None)
    print(*summary_lines(results), sep="\n")
    log.info("wrote %s/eval.json, eval.md (every table), eval.png", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
