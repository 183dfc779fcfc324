"""Which prompt comes next: the data position of a run, reproducible from two numbers.

Epoch e visits the prompts in a permutation seeded by (seed, e), so position `next_prompt`
alone says where the run is; prompts handed out but never trained (too-stale pairs, a
checkpoint taken while they were in flight) are `requeued` and handed out first. Both
numbers live in the run state, so `--resume` continues at the same place.
"""

from __future__ import annotations

import random


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
