"""The judge actors: each rollout batch goes to the least-loaded one, by object ref (the
judge reads the batch from the object store; it never passes through the driver)."""

from __future__ import annotations

import logging
from typing import Any

import ray

from cluster.pools import make_judge_actor
from cluster.prompts import Prompt
from core.config import Config
from judge.pairing import comparisons_per_prompt, pairs_per_prompt

log = logging.getLogger("osp")


class JudgePool:
    def __init__(self, cfg: Config, model_path: str, prompts: list[Prompt], prefix: str):
        # Prompt text → its IFEval instructions: the verifier judge's input, and the pass rate
        # of fresh samples for any judge kind.
        instructions = {p.text: p.instructions.to_json() for p in prompts if p.instructions is not None}
        # Put once and passed as [ref]: the judges fetch it themselves, and the ref lives with the
        # pool for the whole run, so a restarted judge finds it too. (Ray still logs that the
        # constructor has an argument in the object store: it counts nested refs.)
        self.instructions = [ray.put(instructions)] if instructions else None
        self.judges = [make_judge_actor(cfg, model_path, i, self.instructions, prefix)
                       for i in range(cfg.judge.num_actors)]
        self.load = [0] * len(self.judges)
        j, k = cfg.judge, cfg.rollout.k
        log.info("judge %s, anchor %s: %d comparisons per prompt of K=%d, %d pairs kept at most",
                 j.kind, j.anchor, comparisons_per_prompt(k, j.anchor), k, pairs_per_prompt(k, j.anchor))
        self.empty_in_a_row = 0  # judged batches in a row that kept no pair

    def roles(self) -> list[tuple[str, Any]]:
        """(role, handle) of each judge, named as their actors are (cluster.pools)."""
        return [(f"judge-{i}", j) for i, j in enumerate(self.judges)]

    def score(self, rollout_ref: ray.ObjectRef) -> tuple[ray.ObjectRef, int]:
        """Send a rollout batch to the least-loaded judge: (its result ref, the judge's index)."""
        judge = min(range(len(self.judges)), key=self.load.__getitem__)
        self.load[judge] += 1
        return self.judges[judge].score.remote(rollout_ref), judge

    def done(self, judge: int, kept_pairs: bool) -> None:
        """A judge call returned; warn every 20 batches in a row that kept no pair (a judge that
        keeps nothing starves the run)."""
        self.load[judge] -= 1
        self.empty_in_a_row = 0 if kept_pairs else self.empty_in_a_row + 1
        if self.empty_in_a_row and self.empty_in_a_row % 20 == 0:
            log.warning("the last %d judged batches kept no pair (judge.drop_ties drops exact ties; DNO keeps a pair "
                        "only above dno.margin): is the judge able to tell these answers apart?", self.empty_in_a_row)

    def shutdown(self) -> None:
        for judge in self.judges:
            ray.kill(judge)
