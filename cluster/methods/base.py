"""What a method is: every choice that makes OSP, DPO, cDPO, IPO, SPO or DNO, in one object.

A `Method` answers four questions, each asked by one part of the system:

- **config** (cluster/config.py): `validate(cfg)` refuses what the method cannot run;
- **judge** (judge/judge_actor.py, given the method when it is created): which pairs a prompt's K
  answers become (`pair`, `pairs_per_prompt`, `comparisons_per_prompt`) and which policy's
  log-probs are the reference (`reference`: the SFT model, or the policy that sampled);
- **learner** (learner/rank.py, likewise given the method): the per-pair loss (`pair_loss`), the
  labels it reads (`labels`), whether log-probs are length-normalised, and any auxiliary term
  with its extra head (`aux_loss`, `degree_classes`);
- **driver** (cluster/driver/scheduler.py): when pairs are still fresh enough to train, when to
  push, and what a step's batch holds (`step_policy`: the staleness-bounded asynchronous loop by
  default, DNO's iterations with replay for DNO).

The base class is ranked pairing (judge.anchor) against the SFT reference, trained
asynchronously: a method overrides what it changes. A method is one module in cluster/methods/
plus one line in its registry (cluster/methods/__init__.py). Methods travel to the actors
as objects (pickled by Ray), so judge/ and learner/ never import this package: every import
still points down.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pyarrow as pa
from torch import Tensor

from core.config import Config, ConfigError
from judge.pairing import ANCHORS, PAIRINGS, JudgedPair, comparisons_per_prompt, judge_pairs, pairs_per_prompt
from learner.losses import as_prob, tie_masked

# judge_fn(list of (a, b) answer texts) -> p(a ≻ b) for each, swap-averaged.
JudgeFn = Callable[[list[tuple[str, str]]], list[float]]


@dataclass(frozen=True)
class StepBatch:
    """One learner step's pairs: the fresh ones first, then `replayed` pairs from earlier."""

    pairs: pa.Table
    replayed: int = 0

    @property
    def fresh_prompt_indices(self) -> list[int]:
        """One entry per fresh pair (the ledger counts a prompt done when its last one trains)."""
        return self.pairs.slice(0, self.pairs.num_rows - self.replayed)["prompt_index"].to_pylist()


class StepPolicy:
    """The driver's side of a method: the asynchronous loop bounded by pipeline.max_staleness
    (in weight pushes). Rollout for step t+1 overlaps learning on step t; pairs older than the
    bound are requeued by the scheduler."""

    def __init__(self, cfg: Config, rng: random.Random):
        self.cfg, self.rng = cfg, rng

    def useful_steps(self, step: int, step_running: bool) -> int:
        """Learner steps that pairs sampled now can still feed before they go stale: they carry
        the engines' current version; a running step pushes a new one when it ends, and after
        `max_staleness` more pushes they are too old. With max_staleness=0 nothing is sampled
        while the learner learns: fully on-policy."""
        return self.cfg.pipeline.max_staleness * self.cfg.learner.sync_every + (not step_running)

    def oldest_trainable(self, pushed_versions: list[int]) -> int:
        ms = self.cfg.pipeline.max_staleness
        return pushed_versions[-1 - ms] if len(pushed_versions) > ms else pushed_versions[0]

    def push_due(self, step: int) -> bool:
        return step % self.cfg.learner.sync_every == 0

    def fresh_pairs_per_step(self) -> int:
        return self.cfg.learner.pairs_per_step

    def batch(self, fresh: pa.Table) -> StepBatch:
        """A step's batch from its fresh pairs (here: those alone)."""
        return StepBatch(fresh)

    def end_of_step(self, step: int) -> None:
        """Called after every learner step (and its push, if one was due)."""

    def metrics(self, batch: StepBatch) -> dict[str, float]:
        return {}


