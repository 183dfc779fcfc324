"""What the driver waits on: every object ref in flight has a record of what it will deliver,
one class per kind (`Flight`); the pipeline dispatches on the class, and `what` names it in a
stall warning."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import ray

from cluster.driver.pools import Rollout
from cluster.methods import StepBatch


@dataclass
class ReadyFlight:  # a new rollout actor's info(): it can sample
    rollout: Rollout
    what: ClassVar[str] = "ready"


@dataclass
class RolloutFlight:  # a batch's token count; the batch (`table`) stays in the object store for a judge
    rollout: Rollout
    prompt_indices: list[int]
    table: ray.ObjectRef
    started: float = field(default_factory=time.perf_counter)
    what: ClassVar[str] = "rollout"


@dataclass
class JudgeFlight:  # judged pairs and the judge's stats
    prompt_indices: list[int]
    judge: int
    what: ClassVar[str] = "judge"


@dataclass
class StepFlight:  # rank 0's step result; `refs` holds every rank's
    refs: list[ray.ObjectRef]
    batch: StepBatch
    arrow_s: float
    what: ClassVar[str] = "step"


@dataclass
class RankFlight:  # another rank's step result: a failure surfaces at once
    what: ClassVar[str] = "step_rank"


@dataclass
class LoadFlight:  # a rollout actor loading pushed weights
    what: ClassVar[str] = "load"


Flight = ReadyFlight | RolloutFlight | JudgeFlight | StepFlight | RankFlight | LoadFlight
