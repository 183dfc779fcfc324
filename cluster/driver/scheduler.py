"""What the driver does next: how many prompts to sample, which buffered pairs train the next
learner step, and when to push weights. The pairs waiting for the learner (`PairBuffer`) are
the scheduler's own; what is fresh enough, when to push and what a batch holds is the method's
step policy (cluster/methods/: the staleness-bounded loop, or DNO's iterations with replay).

The pipeline asks; this module decides, and is the pipeline's one door to the run's
accounting: the ledger (cluster/driver/ledger.py, the run state's one writer) is the
scheduler's own, told by it what was handed out, judged, trained, pushed, failed or dropped.
Nothing here talks to Ray.

**The pair buffer**: batches stay as the `pa.Table`s the judges produced (their buffers live in
the Ray object store; slicing and concatenating never copies). Pairs too stale to train (made
by a policy older than the staleness bound) are not dropped silently: their prompts are
sampled again.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, deque
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cluster.driver.checkpoint import RunState
from cluster.driver.ledger import PromptLedger
from cluster.methods import Method, StepBatch
from core.config import Config
from core.records import PAIR_SCHEMA

log = logging.getLogger("osp")


class PairBuffer:
    def __init__(self, max_pairs: int, spill_dir: str | None = None):
        self.max_pairs = max_pairs
        self.tables: deque[pa.Table] = deque()
        self.size = 0
        self.spill_dir = Path(spill_dir) if spill_dir else None
        self.spilled = 0  # the next file's number
        if self.spill_dir:
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            # A resumed run (or another run sharing the folder) continues the numbering: the
            # pairs spilled before are kept, not overwritten.
            numbers = [int(n) for f in self.spill_dir.glob("pairs-*.parquet") if (n := f.stem[len("pairs-"):]).isdigit()]
            self.spilled = max(numbers, default=-1) + 1

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




class StepScheduler:
    def __init__(self, cfg: Config, num_prompts: int, state: RunState, rng: random.Random, method: Method):
        """`num_prompts`: the data set's size; `state`: the run state to continue (the ledger's
        from here on); `rng`: the driver's random stream (replays draw from it)."""
        self.cfg = cfg
        self.ledger = PromptLedger(num_prompts, cfg.seed, cfg.data.shuffle, state, cfg.pipeline.max_staleness)
        self.buffer = PairBuffer(cfg.pipeline.buffer_max_pairs, cfg.pipeline.spill_dir)
        self.pairs_per_prompt = method.pairs_per_prompt()
        self.policy = method.step_policy(rng)

    # -- where the run is (the ledger's figures) -------------------------------------------
    @property
    def step(self) -> int:
        return self.ledger.step

    @property
    def version(self) -> int:
        """The policy version the engines were last sent."""
        return self.ledger.version

    @property
    def state(self) -> RunState:
        return self.ledger.state

    @property
    def epoch(self) -> float:
        return self.ledger.epoch

    def take_outcomes(self) -> dict[str, list[int]]:
        """What became of prompts since the last call (the ledger's outcomes; cluster/driver/journal.py)."""
        return self.ledger.take_outcomes()

    def record(self, rng_state: tuple) -> RunState:
        """The run state for a checkpoint (prompts not yet trained are sampled again after a resume)."""
        return self.ledger.record(rng_state, self.cfg.seed)

    # -- sampling -------------------------------------------------------------------------
    def take_prompts(self, n: int) -> list[int]:
        """The next n prompts to sample (requeued ones first); in flight from now on."""
        return self.ledger.hand_out(n)

    def failed(self, prompt_indices: list[int]) -> None:
        """A rollout or judge call failed for good: its prompts are sampled again."""
        self.ledger.failed(prompt_indices)

    def useful_pairs(self, step_running: bool) -> int:
        """Pairs made now that can still train before they go stale (the method's step policy
        says for how many steps), so making more is waste."""
        return self.policy.useful_steps(self.ledger.step, step_running) * self.cfg.learner.pairs_per_step

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

    def judged(self, prompt_indices: list[int], pairs: pa.Table | None) -> None:
        """A judged batch of the prompts `prompt_indices`: its pairs wait in the buffer."""
        made = Counter(pairs["prompt_index"].to_pylist()) if pairs is not None else Counter()
        self.ledger.judged(prompt_indices, made)
        if pairs is not None:
            self.buffer.put(pairs)

    # -- training -------------------------------------------------------------------------
    def next_batch(self) -> StepBatch | None:
        """A learner step's pairs, once enough fresh ones are buffered, or None. Pairs too stale
        to train are dropped first and their prompts requeued (the ledger is told)."""
        oldest = self.policy.oldest_trainable(self.ledger.pushed_versions)
        stale = self.buffer.drop_older_than(oldest)
        if stale:
            prompts = self.ledger.stale(stale, self.pairs_per_prompt)
            log.info("%d pairs older than policy version %d dropped; %d prompts requeued", len(stale), oldest,
                     len(prompts))
        fresh = self.buffer.take(self.policy.fresh_pairs_per_step())
        return None if fresh is None else self.policy.batch(fresh)

    # -- after a step ---------------------------------------------------------------------
    def trained(self, batch: StepBatch) -> int:
        """A learner step finished on `batch`; returns the step's number."""
        return self.ledger.step_trained(batch.fresh_prompt_indices)

    def sampled(self, tokens: int) -> None:
        """Rollout tokens sampled since the previous step."""
        self.ledger.sampled(tokens)

    def push_due(self) -> bool:
        return self.policy.push_due(self.ledger.step)

    def pushed(self, version: int) -> None:
        """The engines were sent the weights of learner step `version`."""
        self.ledger.pushed(version)

    def end_of_step(self) -> None:
        self.policy.end_of_step(self.ledger.step)

    def metrics(self, batch: StepBatch) -> dict[str, float]:
        """What the method reports of a step's batch (DNO: the pairs replayed)."""
        return self.policy.metrics(batch)
