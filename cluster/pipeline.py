"""The asynchronous OSP loop, driven from one place.

    prompts ─► rollout actors ─► judge actors ─► pair buffer ─► learner ranks
                     ▲                                               │
                     └──────────── weight push (every sync_every) ◄──┘

The driver never blocks on one component: it keeps every rollout actor busy while the
buffer has room (back-pressure), hands each finished rollout batch (an object ref; the
Arrow table never passes through the driver) to the least-loaded judge, and starts a
learner step as soon as one step's worth of fresh pairs is buffered. So rollout for step
t+1 overlaps learning on step t, bounded by `pipeline.max_staleness` (in weight pushes).

Accounting (the run state): every prompt handed out is either in flight, waiting as pairs
in the buffer, requeued, or done (all its pairs trained, or it yielded none); pairs too
stale to train are counted and their prompts sampled again, never dropped silently.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray

from cluster import checkpoint as ckpt
from cluster import instruction_eval
from cluster.buffer import PairBuffer
from cluster.config import Config
from cluster.env import peak_rss_bytes
from cluster.metrics import MetricsLogger, format_line
from cluster.pools import Control, make_judge_actor, make_learner_group, make_rollout_actor
from cluster.prompts import Prompt
from cluster.schedule import PromptSchedule
from cluster.versions import VersionMismatch, check_versions, installed
from cluster.weight_sync import make_weight_sync, resolve_method, resolve_payload
from learner.dno import replay_mix

log = logging.getLogger("osp")

CONTROL_NAME = "osp-control"
CONTROL_NAMESPACE = "osp"


class LearnerFailed(RuntimeError):
    """A learner rank died or raised: the run stops, resumable from the last checkpoint."""


@dataclass
class Engine:
    """A rollout actor as the driver sees it."""

    handle: Any
    name: str
    ready: bool = False
    retiring: bool = False
    busy: bool = False


@dataclass
class Inflight:
    kind: str  # rollout | judge | step | load | ready
    prompt_indices: list[int] = field(default_factory=list)
    engine: Engine | None = None
    judge: int = -1
    started: float = field(default_factory=time.perf_counter)
    payload: Any = None


class Pipeline:
    def __init__(self, cfg: Config, model_path: str, prompts: list[Prompt], run_dir: Path,
                 state: ckpt.RunState, resume_from: Path | None = None, progress=None,
                 eval_prompts: list[Prompt] | None = None):
        self.cfg, self.model_path, self.prompts = cfg, model_path, prompts
        self.eval_prompts = eval_prompts  # held-out, with instructions: answered before and after training
        self.heldout_sft = None
        self.run_dir, self.state, self.resume_from = run_dir, state, resume_from
        self.progress = progress  # a callable(step, max_steps, metrics) or None
        self.schedule = PromptSchedule(len(prompts), cfg.seed, cfg.data.shuffle, state.next_prompt, state.requeued)
        self.rng = random.Random(cfg.seed)
        if state.rng is not None:
            self.rng.setstate((state.rng[0], tuple(state.rng[1]), state.rng[2]))
        self.buffer = PairBuffer(cfg.pipeline.buffer_max_pairs, cfg.pipeline.spill_dir)
        self.pairs_per_prompt = 1 if cfg.dno.enabled else cfg.rollout.k // 2  # DNO keeps one pair a prompt
        self.outstanding: Counter[int] = Counter()  # prompt index → its pairs in the buffer
        self.inflight: dict[ray.ObjectRef, Inflight] = {}
        self.engines: list[Engine] = []
        self.engine_serial = 0
        self.judges: list[Any] = []
        self.judge_load: list[int] = []
        self.ranks: list[Any] = []
        self.pushed_versions = [state.version]  # policy versions sent to the engines, oldest first
        self.step_running = False
        self.window = _new_window()
        # (passed, checked) of the last 5 steps' windows: one step sees only a few samples, too
        # few for the pass rate to show a trend by itself.
        self.recent_pass: deque[tuple[float, float]] = deque(maxlen=5)
        self.last_push: dict[str, float] = {}
        self.last_step_end: float | None = None  # perf_counter when the previous step's result arrived
        # Actors are named `<run folder>-<4 hex>/<role>-<i>` (e.g. default-3f2a/rollout-0): readable in
        # the dashboard, unique per start so a resumed run never waits for the old names to free.
        self.actor_prefix = f"{Path(run_dir).name}-{uuid.uuid4().hex[:4]}"
        self.driver_versions = installed()  # every actor's node must run these (cluster/versions.py)
        self.previous_iteration_pairs: pa.Table | None = None  # DNO replay
        self.current_iteration_pairs: list[pa.Table] = []
        self.probe: pa.Table | None = None  # a fixed batch: its loss is logged every probe_every steps
        self.failures = 0
        self.empty_judged = 0  # judged batches in a row that kept no pair
        self.metrics = MetricsLogger(run_dir, run_dir.name, cfg.metrics.tensorboard, cfg.metrics.ray_metrics,
                                     resume_step=state.step)
        self.control = None
        self.last_control_poll = 0.0

    # -- start-up --------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.cfg
        t0 = time.perf_counter()
        self.control = Control.options(name=CONTROL_NAME, namespace=CONTROL_NAMESPACE, get_if_exists=False,
                                       lifetime=None).remote(cfg.rollout.num_actors)
        for _ in range(cfg.rollout.num_actors):
            self._add_engine()
        instructions = {p.text: p.instructions.to_json() for p in self.prompts if p.instructions is not None}
        for i in range(cfg.judge.num_actors):
            self.judges.append(make_judge_actor(cfg, self.model_path, i, instructions or None, self.actor_prefix))
            self.judge_load.append(0)
        self.ranks, self.learner_pg = make_learner_group(cfg, self.model_path, prefix=self.actor_prefix)
        # Judges and ranks: wait here (a bad model or config fails before any sampling).
        roles = self._judge_and_learner_roles()
        infos = ray.get([handle.info.remote() for _, handle in roles])
        check_versions(self.driver_versions, {name: info["versions"] for (name, _), info in zip(roles, infos)})
        payload = resolve_payload(cfg.weight_sync.payload, cfg.learner.lora.enabled)
        method = resolve_method(cfg.weight_sync.method, cfg.learner.gpus_per_rank, payload)
        if self.resume_from is not None:
            ray.get([r.load_checkpoint.remote(str(self.resume_from)) for r in self.ranks])
            log.info("resumed learner state from %s (step %d)", self.resume_from, self.state.step)
        self._wait_engines_ready()
        if self.eval_prompts:  # the engines still hold the SFT weights: the baseline
            self.heldout_sft = self._heldout_verdicts("SFT")
        self.sync = make_weight_sync(method, self.ranks, [e.handle for e in self._live_engines()], payload)
        if self.state.step > 0:  # engines start from the SFT weights: bring them to the run's version
            self._push(self.state.version)
        log.info("actors up in %.1fs: %d rollout, %d judge, %d learner ranks, named %s/…; weight sync: %s",
                 time.perf_counter() - t0, len(self.engines), len(self.judges), len(self.ranks), self.actor_prefix,
                 f"{method} ({payload})")

    def _add_engine(self) -> None:
        name = f"rollout-{self.engine_serial}"
        handle = make_rollout_actor(self.cfg, self.model_path, self.engine_serial, self.actor_prefix)
        self.engine_serial += 1
        engine = Engine(handle, name)
        self.engines.append(engine)
        self.inflight[handle.info.remote()] = Inflight("ready", engine=engine)

    def _wait_engines_ready(self) -> None:
        refs = [r for r, f in self.inflight.items() if f.kind == "ready"]
        for ref in refs:
            flight = self.inflight.pop(ref)
            check_versions(self.driver_versions, {flight.engine.name: ray.get(ref)["versions"]})
            flight.engine.ready = True

    def _live_engines(self) -> list[Engine]:
        return [e for e in self.engines if e.ready and not e.retiring]

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> ckpt.RunState:
        cfg = self.cfg
        try:
            while self.state.step < cfg.learner.max_steps:
                self._poll_control()
                self._maybe_start_step()  # first: it may requeue stale prompts to dispatch
                self._dispatch_rollouts()
                if not self.inflight:
                    raise RuntimeError("pipeline stalled: nothing in flight and no learner step possible")
                ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=1.0)
                for ref in ready:
                    self._complete(ref, self.inflight.pop(ref))
            # Let every engine finish loading the final weights (the run ends in sync).
            loads = [ref for ref, f in self.inflight.items() if f.kind == "load"]
            for ref in loads:
                self._on_load(ref, self.inflight.pop(ref))
            if self.eval_prompts:
                self._final_heldout()
            self._memory_report()
            self._checkpoint(final=True)
        finally:
            self.metrics.close()
        return self.state

    def _complete(self, ref, flight: Inflight) -> None:
        handler = getattr(self, f"_on_{flight.kind}")
        handler(ref, flight)

    # -- rollouts --------------------------------------------------------------------------
    def _pairs_needed(self) -> int:
        """Pairs still to be made for the remaining steps, beyond what is buffered or coming."""
        cfg = self.cfg
        steps_left = cfg.learner.max_steps - self.state.step - (1 if self.step_running else 0)
        coming = sum(len(f.prompt_indices) for f in self.inflight.values() if f.kind in ("rollout", "judge"))
        return steps_left * cfg.learner.pairs_per_step - len(self.buffer) - coming * self.pairs_per_prompt

    def _dispatch_rollouts(self) -> None:
        cfg = self.cfg
        for engine in self._live_engines():
            if engine.busy:
                continue
            coming = sum(len(f.prompt_indices) for f in self.inflight.values() if f.kind in ("rollout", "judge"))
            room = min(self.buffer.max_pairs, self._useful_pairs()) - len(self.buffer) - coming * self.pairs_per_prompt
            if room < self.pairs_per_prompt or self._pairs_needed() <= 0:
                return  # back-pressure: the buffer (with what is on its way) is full
            n = min(cfg.rollout.prompts_per_batch, max(1, room // self.pairs_per_prompt))
            indices = self.schedule.take(n)
            batch = [
                {"prompt_id": self.prompts[i].prompt_id, "prompt_index": i, "prompt_text": self.prompts[i].text,
                 "prompt_tokens": self.prompts[i].tokens}
                for i in indices
            ]
            ref = engine.handle.generate.remote(batch, self.sync.latest)
            engine.busy = True
            self.inflight[ref] = Inflight("rollout", prompt_indices=indices, engine=engine)

    def _useful_pairs(self) -> int:
        """Pairs made now that can still train before they go stale, so making more is waste.

        Pairs sampled now carry the engines' current version. A running step will push a new
        version when it ends; after `max_staleness` more pushes those pairs are too old. So
        they can feed the learner steps of `max_staleness` versions, plus the next step if
        none is running yet. With max_staleness=0 nothing is sampled while the learner
        learns: fully on-policy, no overlap."""
        cfg = self.cfg
        if cfg.dno.enabled:  # DNO trains on the current iterate's samples only: this iteration's steps
            steps = cfg.dno.iteration_steps - self.state.step % cfg.dno.iteration_steps - (1 if self.step_running else 0)
            return max(steps, 0) * cfg.learner.pairs_per_step
        steps = cfg.pipeline.max_staleness * cfg.learner.sync_every + (0 if self.step_running else 1)
        return steps * cfg.learner.pairs_per_step

    def _on_ready(self, ref, flight: Inflight) -> None:
        try:
            check_versions(self.driver_versions, {flight.engine.name: ray.get(ref)["versions"]})
        except ray.exceptions.RayError as err:
            log.error("rollout actor %s failed to start: %s", flight.engine.name, err)
            self.engines.remove(flight.engine)
            return
        except VersionMismatch as err:  # mid-run (a scale-up landed on a bad node): keep going without it
            log.error("rollout actor %s not used: %s", flight.engine.name, err)
            self._retire(flight.engine)
            return
        flight.engine.ready = True
        self.sync.set_engines([e.handle for e in self._live_engines()])
        log.info("%s joined (%d rollout actors)", flight.engine.name, len(self._live_engines()))

    def _on_rollout(self, ref, flight: Inflight) -> None:
        flight.engine.busy = False
        if flight.engine.retiring:
            self._retire(flight.engine)
        try:
            table = ray.get(ref)  # a zero-copy view of the object store on this node
        except ray.exceptions.RayError as err:
            self._failed("rollout", flight, err)
            return
        self.window["tokens"] += sum(len(t) for row in table["response_tokens"].to_pylist() for t in row)
        self.window["rollout_s"] += time.perf_counter() - flight.started
        self.window["rollouts"] += 1
        judge = min(range(len(self.judges)), key=self.judge_load.__getitem__)
        self.judge_load[judge] += 1
        out = self.judges[judge].score.remote(ref)  # the judge reads the batch from the store
        self.inflight[out] = Inflight("judge", prompt_indices=flight.prompt_indices, judge=judge)

    def _on_judge(self, ref, flight: Inflight) -> None:
        self.judge_load[flight.judge] -= 1
        try:
            table, stats = ray.get(ref)
        except ray.exceptions.RayError as err:
            self._failed("judge", flight, err)
            return
        self.window["judge_s"] += stats["judge_s"]
        self.window["judged"] += 1
        for key in ("responses", "truncated", "verifier_checked", "verifier_passed", "pairs_judged", "ties",
                    "pairs_with_truncated", "position_gap_sum", "position_gap_count"):
            self.window[key] += stats.get(key, 0.0)
        self.empty_judged = 0 if table is not None else self.empty_judged + 1
        if self.empty_judged and self.empty_judged % 20 == 0:  # a judge that keeps nothing starves the run
            log.warning("the last %d judged batches kept no pair (judge.drop_ties drops exact ties; DNO keeps a pair "
                        "only above dno.margin): is the judge able to tell these answers apart?", self.empty_judged)
        made = Counter(table["prompt_index"].to_pylist()) if table is not None else Counter()
        for index in flight.prompt_indices:
            if made[index] == 0:
                self.state.prompts_done += 1  # judged, no pair kept (e.g. DNO margin)
        if table is not None:
            self.outstanding.update(made)
            self.buffer.put(table)

    def _failed(self, kind: str, flight: Inflight, err: Exception) -> None:
        """A rollout or judge call failed for good (Ray already retried on actor restarts):
        its prompts go back to the queue."""
        self.failures += 1
        log.warning("%s call failed (%d so far), requeueing %d prompts: %s", kind, self.failures,
                    len(flight.prompt_indices), str(err).splitlines()[0])
        self.schedule.requeue(flight.prompt_indices)
        self.sync.invalidate()
        if self.failures > 20:
            raise RuntimeError(f"too many failed {kind} calls; last error: {err}") from err

    # -- scaling ---------------------------------------------------------------------------
    def _poll_control(self) -> None:
        now = time.monotonic()
        if now - self.last_control_poll < 2.0:
            return
        self.last_control_poll = now
        want = ray.get(self.control.get_rollout_actors.remote())
        have = [e for e in self.engines if not e.retiring]
        for _ in range(want - len(have)):
            log.info("scaling up: starting a rollout actor (%d → %d)", len(have), want)
            self._add_engine()
        for engine in have[want:]:
            log.info("scaling down: retiring %s", engine.name)
            engine.retiring = True
            if not engine.busy:
                self._retire(engine)
        self.sync.set_engines([e.handle for e in self._live_engines()])

    def _retire(self, engine: Engine) -> None:
        if engine in self.engines:
            self.engines.remove(engine)
            ray.kill(engine.handle)

    # -- learning --------------------------------------------------------------------------
    def _oldest_trainable_version(self) -> int:
        if self.cfg.dno.enabled:  # DNO-Prct: iteration t trains only on pairs π_t sampled
            return self.pushed_versions[-1]
        ms = self.cfg.pipeline.max_staleness
        return self.pushed_versions[-1 - ms] if len(self.pushed_versions) > ms else self.pushed_versions[0]

    def _maybe_start_step(self) -> None:
        cfg = self.cfg
        if self.step_running:
            return
        arrow_start = time.perf_counter()  # the driver's Arrow handling: take, mix, split, put
        oldest = self._oldest_trainable_version()
        stale = self.buffer.drop_older_than(oldest)
        if stale:
            # A prompt's pairs share one version, so its waiting pairs go together; a prompt
            # handed out twice (a later epoch) is requeued once per handing-out.
            prompts = []
            for index, count in sorted(Counter(stale).items()):
                prompts += [index] * -(-count // self.pairs_per_prompt)
                self.outstanding[index] -= count
                if self.outstanding[index] <= 0:
                    del self.outstanding[index]
            self.state.pairs_regenerated += len(stale)
            self.schedule.requeue(prompts)
            log.info("%d pairs older than policy version %d dropped; %d prompts requeued", len(stale), oldest, len(prompts))
        batch = self.buffer.take(cfg.learner.pairs_per_step - self._replay_slots())
        if batch is None:
            return
        self.current_iteration_pairs.append(batch)
        replayed = 0
        if self._replay_slots():
            # DNO's replay (learner/dno.replay_mix): previous-iteration pairs up to
            # dno.replay_fraction of the step, tagged "replay". They keep the reference they
            # were made with: the log-probs of π_{t−1}, the iterate that sampled them.
            previous = self.previous_iteration_pairs
            picks = replay_mix(list(range(batch.num_rows)), list(range(previous.num_rows)), cfg.dno.replay_fraction,
                               self.rng)[batch.num_rows:]
            if picks:
                old = previous.take(picks)
                i = old.schema.get_field_index("source")
                old = old.set_column(i, old.schema.field(i), pa.array(["replay"] * old.num_rows, pa.string()))
                batch = pa.concat_tables([batch, old]).combine_chunks()
                replayed = len(picks)
        if self.probe is None and cfg.metrics.probe_every:
            self.probe = batch  # the first batch, kept: a fixed yardstick for the loss
        shards = _split(batch, len(self.ranks))
        probes = [None] * len(self.ranks)
        if self.probe is not None and self.state.step % cfg.metrics.probe_every == 0:
            probes = _split(self.probe, len(self.ranks))
        # Put once here, pass the refs wrapped: each rank fetches its shard itself (and times it).
        shards = [[ray.put(shard)] for shard in shards]
        probes = [None if probe is None else [ray.put(probe)] for probe in probes]
        arrow_s = time.perf_counter() - arrow_start
        refs = [rank.train_step.remote(shard, probe) for rank, shard, probe in zip(self.ranks, shards, probes)]
        self.step_running = True
        flight = Inflight("step", payload={"refs": refs, "batch": batch, "replayed": replayed, "arrow_s": arrow_s})
        self.inflight[refs[0]] = flight
        for r in refs[1:]:
            self.inflight[r] = Inflight("step_rank")

    def _on_step_rank(self, ref, flight: Inflight) -> None:
        """Ranks other than 0: their metrics are gathered in _on_step; a failure surfaces
        here at once (rank 0 may otherwise wait on a dead peer's collective)."""
        try:
            ray.get(ref)
        except ray.exceptions.RayError as err:
            raise LearnerFailed(self._learner_failure_message(err)) from err

    def _replay_slots(self) -> int:
        """DNO: places of a step kept for replayed pairs (a share `dno.replay_fraction` of it)."""
        if not self.cfg.dno.enabled or self.previous_iteration_pairs is None:
            return 0
        return int(self.cfg.dno.replay_fraction * self.cfg.learner.pairs_per_step)

    def _on_step(self, ref, flight: Inflight) -> None:
        refs, batch = flight.payload["refs"], flight.payload["batch"]
        try:
            results = ray.get(refs)
        except ray.exceptions.RayError as err:
            raise LearnerFailed(self._learner_failure_message(err)) from err
        for r in refs[1:]:
            self.inflight.pop(r, None)
        self.step_running = False
        cfg, state = self.cfg, self.state
        state.step += 1
        fresh = batch.slice(0, batch.num_rows - flight.payload["replayed"])
        versions = batch["policy_version"].to_pylist()
        for index in fresh["prompt_index"].to_pylist():
            if self.outstanding[index] > 0:
                self.outstanding[index] -= 1
                if self.outstanding[index] == 0:
                    del self.outstanding[index]
                    state.prompts_done += 1
        state.pairs_trained += fresh.num_rows
        self.window["pairs"] += batch.num_rows
        metrics = _mean_metrics(results)
        if cfg.dno.enabled:
            metrics["pairs/replayed"] = float(flight.payload["replayed"])
        metrics["staleness/mean"] = sum(state.step - 1 - v for v in versions) / len(versions)
        metrics["staleness/max"] = float(max(state.step - 1 - v for v in versions))
        # The learner's duty cycle: time in the step over the wall time since the previous
        # step ended (which holds the wait for pairs, the push and checkpoints). The Arrow share:
        # the driver's take/split/put plus a rank's fetch and conversion, over the same wall time.
        now = time.perf_counter()
        if self.last_step_end is not None:
            wall = now - self.last_step_end
            metrics["learner/busy"] = min(metrics["step_s"] / wall, 1.0)
            metrics["arrow/share"] = (flight.payload["arrow_s"] + metrics.get("arrow/rank_s", 0.0)) / wall
        self.last_step_end = now
        metrics["arrow/driver_s"] = flight.payload["arrow_s"]
        if self._push_due():
            metrics.update(self._push(state.step))
        if cfg.dno.enabled and state.step % cfg.dno.iteration_steps == 0:
            self._end_dno_iteration()
        metrics.update(self._window_metrics())
        self.metrics.log(state.step, metrics)
        if self.progress:
            self.progress(state.step, cfg.learner.max_steps, metrics)
        else:
            log.info(format_line(state.step, cfg.learner.max_steps, metrics))
        if cfg.checkpoint.every and state.step % cfg.checkpoint.every == 0 and state.step < cfg.learner.max_steps:
            self._checkpoint()

    def _push_due(self) -> bool:
        cfg = self.cfg
        if cfg.dno.enabled:  # DNO: the policy that samples is the reference; it moves once per iteration
            return self.state.step % cfg.dno.iteration_steps == 0
        return self.state.step % cfg.learner.sync_every == 0

    def _end_dno_iteration(self) -> None:
        self.state.dno_iteration += 1
        if self.current_iteration_pairs:
            self.previous_iteration_pairs = pa.concat_tables(self.current_iteration_pairs).combine_chunks()
        self.current_iteration_pairs = []

    def _push(self, version: int) -> dict[str, float]:
        try:
            stats, loads = self.sync.push(version)
        except ray.exceptions.RayError as err:
            try:  # is it the learner (fatal) or an engine (re-form the group, retry once)?
                ray.get([r.info.remote() for r in self.ranks], timeout=60)
            except Exception:
                raise LearnerFailed(self._learner_failure_message(err)) from err
            log.warning("weight push failed, retrying once with a re-formed group: %s", str(err).splitlines()[0])
            stats, loads = self.sync.push(version)
        for ref in loads:
            self.inflight[ref] = Inflight("load")
        self.state.version = version
        self.pushed_versions.append(version)
        del self.pushed_versions[: -(self.cfg.pipeline.max_staleness + 2)]
        self.last_push = stats
        return stats

    def _on_load(self, ref, flight: Inflight) -> None:
        try:
            ray.get(ref)
        except ray.exceptions.RayError as err:
            log.warning("an engine failed to load new weights (it catches up on its next batch): %s",
                        str(err).splitlines()[0])
            self.sync.invalidate()

    def _learner_failure_message(self, err: Exception) -> str:
        latest = None
        try:
            latest = ckpt.latest_checkpoint(self.run_dir)
        except FileNotFoundError:
            pass
        where = f"the last checkpoint is {latest}" if latest else "no checkpoint was written yet"
        return (f"a learner rank failed at step {self.state.step + 1}: {str(err).splitlines()[0]}\n"
                f"The run stops ({where}); continue it with --resume.")

    def _window_metrics(self) -> dict[str, float]:
        w, now = self.window, time.perf_counter()
        elapsed = max(now - w["start"], 1e-9)
        out = {
            "pairs_per_s": w["pairs"] / elapsed,
            "rollout_tokens_per_s": w["tokens"] / elapsed,
            "buffer/pairs": float(len(self.buffer)),
            "run/prompts_done": float(self.state.prompts_done),
            "run/pairs_trained": float(self.state.pairs_trained),
            "run/pairs_regenerated": float(self.state.pairs_regenerated),
            "run/rollout_actors": float(len(self._live_engines())),
            "run/epoch": self.schedule.epoch,
        }
        # Where the time goes: mean latency of a rollout call and of a judge call.
        if w["rollouts"]:
            out["rollout/batch_s"] = w["rollout_s"] / w["rollouts"]
        if w["judged"]:
            out["judge/batch_s"] = w["judge_s"] / w["judged"]
        # What the fresh samples judged since the last step are like.
        if w["responses"]:
            out["samples/truncated"] = w["truncated"] / w["responses"]
        if w["verifier_checked"]:
            out["samples/verifier_pass"] = w["verifier_passed"] / w["verifier_checked"]
            self.recent_pass.append((w["verifier_passed"], w["verifier_checked"]))
            out["samples/verifier_pass_last5"] = sum(p for p, _ in self.recent_pass) / sum(c for _, c in self.recent_pass)
        # Shares of the judged pairs (before judge.drop_ties / judge.truncated=drop filter them).
        if w["pairs_judged"]:
            out["judge/tie_share"] = w["ties"] / w["pairs_judged"]
            out["judge/truncated_pair_share"] = w["pairs_with_truncated"] / w["pairs_judged"]
        if w["position_gap_count"]:  # an LM judge: |p_ab − (1 − p_ba)|, its position inconsistency
            out["judge/position_gap"] = w["position_gap_sum"] / w["position_gap_count"]
        self.state.tokens_generated += w["tokens"]
        self.window = _new_window()
        return out

    # -- held-out evaluation ---------------------------------------------------------------
    def _heldout_verdicts(self, who: str) -> list:
        """Greedy answers of the first live engine to the held-out prompts, verified."""
        start = time.perf_counter()
        max_tokens = self.cfg.eval.max_tokens or self.cfg.rollout.max_tokens
        engine = self._live_engines()[0].handle
        answers = ray.get(engine.complete.remote([list(p.tokens) for p in self.eval_prompts], max_tokens))
        verdicts = instruction_eval.verdicts([p.instructions for p in self.eval_prompts], [a["text"] for a in answers])
        acc = instruction_eval.accuracy(verdicts, self.cfg.seed)
        log.info("held-out %s (%d prompts, %.0fs)", instruction_eval.format_accuracy(who, acc), len(verdicts),
                 time.perf_counter() - start)
        return verdicts

    def _final_heldout(self) -> None:
        """The final weights on the held-out prompts, against the SFT answers from start-up."""
        verdicts = self._heldout_verdicts(f"step {self.state.step}")
        gain = instruction_eval.gain(verdicts, self.heldout_sft, self.cfg.seed)
        instructions = [p.instructions for p in self.eval_prompts]
        record = {
            "step": self.state.step,
            "prompts": len(verdicts),
            "sft": instruction_eval.accuracy(self.heldout_sft, self.cfg.seed),
            "final": instruction_eval.accuracy(verdicts, self.cfg.seed),
            "gain": gain,
            "per_kind": {"sft": instruction_eval.per_kind(instructions, self.heldout_sft),
                         "final": instruction_eval.per_kind(instructions, verdicts)},
        }
        (self.run_dir / "heldout.json").write_text(json.dumps(record, indent=1))
        g = gain["prompt_strict"]
        log.info("held-out prompt-level accuracy, SFT %.3f → step %d %.3f: gain %+.3f (95%% CI %+.3f to %+.3f)%s",
                 record["sft"]["prompt_strict"]["value"], self.state.step, record["final"]["prompt_strict"]["value"],
                 g["value"], g["ci_low"], g["ci_high"],
                 "" if g["ci_low"] > 0 or g["ci_high"] < 0 else " — not significant")

    # -- checkpoints -----------------------------------------------------------------------
    def _in_flight_prompts(self) -> list[int]:
        """Prompts handed out but not trained: sampled again after a resume."""
        out = []
        for f in self.inflight.values():
            if f.kind in ("rollout", "judge"):
                out += f.prompt_indices
        for index, count in self.outstanding.items():
            out += [index]
        return out

    def _checkpoint(self, final: bool = False) -> Path:
        start = time.perf_counter()
        state = self.state
        state.next_prompt = self.schedule.next_prompt
        state.requeued = list(self.schedule.requeued) + self._in_flight_prompts()
        state.rng = list(self.rng.getstate())
        state.seed = self.cfg.seed
        tmp = ckpt.temp_dir(self.run_dir, state.step)
        ray.get([r.save_checkpoint.remote(str(tmp), {"step": state.step}) for r in self.ranks])
        path = ckpt.finalize(self.run_dir, tmp, state, self.cfg.checkpoint.keep)
        log.info("checkpoint %s written in %.1fs%s", path, time.perf_counter() - start, " (final)" if final else "")
        return path

    def _judge_and_learner_roles(self) -> list[tuple[str, Any]]:
        """(role, handle) of the judges and learner ranks, named as their actors are (cluster.pools)."""
        return ([(f"judge-{i}", j) for i, j in enumerate(self.judges)]
                + [(f"learner-{i}", r) for i, r in enumerate(self.ranks)])

    def _memory_report(self) -> None:
        """Peak RSS of every process of the run, against the model's bytes: memory.json."""
        roles = [(e.name, e.handle) for e in self._live_engines()] + self._judge_and_learner_roles()
        peaks = {"driver": peak_rss_bytes()}
        for name, handle in roles:
            try:
                peaks[name] = ray.get(handle.info.remote(), timeout=30)["peak_rss_bytes"]
            except Exception as err:  # a report, not a reason to fail the run
                log.warning("no memory figure from %s: %s", name, str(err).splitlines()[0])
        model_bytes = sum(f.stat().st_size for f in Path(self.model_path).glob("*.safetensors"))
        (self.run_dir / "memory.json").write_text(json.dumps({"model_bytes": model_bytes, "peak_rss_bytes": peaks}, indent=1))
        log.info("peak RSS (model %.2f GB): %s", model_bytes / 1e9,
                 ", ".join(f"{name} {b / 1e9:.2f} GB" for name, b in peaks.items()))

    def shutdown(self) -> None:
        for engine in self.engines:
            ray.kill(engine.handle)
        for actor in self.judges + self.ranks:
            ray.kill(actor)
        if self.control is not None:
            ray.kill(self.control)
        try:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.learner_pg)
        except Exception:
            pass


def _split(table: pa.Table, parts: int) -> list[pa.Table]:
    """Equal contiguous shards (pairs_per_step is a multiple of the rank count)."""
    size = table.num_rows // parts
    return [table.slice(i * size, size) for i in range(parts)]


def _mean_metrics(results: list[dict[str, float]]) -> dict[str, float]:
    keys = set().union(*results)
    out = {}
    for key in keys:
        values = [r[key] for r in results if key in r]
        out[key] = max(values) if key == "step_s" else sum(values) / len(values)
    return out


def _new_window() -> dict[str, float]:
    """Counters of the interval since the last learner step (for per-step rates)."""
    return {"start": time.perf_counter(), "tokens": 0, "pairs": 0, "rollout_s": 0.0, "rollouts": 0,
            "judge_s": 0.0, "judged": 0, "responses": 0.0, "truncated": 0.0, "verifier_checked": 0.0,
            "verifier_passed": 0.0, "pairs_judged": 0.0, "ties": 0.0, "pairs_with_truncated": 0.0,
            "position_gap_sum": 0.0, "position_gap_count": 0.0}
