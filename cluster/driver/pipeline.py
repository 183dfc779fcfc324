"""The asynchronous OSP loop, driven from one place.

    prompts ─► rollout actors ─► judge actors ─► pair buffer ─► learner ranks
                     ▲                                               │
                     └──────────── weight push (every sync_every) ◄──┘

The driver never blocks on one component: it keeps every rollout actor busy while the buffer
has room (back-pressure), hands each finished rollout batch (an object ref; the Arrow table
never passes through the driver, which receives only its token count) to the least-loaded
judge, and starts a learner step as soon as one step's worth of fresh pairs is buffered. So
rollout for step t+1 overlaps learning on step t, bounded by `pipeline.max_staleness` (in
weight pushes).

The pieces (docs/architecture.md): the pools (own their actors' busy/retiring state), the
scheduler (the one door to the run's accounting, its ledger), the flights (every ref waited on),
the method (cluster/methods/), the pushes, the metrics window and the journal.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid

import pyarrow as pa
import ray

from cluster.capacity.nodes import nodes_from_ray
from cluster.capacity.plan import Plan, plan_run
from cluster.driver import checkpoint as ckpt
from cluster.driver.flights import Flight, JudgeFlight, LoadFlight, RankFlight, ReadyFlight, RolloutFlight, StepFlight
from cluster.driver.journal import Journal
from cluster.driver.metrics import (
    MetricsLogger,
    StepWindow,
    format_line,
    memory_figures,
    run_metrics,
    step_metrics,
    write_memory_report,
)
from cluster.driver.pools import JudgePool, LearnerGroup, RolloutPool
from cluster.driver.progress import StallWatch
from cluster.driver.pushes import Pushes, WeightsUnverified
from cluster.driver.scheduler import StepScheduler
from cluster.driver.weight_sync import make_weight_sync
from cluster.evaluation import heldout
from cluster.methods import method_of
from core.versions import check_versions, installed

log = logging.getLogger("osp")


class Pipeline:
    def __init__(self, spec, state: ckpt.RunState, progress=None):
        """`spec`: the resolved run (cluster/run.RunSpec); `state`: the run state to continue
        (the ledger's from here on); `progress`: callable(step, max_steps, metrics)."""
        cfg = self.cfg = spec.cfg
        self.spec, self.run_dir = spec, spec.run_dir
        self.heldout_sft: list[str] | None = None  # the SFT model's held-out answers, before step 1
        self.progress = progress or (lambda step, max_steps, metrics: log.info(format_line(step, max_steps, metrics)))
        self.rng = random.Random(cfg.seed)
        if state.rng is not None:
            self.rng.setstate((state.rng[0], tuple(state.rng[1]), state.rng[2]))
        self.method = method_of(cfg)
        self.scheduler = StepScheduler(cfg, len(spec.prompts), state, self.rng, self.method)
        self.inflight: dict[ray.ObjectRef, Flight] = {}
        # Actors are named `<run folder>-<4 hex>/<role>-<i>` (e.g. default-3f2a/rollout-0): readable in
        # the dashboard, unique per start so a resumed run never waits for the old names to free.
        self.actor_prefix = f"{spec.run_dir.name}-{uuid.uuid4().hex[:4]}"
        self.driver_versions = installed()  # every actor's node must run these (core/versions.py)
        self.rollouts = RolloutPool(cfg, spec.model_ref, self.actor_prefix, self.driver_versions)
        self.judges: JudgePool | None = None
        self.learner: LearnerGroup | None = None
        self.step_running = False
        self.window = StepWindow()
        self.last_step_end: float | None = None  # perf_counter when the previous step's result arrived
        self.probe: pa.Table | None = None  # a fixed batch: its loss is logged every probe_every steps
        self.failures = 0
        self.stall = StallWatch(cfg.actor_resources())
        self.metrics = MetricsLogger(spec.run_dir, spec.run_dir.name, cfg.metrics.trackers, cfg.metrics.ray_metrics,
                                     resume_step=state.step, config=cfg.to_dict())
        self.journal = Journal(spec.run_dir, state.step)  # what each step trained (journal.jsonl)

    # -- start-up --------------------------------------------------------------------------
    def start(self) -> None:
        cfg, spec = self.cfg, self.spec
        t0 = time.perf_counter()
        plan = self._plan()
        self.rollouts.plan = plan
        starting = self.rollouts.start()
        self.judges = JudgePool(cfg, self.method, spec.model_ref, spec.prompts, self.actor_prefix, plan)
        self.learner = LearnerGroup(cfg, self.method, spec.model_ref, spec.run_dir, self.actor_prefix, plan)
        # Judges and ranks: wait here (a bad model or config fails before any sampling).
        roles = self.judges.roles() + self.learner.roles()
        infos = ray.get([handle.info.remote() for _, handle in roles])
        check_versions(self.driver_versions, {name: info["versions"] for (name, _), info in zip(roles, infos)})
        method, payload = cfg.weight_sync.method, cfg.weight_sync.payload  # resolved by cluster/run.build_run
        if spec.resume_from is not None:
            self.learner.load(spec.resume_from)
            log.info("resumed learner state from %s (step %d)", spec.resume_from, self.scheduler.step)
        for ref, rollout in starting:
            self.rollouts.mark_ready(rollout, ray.get(ref))
        if spec.eval_prompts:  # the rollout actors still hold the SFT weights: the baseline
            self.heldout_sft = self._heldout("SFT")
        self.pushes = Pushes(make_weight_sync(method, self.learner.ranks, self.rollouts.handles(), payload),
                             self.learner, self.rollouts, self.scheduler, self.inflight)
        if self.scheduler.step > 0:  # rollout actors start from the SFT weights: bring them to the run's version
            self.pushes.push(self.scheduler.version)
        log.info("actors up in %.1fs: %d rollout, %d judge, %d learner ranks, named %s/…; weight sync: %s",
                 time.perf_counter() - t0, len(self.rollouts.members), len(self.judges.judges),
                 len(self.learner.ranks), self.actor_prefix, f"{method} ({payload})")

    def _plan(self) -> Plan:
        """The run's plan on the cluster it joined (cluster/capacity/plan.py): refused (PlanRefused,
        a ConfigError) before any actor starts if it does not fit; written to plan.json."""
        plan = plan_run(self.cfg, self.spec.model_path, nodes_from_ray())
        for line in plan.table().splitlines():
            log.info("plan: %s", line)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "plan.json").write_text(json.dumps(plan.to_json(), indent=1) + "\n")
        return plan.check()

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> ckpt.RunState:
        try:
            while self.scheduler.step < self.cfg.learner.max_steps:
                self._scale()
                self._maybe_start_step()  # first: it may requeue stale prompts to dispatch
                self._dispatch_rollouts()
                if not self.inflight:  # nothing can make progress: a bug, not a wait
                    raise RuntimeError("pipeline stalled: nothing in flight and no learner step possible")
                ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=1.0)
                self.stall.tick(bool(ready), [f.what for f in self.inflight.values()])
                for ref in ready:
                    self._arrived(ref, self.inflight.pop(ref))
            # The run ends with the engines on step N's weights (not the last push's, whatever
            # sync_every or DNO's iteration): the held-out answers are step N's; a resume starts there.
            if self.scheduler.version != self.scheduler.step:
                self.pushes.push(self.scheduler.step)
            step = self.scheduler.step
            check, final_answers = self.pushes.verified_final(
                self.run_dir, lambda: self._heldout(f"step {step}") if self.spec.eval_prompts else None,
                (list(self.spec.prompts[0].tokens), list(self.spec.prompts[-1].tokens)[-16:]), self.cfg.model.dtype)
            if self.spec.eval_prompts:
                heldout.write_result(self.run_dir, self.scheduler.step, list(self.spec.eval_prompts), self.heldout_sft,
                                     final_answers, self.cfg.seed)
            self._memory_report()
            self._checkpoint(final=True)
            if not check.verified:
                raise WeightsUnverified(self.scheduler.step, check, self.run_dir, bool(self.spec.eval_prompts))
        finally:
            self.metrics.close()
            self.journal.close()
        return self.scheduler.state

    def _arrived(self, ref: ray.ObjectRef, flight: Flight) -> None:
        match flight:
            case ReadyFlight():
                if self.rollouts.joined(flight.rollout, ref):
                    self.pushes.engines_changed()
            case RolloutFlight():
                self._on_rollout(ref, flight)
            case JudgeFlight():
                self._on_judge(ref, flight)
            case StepFlight():
                self._on_step(ref, flight)
            case RankFlight():
                self.learner.results([ref], self.scheduler.step + 1)
            case LoadFlight():
                self.pushes.loaded(ref)

    # -- rollouts and judging --------------------------------------------------------------
    def _dispatch_rollouts(self) -> None:
        for rollout in self.rollouts.idle():
            n = self.scheduler.prompts_to_sample(self.step_running)
            if n == 0:
                return  # back-pressure: the buffer (with what is on its way) is full
            indices = self.scheduler.take_prompts(n)
            requests = [self.spec.prompts[i].request(i) for i in indices]
            table, counts = rollout.handle.generate.remote(requests, self.pushes.catch_up())
            self.rollouts.sampling(rollout)
            self.inflight[counts] = RolloutFlight(rollout, indices, table)

    def _on_rollout(self, ref, flight: RolloutFlight) -> None:
        self.rollouts.returned(flight.rollout)
        try:
            counts = ray.get(ref)  # tokens and sampling seconds; the table stays in the object store
        except ray.exceptions.RayError as err:
            self._failed("rollout", flight.prompt_indices, err)
            return
        self.window.rollout(counts["tokens"], time.perf_counter() - flight.started, counts["sampling_s"])
        out, judge = self.judges.score(flight.table)
        self.inflight[out] = JudgeFlight(flight.prompt_indices, judge)

    def _on_judge(self, ref, flight: JudgeFlight) -> None:
        try:
            table, stats = ray.get(ref)
        except ray.exceptions.RayError as err:
            self.judges.done(flight.judge, kept_pairs=True)
            self._failed("judge", flight.prompt_indices, err)
            return
        self.judges.done(flight.judge, kept_pairs=table is not None)
        self.window.judged(stats)
        self.scheduler.judged(flight.prompt_indices, table)

    def _failed(self, kind: str, prompt_indices: list[int], err: Exception) -> None:
        """A rollout or judge call failed for good (Ray already retried restarts): its prompts
        are requeued. Lost weights whose owner, learner rank 0, died stop the run resumably."""
        self.failures += 1
        log.warning("%s call failed (%d so far), requeueing %d prompts: %s", kind, self.failures,
                    len(prompt_indices), str(err).splitlines()[0])
        self.scheduler.failed(prompt_indices)
        if isinstance(err, ray.exceptions.ObjectLostError) and not self.learner.alive():
            raise self.learner.failed(err, self.scheduler.step + 1) from err
        self.pushes.invalidate()
        if self.failures > 20:
            raise RuntimeError(f"too many failed {kind} calls; last error: {err}") from err

    def _scale(self) -> None:
        if (added := self.rollouts.scale()) is None:  # not polled this time
            return
        for ref, rollout in added:
            self.inflight[ref] = ReadyFlight(rollout)
        self.pushes.engines_changed()

    # -- learning --------------------------------------------------------------------------
    def _maybe_start_step(self) -> None:
        cfg = self.cfg
        if self.step_running:
            return
        arrow_start = time.perf_counter()  # the driver's Arrow handling: take, mix, split, put
        batch = self.scheduler.next_batch()
        if batch is None:
            return
        if self.probe is None and cfg.metrics.probe_every:
            self.probe = batch.pairs  # the first batch, kept: a fixed yardstick for the loss
        probe_due = self.probe is not None and self.scheduler.step % cfg.metrics.probe_every == 0
        refs = self.learner.start_step(batch.pairs, self.probe if probe_due else None)
        self.step_running = True
        self.inflight[refs[0]] = StepFlight(refs, batch, time.perf_counter() - arrow_start)
        for r in refs[1:]:
            self.inflight[r] = RankFlight()

    def _on_step(self, ref, flight: StepFlight) -> None:
        results = self.learner.results(flight.refs, self.scheduler.step + 1)
        for r in flight.refs[1:]:
            self.inflight.pop(r, None)
        self.step_running = False
        cfg, pairs = self.cfg, flight.batch.pairs
        self.window.trained(pairs.num_rows)
        step = self.scheduler.trained(flight.batch)
        now = time.perf_counter()
        wall = None if self.last_step_end is None else now - self.last_step_end
        self.last_step_end = now
        metrics = step_metrics(results, pairs["policy_version"].to_pylist(), step, flight.arrow_s, wall)
        metrics.update(self.scheduler.metrics(flight.batch))
        if self.scheduler.push_due():
            metrics.update(self.pushes.push(step))
        self.scheduler.end_of_step()
        window, tokens = self.window.close()  # the window closes after the push: its time counts
        self.scheduler.sampled(tokens)
        metrics.update(window)
        metrics.update(run_metrics(self.scheduler.state, len(self.scheduler.buffer), len(self.rollouts.live()),
                                   self.scheduler.epoch))
        self.metrics.log(step, metrics)
        self.journal.log(step, self.scheduler.version, pairs, flight.batch.replayed, self.scheduler.take_outcomes())
        self.progress(step, cfg.learner.max_steps, metrics)
        if cfg.checkpoint.every and step % cfg.checkpoint.every == 0 and step < cfg.learner.max_steps:
            self._checkpoint()

    # -- reports and checkpoints -----------------------------------------------------------
    def _heldout(self, who: str) -> list[str]:
        max_tokens = self.cfg.eval.max_tokens or self.cfg.rollout.max_tokens
        return heldout.answers(self.rollouts.live()[0].handle, list(self.spec.eval_prompts), max_tokens,
                               self.cfg.seed, who)

    def _checkpoint(self, final: bool = False) -> None:
        """A LoRA run's checkpoint holds the merged model when checkpoint.merged, and at the end."""
        start = time.perf_counter()
        state = self.scheduler.record(self.rng.getstate())
        tmp = ckpt.temp_dir(self.run_dir, state.step)
        self.learner.save(tmp, state.step, merged=final or self.cfg.checkpoint.merged)
        ckpt.write_base_model(tmp, self.spec.base_model)
        finalize_start = time.perf_counter()
        path = ckpt.finalize(self.run_dir, tmp, state, self.cfg.checkpoint.keep)
        done = time.perf_counter()
        log.info("checkpoint %s written in %.1fs (%.1fs of it finalizing: the manifest's sha256)%s", path, done - start,
                 done - finalize_start, " (final)" if final else "")

    def _memory_report(self) -> None:
        roles = [(r.name, r.handle) for r in self.rollouts.live()] + self.judges.roles() + self.learner.roles()
        write_memory_report(self.run_dir, *memory_figures(roles))

    def shutdown(self) -> None:
        for part in (self.rollouts, self.judges, self.learner):
            if part is not None:
                part.shutdown()
