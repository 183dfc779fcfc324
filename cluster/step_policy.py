"""When to sample, train and push: the pairs worth making, the policy versions still
trainable, and DNO's iterations with their replay.

The pipeline asks; this module decides. Nothing here talks to Ray.
"""

from __future__ import annotations

import logging
import math
import random

import pyarrow as pa

from cluster.buffer import PairBuffer
from cluster.checkpoint import RunState
from cluster.prompt_ledger import PromptLedger
from core.config import Config
from judge.pairing import pairs_per_prompt

log = logging.getLogger("osp")


def replay_mix(current: list, previous: list, fraction: float, rng: random.Random) -> list:
    """current plus items sampled without replacement from previous, so that replayed
    items make up at most `fraction` of the result (fewer if previous runs short)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must lie in [0, 1), got {fraction}")
    # n / (n + len(current)) <= fraction  <=>  n <= fraction·len(current) / (1 - fraction);
    # the epsilon keeps float noise (2.1 / 0.7 = 2.9999...) from dropping an item.
    n = math.floor(fraction * len(current) / (1 - fraction) + 1e-9)
    n = min(n, len(previous))
    return list(current) + rng.sample(previous, n)


class StepPolicy:
    def __init__(self, cfg: Config, state: RunState, rng: random.Random):
        self.cfg, self.state, self.rng = cfg, state, rng
        self.pairs_per_prompt = pairs_per_prompt(cfg.rollout.k, cfg.judge.anchor)
        self.pushed_versions = [state.version]  # policy versions sent to the engines, oldest first
        self.previous_iteration_pairs: pa.Table | None = None  # DNO: what the last iterate sampled
        self.current_iteration_pairs: list[pa.Table] = []

    # -- sampling -------------------------------------------------------------------------
    def useful_pairs(self, step_running: bool) -> int:
        """Pairs made now that can still train before they go stale, so making more is waste.

        Pairs sampled now carry the engines' current version. A running step will push a new
        version when it ends; after `max_staleness` more pushes those pairs are too old. So
        they can feed the learner steps of `max_staleness` versions, plus the next step if
        none is running yet. With max_staleness=0 nothing is sampled while the learner
        learns: fully on-policy, no overlap."""
        cfg = self.cfg
        if cfg.dno.enabled:  # DNO trains on the current iterate's samples only: this iteration's steps
            steps = cfg.dno.iteration_steps - self.state.step % cfg.dno.iteration_steps - step_running
            return max(steps, 0) * cfg.learner.pairs_per_step
        steps = cfg.pipeline.max_staleness * cfg.learner.sync_every + (not step_running)
        return steps * cfg.learner.pairs_per_step

    def prompts_to_sample(self, step_running: bool, buffered: int, prompts_in_flight: int, buffer_max: int) -> int:
        """How many prompts one idle engine should take now (0: back-pressure). Counts the
        buffer and the pairs on their way against both the buffer's room and what the
        remaining steps can use."""
        cfg, per_prompt = self.cfg, self.pairs_per_prompt
        coming = buffered + prompts_in_flight * per_prompt
        steps_left = cfg.learner.max_steps - self.state.step - step_running
        needed = steps_left * cfg.learner.pairs_per_step - coming
        room = min(buffer_max, self.useful_pairs(step_running)) - coming
        if room < per_prompt or needed <= 0:
            return 0
        return min(cfg.rollout.prompts_per_batch, max(1, room // per_prompt))

    # -- training -------------------------------------------------------------------------
    def oldest_trainable_version(self) -> int:
        if self.cfg.dno.enabled:  # DNO-Prct: iteration t trains only on pairs π_t sampled
            return self.pushed_versions[-1]
        ms = self.cfg.pipeline.max_staleness
        return self.pushed_versions[-1 - ms] if len(self.pushed_versions) > ms else self.pushed_versions[0]

    def next_batch(self, buffer: PairBuffer, ledger: PromptLedger) -> tuple[pa.Table, int] | None:
        """A learner step's pairs, once enough fresh ones are buffered: (batch, how many of them
        are DNO replays), or None. Pairs too stale to train go first; their prompts are requeued."""
        oldest = self.oldest_trainable_version()
        stale = buffer.drop_older_than(oldest)
        if stale:
            prompts = ledger.stale(stale, self.pairs_per_prompt)
            log.info("%d pairs older than policy version %d dropped; %d prompts requeued", len(stale), oldest,
                     len(prompts))
        batch = buffer.take(self.fresh_pairs_per_step())
        return None if batch is None else self.with_replay(batch)

    def fresh_pairs_per_step(self) -> int:
        """A step's pairs from the buffer: all of them, less DNO's places for replayed pairs
        (a share `dno.replay_fraction` of the step, once an iteration has ended)."""
        cfg = self.cfg
        replay = 0
        if cfg.dno.enabled and self.previous_iteration_pairs is not None:
            replay = int(cfg.dno.replay_fraction * cfg.learner.pairs_per_step)
        return cfg.learner.pairs_per_step - replay

    def with_replay(self, batch: pa.Table) -> tuple[pa.Table, int]:
        """DNO: the fresh batch plus previous-iteration pairs up to dno.replay_fraction of the
        step, tagged "replay" (they keep the reference they were made with: the log-probs of
        π_{t−1}, the iterate that sampled them). Returns (batch, how many were replayed)."""
        if not self.cfg.dno.enabled:
            return batch, 0
        self.current_iteration_pairs.append(batch)
        previous = self.previous_iteration_pairs
        if self.fresh_pairs_per_step() == self.cfg.learner.pairs_per_step or previous is None:
            return batch, 0
        picks = replay_mix(list(range(batch.num_rows)), list(range(previous.num_rows)), self.cfg.dno.replay_fraction,
                           self.rng)[batch.num_rows:]
        if not picks:
            return batch, 0
        old = previous.take(picks)
        i = old.schema.get_field_index("source")
        old = old.set_column(i, old.schema.field(i), pa.array(["replay"] * old.num_rows, pa.string()))
        return pa.concat_tables([batch, old]).combine_chunks(), len(picks)

    # -- after a step ---------------------------------------------------------------------
    def push_due(self) -> bool:
        cfg = self.cfg
        if cfg.dno.enabled:  # DNO: the policy that samples is the reference; it moves once per iteration
            return self.state.step % cfg.dno.iteration_steps == 0
        return self.state.step % cfg.learner.sync_every == 0

    def pushed(self, version: int) -> None:
        self.state.version = version
        self.pushed_versions.append(version)
        del self.pushed_versions[: -(self.cfg.pipeline.max_staleness + 2)]

    def end_of_step(self) -> None:
        """DNO: an iteration ends every dno.iteration_steps steps; its pairs become the replay."""
        cfg = self.cfg
        if not cfg.dno.enabled or self.state.step % cfg.dno.iteration_steps:
            return
        self.state.dno_iteration += 1
        if self.current_iteration_pairs:
            self.previous_iteration_pairs = pa.concat_tables(self.current_iteration_pairs).combine_chunks()
        self.current_iteration_pairs = []
