"""The held-out check of a run: greedy answers to held-out prompts with instructions, verified,
with the SFT weights at start-up and the final weights at the end (heldout.json)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from cluster.data.prompts import Prompt
from cluster.evaluation import instruction_eval
from cluster.evaluation.answers import Answerer

log = logging.getLogger("osp")


def answers(engine: Any, prompts: list[Prompt], max_tokens: int, seed: int, who: str) -> list[str]:
    """Greedy answers of `engine` (the run's own rollout actor, with the weights it holds now) to
    the prompts, in one engine call; their accuracy is logged."""
    start = time.perf_counter()
    texts = [a["text"] for a in Answerer.wrap(engine).answer(prompts, max_tokens)]
    acc = instruction_eval.accuracy(instruction_eval.verdicts([p.instructions for p in prompts], texts), seed)
    log.info("held-out %s (%d prompts, %.0fs)", instruction_eval.format_accuracy(who, acc), len(texts),
             time.perf_counter() - start)
    return texts


def write_result(run_dir: Path, step: int, prompts: list[Prompt], sft_answers: list[str],
                 final_answers: list[str] | None, seed: int) -> dict:
    """heldout.json: both accuracies, the paired gain with its interval, per-kind rates, and
    every answer they were computed from (`step`: the learner step whose weights answered).
    `final_answers` come from a rollout actor shown to hold step N's weights (core/weights.
    push_gaps), `"weights_verified": true`; None when no actor could be shown to: there is no
    final score to give, and the record keeps the SFT side with `"weights_verified": false`."""
    instructions = [p.instructions for p in prompts]
    sft = instruction_eval.verdicts(instructions, sft_answers)
    final = None if final_answers is None else instruction_eval.verdicts(instructions, final_answers)
    record = {
        "step": step,
        "weights_verified": final is not None,
        "prompts": len(prompts),
        "sft": instruction_eval.accuracy(sft, seed),
        "final": None if final is None else instruction_eval.accuracy(final, seed),
        "gain": None if final is None else instruction_eval.gain(final, sft, seed),
        "per_kind": {"sft": instruction_eval.per_kind(instructions, sft),
                     "final": None if final is None else instruction_eval.per_kind(instructions, final)},
        "prompt_ids": [p.prompt_id for p in prompts],
        "answers": {"sft": list(sft_answers), "final": None if final_answers is None else list(final_answers)},
    }
    (run_dir / "heldout.json").write_text(json.dumps(record, indent=1))
    if final is None:
        return record  # the caller refuses the run, in one line
    g = record["gain"]["prompt_strict"]
    log.info("held-out prompt-level accuracy, SFT %.3f → step %d %.3f: gain %+.3f (95%% CI %+.3f to %+.3f)%s",
             record["sft"]["prompt_strict"]["value"], step, record["final"]["prompt_strict"]["value"],
             g["value"], g["ci_low"], g["ci_high"],
             "" if g["ci_low"] > 0 or g["ci_high"] < 0 else " — not significant")
    return record
