"""The actors as the driver sees them: the rollout pool, the judge pool and the learner group.

- `RolloutPool`: rollout actors added, checked when ready, scaled by the Control actor
  (`python -m cluster.scale`) and retired. A rollout actor is usable once its `info()` came
  back with the driver's stack versions; a scale-up that lands on a node with other versions
  is refused (retired) rather than sampling from a different vLLM. Retiring waits for a
  running batch, so no prompt is dropped.
- `JudgePool`: each rollout batch goes to the least-loaded judge, by object ref (the judge
  reads the batch from the object store; it never passes through the driver).
- `LearnerGroup`: the learner ranks as one thing: one DeepSpeed group in one placement group,
  fed a step's pairs as Arrow shards, saved and loaded together. A rank that dies fails the
  run with a message that says how to continue it (`--resume` from the last checkpoint).
How each actor is created (names, resources, restarts, placement) is cluster/driver/actors.py.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray

from cluster.capacity.plan import Plan
from cluster.data.prompts import Prompt
from cluster.driver import checkpoint as ckpt
from cluster.driver.actors import Control, make_judge_actor, make_learner_group, make_rollout_actor, on_this_node, share
from cluster.methods import Method
from core.config import Config
from core.versions import VersionMismatch, check_versions

log = logging.getLogger("osp")



CONTROL_NAME = "osp-control"
CONTROL_NAMESPACE = "osp"


@dataclass(eq=False)
class Rollout:
    """A rollout actor as the driver sees it: its handle, its name, and whether it is ready,
    retiring or sampling a batch."""

    handle: Any
    name: str
    ready: bool = False
    retiring: bool = False
    busy: bool = False


class RolloutPool:
    def __init__(self, cfg: Config, model_ref: str | None, actor_prefix: str, driver_versions: dict[str, str | None],
                 plan: Plan | None = None):
        """`model_ref`: the run's pinned model, resolved by each actor on its node; `plan`: where
        the configured rollout actors go (cluster/capacity/plan.py); actors added later by scaling
        go where Ray finds room."""
        self.cfg, self.model_ref, self.actor_prefix = cfg, model_ref, actor_prefix
        self.driver_versions, self.plan = driver_versions, plan
        self.members: list[Rollout] = []
        self.serial = 0
        self.control = None
        self.last_poll = 0.0

    def start(self) -> list[tuple[ray.ObjectRef, Rollout]]:
        """The Control actor and the configured rollout actors; returns each one's `info()` ref."""
        self.control = Control.options(name=CONTROL_NAME, namespace=CONTROL_NAMESPACE, get_if_exists=False,
                                       lifetime=None, scheduling_strategy=on_this_node()).remote(self.cfg.rollout.num_actors)
        return [self.add() for _ in range(self.cfg.rollout.num_actors)]

    def add(self) -> tuple[ray.ObjectRef, Rollout]:
        node = self.plan.node_id(f"rollout-{self.serial}") if self.plan else None
        handle = make_rollout_actor(self.cfg, self.model_ref, self.serial, self.actor_prefix, node)
        rollout = Rollout(handle, f"rollout-{self.serial}")
        self.serial += 1
        self.members.append(rollout)
        return handle.info.remote(), rollout

    def mark_ready(self, rollout: Rollout, info: dict) -> None:
        """Raises core.versions.VersionMismatch when the actor's node runs another stack."""
        check_versions(self.driver_versions, {rollout.name: info["versions"]})
        rollout.ready = True

    def joined(self, rollout: Rollout, info_ref: ray.ObjectRef) -> bool:
        """A started rollout actor's `info()` arrived: it joins the pool unless it failed to start or
        runs other versions than the driver (a scale-up landed on a bad node: go on without it)."""
        try:
            self.mark_ready(rollout, ray.get(info_ref))
        except ray.exceptions.RayError as err:
            log.error("rollout actor %s failed to start: %s", rollout.name, err)
            self.forget(rollout)
            return False
        except VersionMismatch as err:
            log.error("rollout actor %s not used: %s", rollout.name, err)
            self.retire(rollout)
            return False
        log.info("%s joined (%d rollout actors)", rollout.name, len(self.live()))
        return True

    def live(self) -> list[Rollout]:
        return [r for r in self.members if r.ready and not r.retiring]

    def idle(self) -> list[Rollout]:
        """Live rollout actors sampling nothing now."""
        return [r for r in self.live() if not r.busy]

    def sampling(self, rollout: Rollout) -> None:
        """`rollout` was sent a batch."""
        rollout.busy = True

    def returned(self, rollout: Rollout) -> None:
        """`rollout`'s batch came back (or failed): it is idle again, or goes if it was retiring."""
        rollout.busy = False
        if rollout.retiring:
            self.retire(rollout)

    def handles(self) -> list[Any]:
        return [r.handle for r in self.live()]

    def retire(self, rollout: Rollout) -> None:
        if rollout in self.members:
            self.members.remove(rollout)
            ray.kill(rollout.handle)

    def forget(self, rollout: Rollout) -> None:
        """A rollout actor that never started (it died in __init__)."""
        if rollout in self.members:
            self.members.remove(rollout)

    def scale(self) -> list[tuple[ray.ObjectRef, Rollout]] | None:
        """Follow the Control actor's wanted count (polled every 2 s): start rollout actors, or
        mark the surplus retiring (an idle one goes at once). Returns the new ones' `info()`
        refs, or None when nothing was polled."""
        now = time.monotonic()
        if now - self.last_poll < 2.0:
            return None
        self.last_poll = now
        want = ray.get(self.control.get_rollout_actors.remote())
        have = [r for r in self.members if not r.retiring]
        added = []
        for _ in range(want - len(have)):
            log.info("scaling up: starting a rollout actor (%d → %d)", len(have), want)
            added.append(self.add())
        for rollout in have[want:]:
            log.info("scaling down: retiring %s", rollout.name)
            rollout.retiring = True
            if not rollout.busy:
                self.retire(rollout)
        return added

    def shutdown(self) -> None:
        for rollout in self.members:
            ray.kill(rollout.handle)
        if self.control is not None:
            ray.kill(self.control)


