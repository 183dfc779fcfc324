"""The run's accounting in one place: which prompt comes next, where every prompt handed out
is, what was trained, which policy versions were pushed, and the calls in flight. `PromptLedger`
is the only writer of the run state (cluster/driver/checkpoint.RunState); the rest of the
driver asks it.

**The data order** (`PromptSchedule`): epoch e visits the prompts in a permutation seeded by
(seed, e), so position `next_prompt` alone says where the run is; prompts handed out but never
trained are `requeued` and handed out first. Both numbers live in the run state, so `--resume`
continues at the same place.

**A prompt's life**: handed out (in flight while it is sampled and judged), then waiting as
pairs in the buffer, then done when all its pairs are trained, or at once when judging kept
none of them (ties dropped, a method's margin). Pairs too stale to train, a failed call, and a
checkpoint taken while a prompt is in flight or waiting all send the prompt back to the queue,
so none is skipped and none is counted done twice.

**What became of each prompt** is kept too (`outcomes`, taken by the driver after each learner
step into the run's journal, cluster/driver/journal.py): done because its pairs trained or
because judging kept none, or requeued because its pairs went stale or its call failed.

**The policy version**: the learner step whose weights the rollout engines were last sent.
Pairs carry the version that sampled them; the scheduler (cluster/driver/scheduler.py) reads
`pushed_versions` to decide which are still fresh enough to train.

The scheduler owns the ledger (cluster/driver/scheduler.py): the pipeline asks the scheduler,
which tells the ledger.
"""

from __future__ import annotations

import random
from collections import Counter

from cluster.driver.checkpoint import RunState


class PromptSchedule:
    def __init__(self, num_prompts: int, seed: int, shuffle: bool = True, next_prompt: int = 0,
                 requeued: list[int] | None = None):
        if num_prompts < 1:
            raise ValueError("the prompt set is empty")
        self.num_prompts, self.seed, self.shuffle = num_prompts, seed, shuffle
        self.next_prompt = next_prompt
        self.requeued = list(requeued or [])
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(self.num_prompts))
            if self.shuffle:
                random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._orders = {epoch: order}  # only the current epoch is ever needed
        return self._orders[epoch]

    def index_at(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_prompts)
        return self._order(epoch)[offset]

    def take(self, n: int) -> list[int]:
        """The next n prompt indices: requeued ones first, then the data order."""
        out = self.requeued[:n]
        self.requeued = self.requeued[n:]
        while len(out) < n:
            out.append(self.index_at(self.next_prompt))
            self.next_prompt += 1
        return out

    def requeue(self, indices: list[int]) -> None:
        self.requeued.extend(indices)

    @property
    def epoch(self) -> float:
        return self.next_prompt / self.num_prompts


class PromptLedger:
    def __init__(self, num_prompts: int, seed: int, shuffle: bool, state: RunState, max_staleness: int = 1):
        self.state = state
        self.schedule = PromptSchedule(num_prompts, seed, shuffle, state.next_prompt, state.requeued)
        self.in_flight: Counter[int] = Counter()  # prompt index → times handed out, not yet judged
        self.waiting: Counter[int] = Counter()  # prompt index → its pairs in the buffer
        # Policy versions sent to the engines, oldest first: as many as staleness can reach back.
        self.pushed_versions = [state.version]
        self.keep_versions = max_staleness + 2
        self.outcomes = _no_outcomes()

    # -- where the run is -----------------------------------------------------------------
    @property
    def step(self) -> int:
        return self.state.step

    @property
    def version(self) -> int:
        return self.state.version

    @property
    def prompts_in_flight(self) -> int:
        return sum(self.in_flight.values())

    @property
    def epoch(self) -> float:
        return self.schedule.epoch

    # -- a prompt's life ------------------------------------------------------------------
    def hand_out(self, n: int) -> list[int]:
        """The next n prompts to sample (requeued ones first)."""
        indices = self.schedule.take(n)
        self.in_flight.update(indices)
        return indices

    def failed(self, indices: list[int]) -> None:
        """A rollout or judge call failed for good: its prompts are sampled again."""
        self.in_flight -= Counter(indices)
        self.schedule.requeue(indices)
        self.outcomes["requeued_failed"] += indices

    def judged(self, indices: list[int], pairs_made: Counter[int]) -> None:
        """A judged batch: its pairs go to the buffer; a prompt that kept none is done."""
        self.in_flight -= Counter(indices)
        for index in indices:
            if pairs_made[index] == 0:
                self.state.prompts_done += 1
                self.outcomes["no_pair_kept"].append(index)
        self.waiting.update(pairs_made)

    def stale(self, indices: list[int], pairs_per_prompt: int) -> list[int]:
        """Pairs dropped as too stale (one entry per pair): their prompts are requeued. A
        prompt's pairs share one version, so its waiting pairs go together; a prompt handed
        out twice (a later epoch) is requeued once per handing-out. Returns the requeued."""
        prompts = []
        for index, count in sorted(Counter(indices).items()):
            prompts += [index] * -(-count // pairs_per_prompt)
            self.waiting[index] -= count
            if self.waiting[index] <= 0:
                del self.waiting[index]
        self.state.pairs_regenerated += len(indices)
        self.schedule.requeue(prompts)
        self.outcomes["requeued_stale"] += prompts
        return prompts

    # -- steps and pushes -----------------------------------------------------------------
    def step_trained(self, indices: list[int]) -> int:
        """A learner step finished. `indices`: one entry per fresh pair it trained (a prompt is
        done when its last waiting pair trains; replayed pairs are not listed). Returns
        the step's number."""
        for index in indices:
            if self.waiting[index] > 0:
                self.waiting[index] -= 1
                if self.waiting[index] == 0:
                    del self.waiting[index]
                    self.state.prompts_done += 1
                    self.outcomes["trained"].append(index)
        self.state.pairs_trained += len(indices)
        self.state.step += 1
        return self.state.step

    def sampled(self, tokens: int) -> None:
        """Rollout tokens sampled since the previous step."""
        self.state.tokens_generated += tokens

    def pushed(self, version: int) -> None:
        """The engines were sent the weights of learner step `version`."""
        self.state.version = version
        self.pushed_versions.append(version)
        del self.pushed_versions[: -self.keep_versions]

    def take_outcomes(self) -> dict[str, list[int]]:
        """What became of prompts since the last call: done (`trained`: its last pair trained;
        `no_pair_kept`: judging kept none) or requeued (`requeued_stale`, `requeued_failed`),
        one entry per event."""
        out, self.outcomes = self.outcomes, _no_outcomes()
        return out

    def record(self, rng_state: tuple, seed: int) -> RunState:
        """The run state for a checkpoint: the data position (prompts handed out but not yet
        trained, in flight or waiting as pairs, are sampled again after a resume), the driver's
        random state and the seed."""
        unfinished = list(self.in_flight.elements()) + list(self.waiting)
        self.state.next_prompt = self.schedule.next_prompt
        self.state.requeued = list(self.schedule.requeued) + unfinished
        self.state.rng = list(rng_state)
        self.state.seed = seed
        return self.state


def _no_outcomes() -> dict[str, list[int]]:
    return {"trained": [], "no_pair_kept": [], "requeued_stale": [], "requeued_failed": []}
