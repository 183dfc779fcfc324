"""What the driver waits on: each object ref in flight and what it will deliver."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from cluster.engine_pool import Engine


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