class JudgePool:
    def __init__(self, cfg: Config, method: Method, model_ref: str | None, prompts: tuple[Prompt, ...], prefix: str,
                 plan: Plan | None = None):
        # Prompt text → its IFEval instructions: the verifier judge's input, and the pass rate
        # of fresh samples for any judge kind. Held by a named actor that the judges (restarted
        # ones too) fetch it from: too big to travel inline in each constructor.
        instructions = {p.text: p.instructions.to_json() for p in prompts if p.instructions is not None}
        table = f"{prefix}/instructions"
        self.table = share(table, instructions) if instructions else None
        self.judges = [make_judge_actor(cfg, method, model_ref, i, table if instructions else None, prefix,
                                        plan.node_id(f"judge-{i}") if plan else None)
                       for i in range(cfg.judge.num_actors)]
        self.load = [0] * len(self.judges)
        log.info("judge %s, method %s (pairs: %s): %d comparisons per prompt of K=%d, %d pairs kept at most",
                 cfg.judge.kind, method.name, method.source, method.comparisons_per_prompt(), cfg.rollout.k,
                 method.pairs_per_prompt())
        self.empty_in_a_row = 0  # judged batches in a row that kept no pair

    def roles(self) -> list[tuple[str, Any]]:
        """(role, handle) of each judge, named as their actors are (cluster.driver.actors)."""
        return [(f"judge-{i}", j) for i, j in enumerate(self.judges)]

    def score(self, rollout_ref: ray.ObjectRef) -> tuple[ray.ObjectRef, int]:
        """Send a rollout batch to the least-loaded judge: (its result ref, the judge's index)."""
        judge = min(range(len(self.judges)), key=self.load.__getitem__)
        self.load[judge] += 1
        return self.judges[judge].score.remote(rollout_ref), judge

    def done(self, judge: int, kept_pairs: bool) -> None:
        """A judge call returned; warn every 20 batches in a row that kept no pair (a judge that
        keeps nothing starves the run)."""
        self.load[judge] -= 1
        self.empty_in_a_row = 0 if kept_pairs else self.empty_in_a_row + 1
        if self.empty_in_a_row and self.empty_in_a_row % 20 == 0:
            log.warning("the last %d judged batches kept no pair (judge.drop_ties drops exact ties; method=dno keeps a "
                        "pair only above dno.margin): is the judge able to tell these answers apart?", self.empty_in_a_row)

    def shutdown(self) -> None:
        for judge in self.judges + ([self.table] if self.table is not None else []):
            ray.kill(judge)


