"""The held-out check of a run: greedy answers to held-out prompts with instructions, verified,
with the SFT weights at start-up and the final weights at the end (heldout.json)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import ray

from cluster.data.prompts import Prompt
from cluster.evaluation import instruction_eval

log = logging.getLogger("osp")


def answers(engine: Any, prompts: list[Prompt], max_tokens: int, seed: int, who: str) -> list[str]:
    """Greedy answers of `engine` (a rollout actor, with the weights it holds now) to the
    prompts; their accuracy is logged."""
    start = time.perf_counter()
    texts = [a["text"] for a in ray.get(engine.complete.remote([list(p.tokens) for p in prompts], max_tokens))]
    acc = instruction_eval.accuracy(instruction_eval.verdicts([p.instructions for p in prompts], texts), seed)
    log.info("held-out %s (%d prompts, %.0fs)", instruction_eval.format_accuracy(who, acc), len(texts),
             time.perf_counter() - start)
    return texts


def write_result(run_dir: Path, step: int, prompts: list[Prompt], sft_answers: list[str], final_answers: list[str],
                 seed: int) -> dict:
    """heldout.json: both accuracies, the paired gain with its interval, per-kind rates, and
    every answer they were computed from (`step`: the learner step whose weights answered)."""
    instructions = [p.instructions for p in prompts]
    sft = instruction_eval.verdicts(instructions, sft_answers)
    final = instruction_eval.verdicts(instructions, final_answers)
    gain = instruction_eval.gain(final, sft, seed)
    record = {
        "step": step,
        "prompts": len(final),
        "sft": instruction_eval.accuracy(sft, seed),
        "final": instruction_eval.accuracy(final, seed),
        "gain": gain,
        "per_kind": {"sft": instruction_eval.per_kind(instructions, sft),
                     "final": instruction_eval.per_kind(instructions, final)},
        "prompt_ids": [p.prompt_id for p in prompts],
        "answers": {"sft": list(sft_answers), "final": list(final_answers)},
    }
    (run_dir / "heldout.json").write_text(json.dumps(record, indent=1))
    g = gain["prompt_strict"]
    log.info("held-out prompt-level accuracy, SFT %.3f → step %d %.3f: gain %+.3f (95%% CI %+.3f to %+.3f)%s",
             record["sft"]["prompt_strict"]["value"], step, record["final"]["prompt_strict"]["value"],
             g["value"], g["ci_low"], g["ci_high"],
             "" if g["ci_low"] > 0 or g["ci_high"] < 0 else " — not significant")
    return record
