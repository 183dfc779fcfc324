"""The rollout actors as the driver sees them: added, checked when ready, scaled by the
Control actor (`python -m cluster.scale`), and retired.

An engine is usable once its `info()` came back with the driver's stack versions; a scale-up
that lands on a node with other versions is refused (retired) rather than sampling from a
different vLLM. Retiring waits for an engine's running batch, so no prompt is dropped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.pools import Control, make_rollout_actor
from core.config import Config
from core.versions import VersionMismatch, check_versions

log = logging.getLogger("osp")

CONTROL_NAME = "osp-control"
CONTROL_NAMESPACE = "osp"


@dataclass(eq=False)
class Engine:
    """A rollout actor as the driver sees it."""

    handle: Any
    name: str
    ready: bool = False
    retiring: bool = False
    busy: bool = False


class EnginePool:
    def __init__(self, cfg: Config, model_path: str, actor_prefix: str, driver_versions: dict[str, str | None]):
        self.cfg, self.model_path, self.actor_prefix = cfg, model_path, actor_prefix
        self.driver_versions = driver_versions
        self.engines: list[Engine] = []
        self.serial = 0
        self.control = None
        self.last_poll = 0.0

    def start(self) -> list[tuple[ray.ObjectRef, Engine]]:
        """The Control actor and the configured engines; returns each engine's `info()` ref."""
        # On the driver's own node: losing a rollout node must not take the run's control with it.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.control = Control.options(name=CONTROL_NAME, namespace=CONTROL_NAMESPACE, get_if_exists=False,
                                       lifetime=None, scheduling_strategy=here).remote(self.cfg.rollout.num_actors)
        return [self.add() for _ in range(self.cfg.rollout.num_actors)]

    def add(self) -> tuple[ray.ObjectRef, Engine]:
        handle = make_rollout_actor(self.cfg, self.model_path, self.serial, self.actor_prefix)
        engine = Engine(handle, f"rollout-{self.serial}")
        self.serial += 1
        self.engines.append(engine)
        return handle.info.remote(), engine

    def mark_ready(self, engine: Engine, info: dict) -> None:
        """Raises core.versions.VersionMismatch when the engine's node runs another stack."""
        check_versions(self.driver_versions, {engine.name: info["versions"]})
        engine.ready = True

    def joined(self, engine: Engine, info_ref: ray.ObjectRef) -> bool:
        """A started engine's `info()` arrived: it joins the pool unless it failed to start or
        runs other versions than the driver (a scale-up landed on a bad node: go on without it)."""
        try:
            self.mark_ready(engine, ray.get(info_ref))
        except ray.exceptions.RayError as err:
            log.error("rollout actor %s failed to start: %s", engine.name, err)
            self.forget(engine)
            return False
        except VersionMismatch as err:
            log.error("rollout actor %s not used: %s", engine.name, err)
            self.retire(engine)
            return False
        log.info("%s joined (%d rollout actors)", engine.name, len(self.live()))
        return True

    def live(self) -> list[Engine]:
        return [e for e in self.engines if e.ready and not e.retiring]

    def handles(self) -> list[Any]:
        return [e.handle for e in self.live()]

    def retire(self, engine: Engine) -> None:
        if engine in self.engines:
            self.engines.remove(engine)
            ray.kill(engine.handle)

    def forget(self, engine: Engine) -> None:
        """An engine that never started (its actor died in __init__)."""
        if engine in self.engines:
            self.engines.remove(engine)

    def scale(self) -> list[tuple[ray.ObjectRef, Engine]] | None:
        """Follow the Control actor's wanted count (polled every 2 s): start engines, or mark
        the surplus retiring (an idle one goes at once). Returns the new engines' `info()`
        refs, or None when nothing was polled."""
        now = time.monotonic()
        if now - self.last_poll < 2.0:
            return None
        self.last_poll = now
        want = ray.get(self.control.get_rollout_actors.remote())
        have = [e for e in self.engines if not e.retiring]
        added = []
        for _ in range(want - len(have)):
            log.info("scaling up: starting a rollout actor (%d → %d)", len(have), want)
            added.append(self.add())
        for engine in have[want:]:
            log.info("scaling down: retiring %s", engine.name)
            engine.retiring = True
            if not engine.busy:
                self.retire(engine)
        return added

    def shutdown(self) -> None:
        for engine in self.engines:
            ray.kill(engine.handle)
        if self.control is not None:
            ray.kill(self.control)