class LearnerFailed(RuntimeError):
    """A learner rank died or raised: the run stops, resumable from the last checkpoint."""


class LearnerGroup:
    def __init__(self, cfg: Config, method: Method, model_ref: str | None, run_dir: Path, prefix: str,
                 plan: Plan | None = None):
        self.run_dir = run_dir
        nodes = [plan.node_id(f"learner-{i}") for i in range(cfg.learner.num_ranks)] if plan else None
        self.ranks, self.placement_group = make_learner_group(cfg, method, model_ref, prefix=prefix, node_ids=nodes)

    def roles(self) -> list[tuple[str, Any]]:
        """(role, handle) of each rank, named as their actors are (cluster.driver.actors)."""
        return [(f"learner-{i}", r) for i, r in enumerate(self.ranks)]

    def start_step(self, batch: pa.Table, probe: pa.Table | None) -> list[ray.ObjectRef]:
        """One learner step on `batch`, split into equal contiguous shards (pairs_per_step is a
        multiple of the rank count). Each shard is put once here and passed wrapped, so each
        rank fetches its own (and times it). `probe`: a fixed batch whose loss is logged.
        Every rank is told how many of the step's pairs have a verdict (p ≠ 0.5): the loss is
        their mean, so ties, on whichever rank, neither train nor dilute the step."""
        shards = [[ray.put(shard)] for shard in _split(batch, len(self.ranks))]
        probes = [[ray.put(p)] for p in _split(probe, len(self.ranks))] if probe is not None else [None] * len(self.ranks)
        decided = int(pc.sum(pc.not_equal(batch["strength"], 0.5)).as_py() or 0)
        return [rank.train_step.remote(shard, p, decided) for rank, shard, p in zip(self.ranks, shards, probes)]

    def results(self, refs: list[ray.ObjectRef], step: int) -> list[dict[str, float]]:
        try:
            return ray.get(refs)
        except ray.exceptions.RayError as err:
            raise self.failed(err, step) from err

    def alive(self, timeout: float = 60) -> bool:
        try:
            ray.get([r.info.remote() for r in self.ranks], timeout=timeout)
            return True
        except Exception:
            return False

    def load(self, checkpoint: Path) -> None:
        ray.get([r.load_checkpoint.remote(str(checkpoint)) for r in self.ranks])

    def save(self, folder: Path, step: int, merged: bool = True) -> None:
        """Every rank writes its part of the checkpoint into `folder` (learner/rank.py);
        `merged`: a LoRA run's merged model too."""
        try:
            ray.get([r.save_checkpoint.remote(str(folder), {"step": step}, merged) for r in self.ranks])
        except ray.exceptions.RayError as err:  # a rank (or its node) died while saving
            raise self.failed(err, step, "saving its checkpoint") from err

    def failed(self, err: Exception, step: int, doing: str = "") -> LearnerFailed:
        try:
            latest = ckpt.latest_checkpoint(self.run_dir)
        except FileNotFoundError:
            latest = None
        where = f"the last checkpoint is {latest}" if latest else "no checkpoint was written yet"
        during = f" ({doing})" if doing else ""
        return LearnerFailed(f"a learner rank failed at step {step}{during}: {str(err).splitlines()[0]}\n"
                             f"The run stops ({where}); continue it with --resume.")

    def shutdown(self) -> None:
        for rank in self.ranks:
            ray.kill(rank)
        ray.util.remove_placement_group(self.placement_group)


def _split(table: pa.Table, parts: int) -> list[pa.Table]:
    size = table.num_rows // parts
    return [table.slice(i * size, size) for i in range(parts)]
