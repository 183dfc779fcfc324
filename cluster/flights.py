"""What the driver waits on: each object ref in flight and what it will deliver."""

from __future__ import annotations

import enum
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cluster.engine_pool import Engine

log = logging.getLogger("osp")


class Flight(enum.Enum):
    """What an object ref the driver waits on will deliver."""

    READY = "ready"  # a new rollout actor's info(): it can sample
    ROLLOUT = "rollout"  # a batch of K responses per prompt
    JUDGE = "judge"  # judged pairs
    STEP = "step"  # learner rank 0's step result (the others': STEP_RANK)
    STEP_RANK = "step_rank"
    LOAD = "load"  # an engine loaded pushed weights


@dataclass
class Inflight:
    kind: Flight
    prompt_indices: list[int] = field(default_factory=list)
    engine: Engine | None = None
    judge: int = -1
    started: float = field(default_factory=time.perf_counter)
    payload: Any = None


class StallWatch:
    """Says so when nothing in flight has come back for `after_s` seconds (again every
    `after_s` while it lasts). The usual cause on a cluster is a lost node: Ray keeps its
    actors RESTARTING until a node with their resources is back, and the run waits for them."""

    def __init__(self, resources: dict[str, dict[str, float]], after_s: float = 120.0, clock=time.monotonic):
        self.resources, self.after_s, self.clock = resources, after_s, clock
        self.last_arrival = self.last_warning = clock()

    def tick(self, arrived: bool, inflight: dict[Any, Inflight]) -> str | None:
        """Call once per wait; returns the warning it logged, if any."""
        now = self.clock()
        if arrived:
            self.last_arrival = now
            return None
        if now - self.last_arrival < self.after_s or now - self.last_warning < self.after_s:
            return None
        self.last_warning = now
        waiting = Counter(f.kind.value for f in inflight.values())
        asks = "; ".join(f"{role} {needs}" for role, needs in self.resources.items())
        message = (f"nothing has come back for {now - self.last_arrival:.0f}s; waiting on "
                   + ", ".join(f"{n} {kind}" for kind, n in sorted(waiting.items()))
                   + f". If a node was lost, Ray restarts its actors once a node with their resources is back "
                   f"({asks}); `ray status` shows what the cluster has.")
        log.warning("%s", message)
        return message
