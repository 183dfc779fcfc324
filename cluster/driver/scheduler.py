"""What the driver does next: how many prompts to sample, which buffered pairs train the next
learner step, when to push weights, and DNO's iterations with their replay. The pairs waiting
for the learner (`PairBuffer`) are the scheduler's own.

The pipeline asks; this module decides. Nothing here talks to Ray. The run's accounting is the
ledger's (cluster/driver/ledger.py): the scheduler tells it what it drops and reads from it the
step and the versions pushed.

**The pair buffer**: batches stay as the `pa.Table`s the judges produced (their buffers live in
the Ray object store; slicing and concatenating never copies). Pairs too stale to train (made
by a policy older than the staleness bound) are not dropped silently: their prompts are
sampled again.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cluster.driver.ledger import PromptLedger
from core.config import Config
from core.records import PAIR_SCHEMA
from judge.pairing import pairs_per_prompt

log = logging.getLogger("osp")


class PairBuffer:
    def __init__(self, max_pairs: int, spill_dir: str | None = None):
        self.max_pairs = max_pairs
        self.tables: deque[pa.Table] = deque()
        self.size = 0
        self.spill_dir = Path(spill_dir) if spill_dir else None
        self.spilled = 0
        if self.spill_dir:
            self.spill_dir.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        return self.size

    def put(self, table: pa.Table) -> None:
        if table is None or table.num_rows == 0:
            return
        self.tables.append(table)
        self.size += table.num_rows
        if self.spill_dir:  # every pair, once, for inspection and offline replay
            pq.write_table(table, self.spill_dir / f"pairs-{self.spilled:06d}.parquet")
            self.spilled += 1

    def drop_older_than(self, oldest_ok: int) -> list[int]:
        """Remove pairs made by a policy version below `oldest_ok`; return their prompt
        indices (once per dropped pair)."""
        kept: deque[pa.Table] = deque()
        dropped: list[int] = []
        for table in self.tables:
            fresh = pc.greater_equal(table["policy_version"], oldest_ok)
            if pc.all(fresh).as_py():
                kept.append(table)
                continue
            dropped += table.filter(pc.invert(fresh))["prompt_index"].to_pylist()
            table = table.filter(fresh)
            if table.num_rows:
                kept.append(table)
        self.tables = kept
        self.size = sum(t.num_rows for t in kept)
        return dropped

    def take(self, n: int) -> pa.Table | None:
        """Exactly n pairs (oldest first), or None if fewer are buffered."""
        if n < 0:
            raise ValueError(f"cannot take {n} pairs")
        if self.size < n:
            return None
        if n == 0:
            return PAIR_SCHEMA.empty_table()
        out, need = [], n
        while need:
            head = self.tables[0]
            if head.num_rows <= need:
                out.append(self.tables.popleft())
                need -= head.num_rows
            else:
                out.append(head.slice(0, need))
                self.tables[0] = head.slice(need)
                need = 0
        self.size -= n
        return pa.concat_tables(out).combine_chunks() if len(out) > 1 else out[0]


def replayed_pairs_per_step(pairs_per_step: int, fraction: float) -> int:
    """DNO's replayed pairs in a step of `pairs_per_step`: the most whose share of the step stays
    within `fraction`, floor(fraction · pairs_per_step). The one rounding rule: the step's fresh
    pairs are the rest, so fresh + replayed = pairs_per_step whenever the previous iteration left
    that many (fewer replayed, and a smaller step, when it left fewer)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must lie in [0, 1), got {fraction}")
    # the epsilon keeps float noise (0.58 · 50 = 28.999999999999996) from dropping a place
    return math.floor(fraction * pairs_per_step + 1e-9)


@dataclass(frozen=True)
class StepBatch:
    """One learner step's pairs: the fresh ones first, then `replayed` DNO replays."""

    pairs: pa.Table
    replayed: int = 0

    @property
    def fresh_prompt_indices(self) -> list[int]:
        """One entry per fresh pair (the ledger counts a prompt done when its last one trains)."""
        return self.pairs.slice(0, self.pairs.num_rows - self.replayed)["prompt_index"].to_pylist()


