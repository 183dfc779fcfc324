"""Where every prompt handed out is: in flight (being sampled or judged), waiting as pairs in
the buffer, requeued, or done. The run state's accounting, in one place.

A prompt is done when all its pairs are trained, or when judging kept none of them (ties
dropped, DNO's margin). Pairs too stale to train, a failed call, and a checkpoint taken while
a prompt is in flight or waiting all send the prompt back to the queue, so none is skipped
and none is counted done twice.
"""

from __future__ import annotations

from collections import Counter

from cluster.checkpoint import RunState
from cluster.schedule import PromptSchedule


class PromptLedger:
    def __init__(self, num_prompts: int, seed: int, shuffle: bool, state: RunState):
        self.state = state
        self.schedule = PromptSchedule(num_prompts, seed, shuffle, state.next_prompt, state.requeued)
        self.in_flight: Counter[int] = Counter()  # prompt index → times handed out, not yet judged
        self.waiting: Counter[int] = Counter()  # prompt index → its pairs in the buffer

    @property
    def prompts_in_flight(self) -> int:
        return sum(self.in_flight.values())

    @property
    def epoch(self) -> float:
        return self.schedule.epoch

    def hand_out(self, n: int) -> list[int]:
        """The next n prompts to sample (requeued ones first)."""
        indices = self.schedule.take(n)
        self.in_flight.update(indices)
        return indices

    def failed(self, indices: list[int]) -> None:
        """A rollout or judge call failed for good: its prompts are sampled again."""
        self.in_flight -= Counter(indices)
        self.schedule.requeue(indices)

    def judged(self, indices: list[int], pairs_made: Counter[int]) -> None:
        """A judged batch: its pairs go to the buffer; a prompt that kept none is done."""
        self.in_flight -= Counter(indices)
        for index in indices:
            if pairs_made[index] == 0:
                self.state.prompts_done += 1
        self.waiting.update(pairs_made)

    def trained(self, indices: list[int]) -> None:
        """One entry per trained pair: a prompt is done when its last waiting pair trains."""
        for index in indices:
            if self.waiting[index] > 0:
                self.waiting[index] -= 1
                if self.waiting[index] == 0:
                    del self.waiting[index]
                    self.state.prompts_done += 1
        self.state.pairs_trained += len(indices)

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
        return prompts

    def record(self) -> None:
        """Write the data position into the run state for a checkpoint: prompts handed out but
        not yet trained (in flight, or waiting as pairs) are sampled again after a resume."""
        unfinished = list(self.in_flight.elements()) + list(self.waiting)
        self.state.next_prompt = self.schedule.next_prompt
        self.state.requeued = list(self.schedule.requeued) + unfinished