class Method:
    """Ranked pairing against the SFT reference, asynchronous; subclasses set the loss."""

    name = ""
    reference = "sft"  # whose log-probs normalise the policy: "sft", or "sampler" (the policy that sampled)
    reads_strength = False  # does the loss read how far p is from ½ (only SPCE), or its verdict alone
    degree_classes = 0  # an auxiliary classification head's classes (SPO), 0: none
    length_normalized_by_default = False  # loss.length_normalize=null: compare sums of log-probs

    def __init__(self, cfg: Config):
        self.cfg = cfg

    # -- config ---------------------------------------------------------------------------
    def validate(self, cfg: Config) -> None:
        """Refuse what this method cannot run (ConfigError naming the key)."""
        k = cfg.rollout.k
        if k < 2 or k % 2:
            raise ConfigError(f"rollout.k: ranked pairing needs an even K ≥ 2 (method=dno takes any K ≥ 2), got {k}")
        if cfg.judge.anchor not in ANCHORS:
            raise ConfigError(f"judge.anchor: unknown {cfg.judge.anchor!r}; choose one of {ANCHORS}")
        if cfg.judge.pairing not in PAIRINGS:
            raise ConfigError(f"judge.pairing: unknown {cfg.judge.pairing!r}; choose one of {PAIRINGS}")
        if cfg.judge.pairing != "ranked" and cfg.judge.anchor != "round_robin":
            raise ConfigError(f"judge.pairing: {cfg.judge.pairing} pairs from the round-robin matrix; "
                              f"it needs judge.anchor=round_robin, got {cfg.judge.anchor}")
        if cfg.loss.hard_labels and not self.reads_strength:
            raise ConfigError(f"loss.hard_labels: method={self.name} trains on the judge's verdict already; "
                              "the switch only changes osp (making it dpo)")

    # -- judge ----------------------------------------------------------------------------
    @property
    def source(self) -> str:
        """What made a pair (its `source` column): the judge's anchor."""
        return self.cfg.judge.anchor

    def pairs_per_prompt(self) -> int:
        """Pairs one prompt's K answers become, at most (the driver counts what is on its way with it)."""
        return pairs_per_prompt(self.cfg.rollout.k, self.cfg.judge.anchor, self.cfg.judge.pairing)

    def comparisons_per_prompt(self) -> int:
        return comparisons_per_prompt(self.cfg.rollout.k, self.cfg.judge.anchor)

    def pair(self, responses: Sequence[str], judge_fn: JudgeFn, anchor_response: str | None) -> list[JudgedPair]:
        """A prompt's K answers → its judged pairs (judge/pairing.py: K//2 ranked pairs by default)."""
        return judge_pairs(responses, judge_fn, self.cfg.judge.anchor, anchor_response, self.cfg.judge.pairing)

    # -- learner --------------------------------------------------------------------------
    def length_normalize(self) -> bool:
        """Compare mean per-token log-probs instead of sums: loss.length_normalize, null meaning
        the method's own default."""
        configured = self.cfg.loss.length_normalize
        return configured if configured is not None else self.length_normalized_by_default

    def labels(self, p: Tensor) -> Tensor:
        """What the loss reads of the judge's strengths."""
        return p

    def pair_loss(self, h: Tensor, p: Tensor) -> Tensor:
        """Per-pair loss [B] of margins h and strengths p (ties are masked by the caller)."""
        raise NotImplementedError

    def masked_pair_loss(self, h: Tensor, p: Tensor) -> Tensor:
        """pair_loss after checking p is a probability, 0 with zero gradient for a tie (p = ½
        has no verdict: learner.losses.tie_masked)."""
        p = as_prob(p, h).expand_as(h)
        return tie_masked(self.pair_loss(h, p), p)

    def aux_loss(self, policy: Any, tokenizer: Any, pad_id: int, cols: dict, rng: random.Random
                 ) -> tuple[Tensor, dict[str, float]] | None:
        """An auxiliary loss term (already weighted) and its metrics, or None."""
        return None

    # -- driver ---------------------------------------------------------------------------
    def step_policy(self, rng: random.Random) -> StepPolicy:
        return StepPolicy(self.cfg, rng)