class StepScheduler:
    def __init__(self, cfg: Config, ledger: PromptLedger, rng: random.Random):
        self.cfg, self.ledger, self.rng = cfg, ledger, rng
        self.buffer = PairBuffer(cfg.pipeline.buffer_max_pairs, cfg.pipeline.spill_dir)
        self.pairs_per_prompt = pairs_per_prompt(cfg.rollout.k, cfg.judge.anchor)
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
            steps = cfg.dno.iteration_steps - self.ledger.step % cfg.dno.iteration_steps - step_running
            return max(steps, 0) * cfg.learner.pairs_per_step
        steps = cfg.pipeline.max_staleness * cfg.learner.sync_every + (not step_running)
        return steps * cfg.learner.pairs_per_step

    def prompts_to_sample(self, step_running: bool) -> int:
        """How many prompts one idle rollout actor should take now (0: back-pressure). Counts
        the buffer and the pairs on their way against both the buffer's room and what the
        remaining steps can use."""
        cfg, per_prompt = self.cfg, self.pairs_per_prompt
        coming = len(self.buffer) + self.ledger.prompts_in_flight * per_prompt
        steps_left = cfg.learner.max_steps - self.ledger.step - step_running
        needed = steps_left * cfg.learner.pairs_per_step - coming
        room = min(self.buffer.max_pairs, self.useful_pairs(step_running)) - coming
        if needed <= 0 or room <= 0:
            return 0
        if room < per_prompt:
            # A prompt yields up to per_prompt pairs, fewer when the judge drops some (ties,
            # DNO's margin): when the next step still lacks pairs and nothing on its way will
            # bring them, one more prompt, or the run would wait forever.
            return 1 if coming < cfg.learner.pairs_per_step else 0
        return min(cfg.rollout.prompts_per_batch, max(1, room // per_prompt))

    def add_pairs(self, prompt_indices: list[int], pairs: pa.Table | None) -> None:
        """A judged batch of the prompts `prompt_indices`: its pairs wait in the buffer."""
        made = Counter(pairs["prompt_index"].to_pylist()) if pairs is not None else Counter()
        self.ledger.judged(prompt_indices, made)
        if pairs is not None:
            self.buffer.put(pairs)

    # -- training -------------------------------------------------------------------------
    def oldest_trainable_version(self) -> int:
        pushed = self.ledger.pushed_versions
        if self.cfg.dno.enabled:  # DNO-Prct: iteration t trains only on pairs π_t sampled
            return pushed[-1]
        ms = self.cfg.pipeline.max_staleness
        return pushed[-1 - ms] if len(pushed) > ms else pushed[0]

    def next_batch(self) -> StepBatch | None:
        """A learner step's pairs, once enough fresh ones are buffered, or None. Pairs too stale
        to train are dropped first and their prompts requeued (the ledger is told)."""
        oldest = self.oldest_trainable_version()
        stale = self.buffer.drop_older_than(oldest)
        if stale:
            prompts = self.ledger.stale(stale, self.pairs_per_prompt)
            log.info("%d pairs older than policy version %d dropped; %d prompts requeued", len(stale), oldest,
                     len(prompts))
        batch = self.buffer.take(self.fresh_pairs_per_step())
        return None if batch is None else self.with_replay(batch)

    def fresh_pairs_per_step(self) -> int:
        """A step's pairs from the buffer: all of them, less DNO's places for replayed pairs
        (`replayed_pairs_per_step`, once an iteration has ended)."""
        return self.cfg.learner.pairs_per_step - self.replay_places()

    def replay_places(self) -> int:
        """DNO: a step's places for the previous iteration's pairs (0 before one has ended)."""
        cfg = self.cfg
        if not cfg.dno.enabled or self.previous_iteration_pairs is None:
            return 0
        return replayed_pairs_per_step(cfg.learner.pairs_per_step, cfg.dno.replay_fraction)

    def with_replay(self, batch: pa.Table) -> StepBatch:
        """DNO: the fresh batch plus previous-iteration pairs in the step's replay places, drawn
        without replacement and tagged "replay" (they keep the reference they were made with:
        the log-probs of π_{t−1}, the iterate that sampled them)."""
        if not self.cfg.dno.enabled:
            return StepBatch(batch)
        self.current_iteration_pairs.append(batch)
        previous = self.previous_iteration_pairs
        places = self.replay_places()
        if not places or previous is None or previous.num_rows == 0:
            return StepBatch(batch)
        picks = self.rng.sample(range(previous.num_rows), min(places, previous.num_rows))
        old = previous.take(picks)
        i = old.schema.get_field_index("source")
        old = old.set_column(i, old.schema.field(i), pa.array(["replay"] * old.num_rows, pa.string()))
        return StepBatch(pa.concat_tables([batch, old]).combine_chunks(), len(picks))

    # -- after a step ---------------------------------------------------------------------
    def push_due(self) -> bool:
        cfg, step = self.cfg, self.ledger.step
        if cfg.dno.enabled:  # DNO: the policy that samples is the reference; it moves once per iteration
            return step % cfg.dno.iteration_steps == 0
        return step % cfg.learner.sync_every == 0

    def end_of_step(self) -> None:
        """DNO: an iteration ends every dno.iteration_steps steps; its pairs become the replay."""
        cfg = self.cfg
        if not cfg.dno.enabled or self.ledger.step % cfg.dno.iteration_steps:
            return
        self.ledger.iteration_ended()
        if self.current_iteration_pairs:
            self.previous_iteration_pairs = pa.concat_tables(self.current_iteration_pairs).combine_chunks()
        self.current_iteration_pairs = []
