"""The run's weight pushes, as the pipeline drives them: the sync (cluster/driver/weight_sync.py),
the engines' loads in flight, a failed push retried once with a re-formed group, the payload an
engine that is behind loads before its next batch, and the check at the end of the run that every
engine holds the learner's final weights (refused, WeightsUnverified, when a second push does not
bring them)."""

from __future__ import annotations

import logging
from typing import Any, Callable

import ray

from cluster.driver.flights import Flight, LoadFlight
from cluster.driver.metrics import write_weights_check
from cluster.driver.pools import LearnerGroup, RolloutPool
from cluster.driver.scheduler import StepScheduler
from cluster.driver.weight_sync import PUSH_TOLERANCE, PushCheck, push_gaps

log = logging.getLogger("osp")


class WeightsUnverified(RuntimeError):
    """The run trained to the end, but a rollout actor still did not hold the final weights after
    a second push: the held-out score is refused (heldout.json: "weights_verified": false); the
    final checkpoint is written. `python -m cluster.train` exits 4."""

    def __init__(self, step: int, check: PushCheck, run_dir, heldout_refused: bool):
        refused = "; no held-out score (heldout.json: weights_verified false)" if heldout_refused else ""
        super().__init__(
            f"weights check failed: {', '.join(check.failed) or 'no rollout actor'} not on the learner's step-{step} "
            f"weights after a second push (largest log-prob gap {check.max_gap:.3g}, tolerance {check.tolerance:g})"
            f"{refused}; the trained weights are in the final checkpoint in {run_dir}")


class Pushes:
    def __init__(self, sync: Any, learner: LearnerGroup, rollouts: RolloutPool, scheduler: StepScheduler,
                 inflight: dict[ray.ObjectRef, Flight]):
        """`sync`: cluster/driver/weight_sync's ObjectStoreSync or BroadcastSync; `inflight`: the
        pipeline's refs in flight, where each engine's load is registered (a LoadFlight)."""
        self.sync, self.learner, self.rollouts, self.scheduler, self.inflight = sync, learner, rollouts, scheduler, inflight

    def push(self, version: int) -> dict[str, float]:
        """Send the learner's weights of step `version` to every engine; the loads go in flight."""
        try:
            stats, loads = self.sync.push(version)
        except ray.exceptions.RayError as err:
            if not self.learner.alive():  # the learner (fatal) or a rollout actor (re-form the group, retry once)?
                raise self.learner.failed(err, self.scheduler.step + 1) from err
            log.warning("weight push failed, retrying once with a re-formed group: %s", str(err).splitlines()[0])
            stats, loads = self.sync.push(version)
        for ref in loads:
            self.inflight[ref] = LoadFlight()
        self.scheduler.pushed(version)
        return stats

    def loaded(self, ref: ray.ObjectRef) -> None:
        """An engine's load came back (or failed: it catches up on its next batch)."""
        try:
            ray.get(ref)
        except ray.exceptions.RayError as err:
            log.warning("a rollout actor failed to load new weights (it catches up on its next batch): %s",
                        str(err).splitlines()[0])
            self.sync.invalidate()

    def engines_changed(self) -> None:
        """A rollout actor joined or left: the next push reaches the pool as it is now."""
        self.sync.set_engines(self.rollouts.handles())

    def invalidate(self) -> None:
        """A call failed: a broadcast group re-forms before its next push."""
        self.sync.invalidate()

    def catch_up(self) -> tuple[int, list] | None:
        """(the run's policy version, [ref] of its weights) for a rollout actor that is behind
        (restarted, or added since the last push) to load before sampling; None: nothing to load."""
        payload = self.sync.latest_payload()
        return None if payload is None else (self.scheduler.version, payload)

    def settle(self) -> None:
        """Wait for every load in flight."""
        for ref in [r for r, f in self.inflight.items() if isinstance(f, LoadFlight)]:
            self.inflight.pop(ref)
            self.loaded(ref)

    def check(self, text: tuple[list[int], list[int]], dtype: str) -> PushCheck:
        """Every live engine's per-token log-probs of `text` (prompt, response) against the learner's."""
        live = self.rollouts.live()
        gaps = push_gaps(self.learner.ranks, [r.handle for r in live], *text)
        return PushCheck(dict(zip([r.name for r in live], gaps)), PUSH_TOLERANCE[dtype])

    def verified_final(self, run_dir, answer: Callable[[], list[str] | None], text: tuple[list[int], list[int]],
                       dtype: str) -> tuple[PushCheck, list[str] | None]:
        """The run's end: every rollout actor must hold step N's weights, so a lost or stale push
        shows here, not in a quietly worse held-out score. The held-out answers (`answer()`) are
        taken first and the check follows, so they come from an actor that passed it. A failed
        check (an actor restarted since the last push is back on the SFT weights; a load failed)
        is followed by one more push, then answers and check again. Returns the check and the
        answers (None unless it passed); weights_check.json records it."""
        step = self.scheduler.step
        for pushed_again in (False, True):
            self.settle()
            answers = answer()
            check = self.check(text, dtype)
            if check.verified or pushed_again:
                break
            log.warning("weights check: %s not on the learner's step-%d weights (largest gap %.3g, tolerance %g): "
                        "pushing again", ", ".join(check.failed), step, check.max_gap, check.tolerance)
            self.sync.invalidate()  # a broadcast group re-forms, so a restarted engine joins it
            try:
                self.push(step)
            except ray.exceptions.RayError as err:  # a rollout actor (the learner's failure is raised)
                log.warning("the second push failed: %s", str(err).splitlines()[0])
        write_weights_check(run_dir, step, check, pushed_again)
        return check, answers if check.verified else None
