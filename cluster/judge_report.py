"""A judge's report card: how often it agrees with a gold judge, how calibrated its strengths
are, how position-consistent and how fast, on answers a policy really samples.

    python -m cluster.judge_report --judges self checklist verifier+logit:2.5 verifier+flip:0.2
    python -m cluster.judge_report --judges lm:/models/judge --answers runs/judges/answers.json

The command line only: the card (agreement, calibration, the calibrating temperature, position
gap, speed) is cluster/evaluation/judge_card.py. Output in --out: answers.json (reusable with
--answers), report.json, report.md, reliability.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from core.env import apply_runtime_env

apply_runtime_env()  # before Ray, vLLM and transformers read the environment at import

from transformers import AutoTokenizer

from cluster.data.prompts import PromptFileError, load_prompts
from cluster.driver.checkpoint import check_adapter_base, policy_folder
from cluster.driver.progress import setup_logging
from cluster.driver.ray_setup import init_ray, link_worker_logs
from cluster.evaluation.judge_card import CardOptions, judge_cards, markdown, parse_judge_spec, sample_answers, write_files
from core.adapters import is_adapter_folder
from core.chat import ChatEncoder
from core.config import RolloutConfig
from core.models import pin_model, resolve_model

log = logging.getLogger("osp")


def main(argv: list[str] | None = None, prog: str = "python -m cluster.judge_report") -> int:
    setup_logging()
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--judges", nargs="+", required=True,
                        help="judge specs: <kind>[+flip:<share>|+logit:<σ>], kind one of self, checklist, verifier, "
                             "lm:<model>, reward:<model>, python:<module>:<fn>")
    parser.add_argument("--model", default=None, help="the SFT model (self and checklist judges): a folder or a "
                                                      "Hugging Face id org/name[@rev] (default: embedded)")
    parser.add_argument("--chat-template", default=None,
                        help="as model.chat_template: plain, or a .jinja file (default: the tokenizer's own)")
    parser.add_argument("--policy", default=None, help="the model that samples the answers: a model folder, a Hugging "
                        "Face id, or a checkpoint (ckpt-N, its hf/; a LoRA adapter of --model) (default: the SFT model)")
    parser.add_argument("--prompts", default="instructions-eval", help="prompts with IFEval instructions")
    parser.add_argument("--num-prompts", type=int, default=100)
    parser.add_argument("--k", type=int, default=4, help="answers per prompt (K(K−1)/2 comparisons each)")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--tau", type=float, default=0.5, help="τ of score-based judges (verifier, checklist, reward)")
    parser.add_argument("--answers", default=None, help="answers.json of an earlier report: judge these instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/judges")
    args = parser.parse_args(argv)
    try:
        for spec in args.judges:
            parse_judge_spec(spec)
        model_ref = pin_model(args.model)
        model_path = str(resolve_model(model_ref))
        # --policy: a model folder or id, or a checkpoint (ckpt-N or its hf/); a LoRA adapter
        # samples as the SFT model with the adapter merged in (it must be the adapter's base).
        policy = policy_folder(args.policy) if args.policy else Path(model_path)
        adapter = None
        if is_adapter_folder(policy):
            check_adapter_base(policy, model_path, "--model", model_ref)
            policy, adapter = Path(model_path), policy
        chat = ChatEncoder(AutoTokenizer.from_pretrained(model_path), args.chat_template)
        prompts = load_prompts(args.prompts, chat, 512, "error", args.num_prompts)
    except (ValueError, FileNotFoundError, PromptFileError) as err:
        log.error("%s", err)
        return 2
    if not all(p.instructions for p in prompts):
        log.error("--prompts must carry IFEval instructions on every row: the verifier is the gold judge")
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.answers:
        rows = json.loads(Path(args.answers).read_text())[:args.num_prompts]
    else:
        init_ray(None, num_cpus=2, worker_logs=False)
        link_worker_logs(out)
        log.info("sampling %d answers to each of %d prompts", args.k, len(prompts))
        rows = sample_answers(str(policy), prompts, RolloutConfig(k=args.k, max_tokens=args.max_tokens), args.seed, adapter)
        (out / "answers.json").write_text(json.dumps(rows, indent=1))
    options = CardOptions(model_path, chat, {p.text: p.instructions for p in prompts}, args.tau, args.seed)
    cards, counts = judge_cards(args.judges, rows, options)
    write_files(out, {"prompts": len(rows), "k": args.k, **counts, "tau": args.tau, "max_tokens": args.max_tokens,
                      "policy": str(adapter or policy)}, cards)
    print(markdown(cards))
    log.info("wrote %s/report.json, report.md, reliability.png", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
