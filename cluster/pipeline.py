"""The asynchronous OSP loop, driven from one place.

    prompts ─► rollout actors ─► judge actors ─► pair buffer ─► learner ranks
                     ▲                                               │
                     └──────────── weight push (every sync_every) ◄──┘

The driver never blocks on one component: it keeps every rollout actor busy while the
buffer has room (back-pressure), hands each finished rollout batch (an object ref; the
Arrow table never passes through the driver) to the least-loaded judge, and starts a
learner step as soon as one step's worth of fresh pairs is buffered. So rollout for step
t+1 overlaps learning on step t, bounded by `pipeline.max_staleness` (in weight pushes).

The pieces: the engine, judge and learner pools (engine_pool, judge_pool, learner_group), the
prompt ledger (where every prompt is), the step policy (what to sample, when to train and push,
DNO) and the per-step metrics window (metrics), all in cluster/.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections import Counter
from pathlib import Path

import pyarrow as pa
import ray

from cluster import checkpoint as ckpt
from cluster import heldout
from cluster.buffer import PairBuffer
from cluster.engine_pool import EnginePool
from cluster.flights import Flight, Inflight, StallWatch
from cluster.judge_pool import JudgePool
from cluster.learner_group import LearnerGroup
from cluster.metrics import (MetricsLogger, StepWindow, format_line, peak_rss_of, run_metrics, step_metrics,
                             write_memory_report)
from cluster.prompt_ledger import PromptLedger
from cluster.prompts import Prompt
from cluster.step_policy import StepPolicy
from cluster.weight_sync import make_weight_sync, resolve_method, resolve_payload
from core.config import Config
from core.versions import check_versions, installed

log = logging.getLogger("osp")


class Pipeline:
    def __init__(self, cfg: Config, model_path: str, prompts: list[Prompt], run_dir: Path,
                 state: ckpt.RunState, resume_from: Path | None = None, progress=None,
                 eval_prompts: list[Prompt] | None = None):
        self.cfg, self.model_path, self.prompts = cfg, model_path, prompts
        # Held-out prompts with instructions, answered before (heldout_sft) and after training.
        self.eval_prompts, self.heldout_sft = eval_prompts, None
        self.run_dir, self.state, self.resume_from = run_dir, state, resume_from
        # A callable(step, max_steps, metrics): the live bar (cluster/progress.py), else a log line.
        self.progress = progress or (lambda step, max_steps, metrics: log.info(format_line(step, max_steps, metrics)))
        self.rng = random.Random(cfg.seed)
        if state.rng is not None:
            self.rng.setstate((state.rng[0], tuple(state.rng[1]), state.rng[2]))
        self.ledger = PromptLedger(len(prompts), cfg.seed, cfg.data.shuffle, state)
        self.policy = StepPolicy(cfg, state, self.rng)
        self.buffer = PairBuffer(cfg.pipeline.buffer_max_pairs, cfg.pipeline.spill_dir)
        self.inflight: dict[ray.ObjectRef, Inflight] = {}
        # Actors are named `<run folder>-<4 hex>/<role>-<i>` (e.g. default-3f2a/rollout-0): readable in
        # the dashboard, unique per start so a resumed run never waits for the old names to free.
        self.actor_prefix = f"{Path(run_dir).name}-{uuid.uuid4().hex[:4]}"
        self.driver_versions = installed()  # every actor's node must run these (core/versions.py)
        self.pool = EnginePool(cfg, model_path, self.actor_prefix, self.driver_versions)
        self.judges: JudgePool | None = None
        self.learner: LearnerGroup | None = None
        self.step_running = False
        self.window = StepWindow()
        self.last_step_end: float | None = None  # perf_counter when the previous step's result arrived
        self.probe: pa.Table | None = None  # a fixed batch: its loss is logged every probe_every steps
        self.failures = 0
        self.stall = StallWatch(cfg.actor_resources())
        self.metrics = MetricsLogger(run_dir, run_dir.name, cfg.metrics.tensorboard, cfg.metrics.ray_metrics,
                                     resume_step=state.step)

    # -- start-up --------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.cfg
        t0 = time.perf_counter()
        for ref, engine in self.pool.start():
            self.inflight[ref] = Inflight(Flight.READY, engine=engine)
        self.judges = JudgePool(cfg, self.model_path, self.prompts, self.actor_prefix)
        self.learner = LearnerGroup(cfg, self.model_path, self.run_dir, self.actor_prefix)
        # Judges and ranks: wait here (a bad model or config fails before any sampling).
        roles = self.judges.roles() + self.learner.roles()
        infos = ray.get([handle.info.remote() for _, handle in roles])
        check_versions(self.driver_versions, {name: info["versions"] for (name, _), info in zip(roles, infos)})
        payload = resolve_payload(cfg.weight_sync.payload, cfg.learner.lora.enabled)
        method = resolve_method(cfg.weight_sync.method, cfg.learner.gpus_per_rank, payload)
        if self.resume_from is not None:
            self.learner.load(self.resume_from)
            log.info("resumed learner state from %s (step %d)", self.resume_from, self.state.step)
        for ref in [r for r, f in self.inflight.items() if f.kind is Flight.READY]:  # the engines, at start
            flight = self.inflight.pop(ref)
            self.pool.mark_ready(flight.engine, ray.get(ref))
        if self.eval_prompts:  # the engines still hold the SFT weights: the baseline
            self.heldout_sft = self._heldout("SFT")
        self.sync = make_weight_sync(method, self.learner.ranks, self.pool.handles(), payload)
        if self.state.step > 0:  # engines start from the SFT weights: bring them to the run's version
            self._push(self.state.version)
        log.info("actors up in %.1fs: %d rollout, %d judge, %d learner ranks, named %s/…; weight sync: %s",
                 time.perf_counter() - t0, len(self.pool.engines), len(self.judges.judges), len(self.learner.ranks),
                 self.actor_prefix, f"{method} ({payload})")

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> ckpt.RunState:
        cfg = self.cfg
        try:
            while self.state.step < cfg.learner.max_steps:
                self._scale()
                self._maybe_start_step()  # first: it may requeue stale prompts to dispatch
                self._dispatch_rollouts()
                if not self.inflight:
                    raise RuntimeError("pipeline stalled: nothing in flight and no learner step possible")
                ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=1.0)
                self.stall.tick(bool(ready), self.inflight)
                for ref in ready:
                    flight = self.inflight.pop(ref)
                    getattr(self, f"_on_{flight.kind.value}")(ref, flight)
            # The engines end on the final step's weights, whatever sync_every or DNO's iteration
            # length: the held-out answers below are step N's, and a resume starts from them.
            if self.state.version != self.state.step:
                self._push(self.state.step)
            # Let every engine finish loading the final weights (the run ends in sync).
            for ref in [r for r, f in self.inflight.items() if f.kind is Flight.LOAD]:
                self._on_load(ref, self.inflight.pop(ref))
            if self.eval_prompts:
                heldout.write_result(self.run_dir, self.state.step, self.eval_prompts, self.heldout_sft,
                                     self._heldout(f"step {self.state.step}"), cfg.seed)
            self._memory_report()
            self._checkpoint(final=True)
        finally:
            self.metrics.close()
        return self.state

    # -- rollouts and judging --------------------------------------------------------------
    def _dispatch_rollouts(self) -> None:
        for engine in self.pool.live():
            if engine.busy:
                continue
            n = self.policy.prompts_to_sample(self.step_running, len(self.buffer), self.ledger.prompts_in_flight,
                                              self.buffer.max_pairs)
            if n == 0:
                return  # back-pressure: the buffer (with what is on its way) is full
            indices = self.ledger.hand_out(n)
            ref = engine.handle.generate.remote([self.prompts[i].request(i) for i in indices], self.sync.latest)
            engine.busy = True
            self.inflight[ref] = Inflight(Flight.ROLLOUT, prompt_indices=indices, engine=engine)

    def _on_ready(self, ref, flight: Inflight) -> None:
        if self.pool.joined(flight.engine, ref):
            self.sync.set_engines(self.pool.handles())

    def _on_rollout(self, ref, flight: Inflight) -> None:
        flight.engine.busy = False
        if flight.engine.retiring:
            self.pool.retire(flight.engine)
        try:
            table = ray.get(ref)  # a zero-copy view of the object store on this node
        except ray.exceptions.RayError as err:
            self._failed("rollout", flight, err)
            return
        tokens = sum(len(t) for row in table["response_tokens"].to_pylist() for t in row)
        self.window.rollout(tokens, time.perf_counter() - flight.started)
        out, judge = self.judges.score(ref)
        self.inflight[out] = Inflight(Flight.JUDGE, prompt_indices=flight.prompt_indices, judge=judge)

    def _on_judge(self, ref, flight: Inflight) -> None:
        try:
            table, stats = ray.get(ref)
        except ray.exceptions.RayError as err:
            self.judges.done(flight.judge, kept_pairs=True)
            self._failed("judge", flight, err)
            return
        self.judges.done(flight.judge, kept_pairs=table is not None)
        self.window.judged(stats)
        made = Counter(table["prompt_index"].to_pylist()) if table is not None else Counter()
        self.ledger.judged(flight.prompt_indices, made)
        if table is not None:
            self.buffer.put(table)

    def _failed(self, kind: str, flight: Inflight, err: Exception) -> None:
        """A rollout or judge call failed for good (Ray already retried on actor restarts):
        its prompts go back to the queue."""
        self.failures += 1
        log.warning("%s call failed (%d so far), requeueing %d prompts: %s", kind, self.failures,
                    len(flight.prompt_indices), str(err).splitlines()[0])
        self.ledger.failed(flight.prompt_indices)
        self.sync.invalidate()
        if self.failures > 20:
            raise RuntimeError(f"too many failed {kind} calls; last error: {err}") from err

    def _scale(self) -> None:
        if (added := self.pool.scale()) is None:  # not polled this time
            return
        for ref, engine in added:
            self.inflight[ref] = Inflight(Flight.READY, engine=engine)
        self.sync.set_engines(self.pool.handles())

    # -- learning --------------------------------------------------------------------------
    def _maybe_start_step(self) -> None:
        cfg = self.cfg
        if self.step_running:
            return
        arrow_start = time.perf_counter()  # the driver's Arrow handling: take, mix, split, put
        picked = self.policy.next_batch(self.buffer, self.ledger)
        if picked is None:
            return
        batch, replayed = picked
        if self.probe is None and cfg.metrics.probe_every:
            self.probe = batch  # the first batch, kept: a fixed yardstick for the loss
        probe_due = self.probe is not None and self.state.step % cfg.metrics.probe_every == 0
        refs = self.learner.start_step(batch, self.probe if probe_due else None)
        arrow_s = time.perf_counter() - arrow_start
        self.step_running = True
        self.inflight[refs[0]] = Inflight(Flight.STEP, payload={"refs": refs, "batch": batch, "replayed": replayed,
                                                                "arrow_s": arrow_s})
        for r in refs[1:]:
            self.inflight[r] = Inflight(Flight.STEP_RANK)

    def _on_step_rank(self, ref, flight: Inflight) -> None:
        """Ranks but 0: a failure surfaces here at once (rank 0 may wait on a dead peer)."""
        self.learner.results([ref], self.state.step + 1)

    def _on_step(self, ref, flight: Inflight) -> None:
        refs, batch, replayed = flight.payload["refs"], flight.payload["batch"], flight.payload["replayed"]
        results = self.learner.results(refs, self.state.step + 1)
        for r in refs[1:]:
            self.inflight.pop(r, None)
        self.step_running = False
        cfg, state = self.cfg, self.state
        state.step += 1
        self.ledger.trained(batch.slice(0, batch.num_rows - replayed)["prompt_index"].to_pylist())
        self.window.trained(batch.num_rows)
        now = time.perf_counter()
        wall = None if self.last_step_end is None else now - self.last_step_end
        self.last_step_end = now
        metrics = step_metrics(results, batch["policy_version"].to_pylist(), state.step, flight.payload["arrow_s"], wall)
        if cfg.dno.enabled:
            metrics["pairs/replayed"] = float(replayed)
        if self.policy.push_due():
            metrics.update(self._push(state.step))
        self.policy.end_of_step()
        window, tokens = self.window.close()
        state.tokens_generated += tokens
        metrics.update(window)
        metrics.update(run_metrics(state, len(self.buffer), len(self.pool.live()), self.ledger.epoch))
        self.metrics.log(state.step, metrics)
        self.progress(state.step, cfg.learner.max_steps, metrics)
        if cfg.checkpoint.every and state.step % cfg.checkpoint.every == 0 and state.step < cfg.learner.max_steps:
            self._checkpoint()

    def _push(self, version: int) -> dict[str, float]:
        try:
            stats, loads = self.sync.push(version)
        except ray.exceptions.RayError as err:
            if not self.learner.alive():  # the learner (fatal) or an engine (re-form the group, retry once)?
                raise self.learner.failed(err, self.state.step + 1) from err
            log.warning("weight push failed, retrying once with a re-formed group: %s", str(err).splitlines()[0])
            stats, loads = self.sync.push(version)
        for ref in loads:
            self.inflight[ref] = Inflight(Flight.LOAD)
        self.policy.pushed(version)
        return stats

    def _on_load(self, ref, flight: Inflight) -> None:
        try:
            ray.get(ref)
        except ray.exceptions.RayError as err:
            log.warning("an engine failed to load new weights (it catches up on its next batch): %s",
                        str(err).splitlines()[0])
            self.sync.invalidate()

    # -- reports and checkpoints -----------------------------------------------------------
    def _heldout(self, who: str) -> list[str]:
        max_tokens = self.cfg.eval.max_tokens or self.cfg.rollout.max_tokens
        return heldout.answers(self.pool.live()[0].handle, self.eval_prompts, max_tokens, self.cfg.seed, who)

    def _checkpoint(self, final: bool = False) -> Path:
        start = time.perf_counter()
        state = self.state
        self.ledger.record()
        state.rng = list(self.rng.getstate())
        state.seed = self.cfg.seed
        tmp = ckpt.temp_dir(self.run_dir, state.step)
        self.learner.save(tmp, state.step)
        path = ckpt.finalize(self.run_dir, tmp, state, self.cfg.checkpoint.keep)
        log.info("checkpoint %s written in %.1fs%s", path, time.perf_counter() - start, " (final)" if final else "")
        return path

    def _memory_report(self) -> None:
        roles = [(e.name, e.handle) for e in self.pool.live()] + self.judges.roles() + self.learner.roles()
        write_memory_report(self.run_dir, self.model_path, peak_rss_of(roles))

    def shutdown(self) -> None:
        for part in (self.pool, self.judges, self.learner):
            if part is not None:
                part.shutdown()
