"""A chaos soak: many faults under load over a long run, and a count of what was lost.

    flock /tmp/osp-engine.lock .venv/bin/python bench/chaos_soak.py --out runs/chaos --baselines 3 --docs
    .venv/bin/python bench/chaos_soak.py --out runs/chaos --only soak          # one run per call (a lock each)
    .venv/bin/python bench/chaos_soak.py --out /tmp/s --tiny MODEL_DIR --steps 10 --kinds rollout,judge,learner

The run is the main job (cluster/configs/default.yaml: SmolLM2-135M-Instruct with LoRA, K = 4, the
IFEval verifier, 48 tokens, the held-out check) with 2 rollout actors and 2 learner ranks,
`--steps` learner steps, a checkpoint every 4 steps (what a resume needs) and every pair spilled
to Parquet. `--tiny MODEL_DIR` runs the tiny random model instead, self-judged on the everyday
questions as tests/test_driver_kill.py does (the verifier ties every answer of a random model),
with no held-out check (a random model has no held-out gain to keep).

It runs on a simulated multi-node cluster (Ray nodes on this machine, as tests/multinode_cluster.py
builds them): a head (the driver's node, no CPUs for actors), two `rollout` nodes (the rollout
actors and the judge) and a `learner` node (both ranks). The driver is `python -m cluster.train`
joining that cluster, a subprocess, so it can be killed with -9 and resumed like any user's run.

A seeded schedule injects faults spread over the run, one at a time (the next only once the run
has recovered from the last), a few seconds (seeded) after the step it is due at:
- `rollout`: kill -9 of a rollout actor's process (the vLLM engine runs in it): Ray restarts the
  actor and retries its call, carrying the latest weights;
- `judge`: kill -9 of the judge actor: restarted, its call retried;
- `learner`: kill -9 of a learner rank: the run stops cleanly (LearnerFailed, exit 3) and the
  soak runs `--resume`;
- `node`: the loss of a rollout node (its raylet and every process on it, kill -9), then a new
  node with its resources a few seconds (seeded) later: its actors restart elsewhere or there;
- `driver`: kill -9 of the driver, then `--resume`.
A fault is survived when the run goes on by itself, or stops cleanly and `--resume` continues it;
an unexpected exit, or a run that makes no step for --hang-s, is not survived (the soak resumes
it anyway, to go on). Afterwards bench/chaos_audit.py checks the run folder and the soak's
snapshots of it: nothing lost, nothing done twice (its docstring lists the checks).

Each run writes <out>/<name>/result.json (the soak: `soak`; fault-free runs of the same config and
seed: `baseline-<i>`, for the held-out gain's spread and the step time). A call runs the runs
missing from <out> (or only `--only NAME`); `--docs` then writes docs/reliability.md and .json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.env import apply_runtime_env

apply_runtime_env()

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from chaos_audit import audit, read_jsonl  # noqa: E402

KINDS = ("rollout", "judge", "node", "learner", "driver")
STOPS_THE_RUN = ("learner", "driver")  # recovered by the soak's --resume
# The soak's 10 faults: each kind, and more of those that come back by themselves.
DEFAULT_MIX = ("rollout", "rollout", "rollout", "judge", "judge", "node", "node", "learner", "learner", "driver")
ACTORS = 5  # 2 rollout actors, 1 judge, 2 learner ranks
ROLE = re.compile(r"/(rollout|judge|learner)-(\d+)$")


@dataclass
class Fault:
    step: int  # injected once the run has logged this step (after `delay_s`)
    kind: str
    target: int  # rollout-i, learner-i, or the node of rollout-i (node); 0 for judge and driver
    delay_s: float
    down_s: float = 0.0  # node: seconds before a new node joins
    # what happened
    injected_at: float | None = None
    at_step: int | None = None
    detail: str = ""
    back_at: float | None = None  # the actor (or node) back, or the resumed driver up
    next_step_at: float | None = None  # the run logged a step past `at_step` again
    survived: bool | None = None
    note: str = ""
    due_at: float | None = None  # monotonic time it is injected at, once its step is logged
    pid: int | None = None  # the process killed
    lost_roles: list[str] = field(default_factory=list)  # node: the actors that were on it
    attempt: int | None = None  # the attempt (driver process) it struck


def schedule(mix: list[str], max_steps: int, seed: int, rollouts: int, ranks: int) -> list[Fault]:
    """`mix` in a seeded order at seeded steps spread over [2, max_steps − 2], at least 2 apart."""
    rng = random.Random(seed)
    kinds = list(mix)
    rng.shuffle(kinds)
    first, last = 2, max_steps - 2
    gap = (last - first) / len(kinds)
    if gap < 2:
        raise SystemExit(f"{len(kinds)} faults need at least {2 * len(kinds) + 4} steps, got {max_steps}")
    faults = []
    for i, kind in enumerate(kinds):
        step = first + round(i * gap) + rng.randrange(max(1, int(gap) - 1))
        target = rng.randrange(rollouts if kind in ("rollout", "node") else ranks if kind == "learner" else 1)
        faults.append(Fault(step, kind, target, delay_s=round(rng.uniform(0, 3), 1),
                            down_s=round(rng.uniform(5, 20), 1) if kind == "node" else 0.0))
    return faults


# -- the run's config ------------------------------------------------------------------------

def run_args(run_dir: Path, address: str, max_steps: int, tiny: str | None) -> list[str]:
    """The driver's command-line config: the main job (or the tiny model), shaped for the soak."""
    args = ["--config", str(REPO / "cluster/configs/default.yaml"),
            "rollout.num_actors=2", "learner.num_ranks=2", f"learner.max_steps={max_steps}",
            "rollout.resources={rollout: 1}", "judge.resources={rollout: 1}", "learner.resources={learner: 1}",
            # A soak kills the same actor more often within one attempt than a run expects in its
            # life (Ray's default here is 3 restarts): past it Ray gives the actor up for good.
            "rollout.max_restarts=10", "judge.max_restarts=10",
            "checkpoint.every=4", "checkpoint.keep=2", f"checkpoint.dir={run_dir}",
            f"pipeline.spill_dir={run_dir / 'pairs'}",
            "metrics.trackers=[]", "metrics.progress=false", "metrics.ray_metrics=false", f"ray.address={address}"]
    if tiny:
        args += [f"model.path={tiny}", "judge.kind=self", "judge.drop_ties=false", "data.prompts=questions",
                 "eval.prompts=", "data.num_prompts=200", "rollout.k=2", "rollout.max_tokens=8",
                 "learner.lora.enabled=false", "learner.lr=1e-3", "checkpoint.every=2"]
    return args


# -- the simulated cluster -------------------------------------------------------------------

class SimCluster:
    """Head (the driver's node, no CPUs for actors), two `rollout` nodes, one `learner` node; this
    process joins it to read the actor table and remove nodes."""

    ROLLOUT_NODE = {"num_cpus": 2, "resources": {"rollout": 2}}

    def __init__(self):
        import ray
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        self.rollout_nodes = [self.cluster.add_node(**self.ROLLOUT_NODE) for _ in range(2)]
        self.learner_node = self.cluster.add_node(num_cpus=2, resources={"learner": 2})
        self.cluster.wait_for_nodes()
        ray.init(address=self.cluster.address, log_to_driver=False)
        self.address = self.cluster.address

    def actors(self) -> list[dict]:
        """The run's actors not dead (role, state, pid, node), those of a killed driver included
        until Ray has reaped them."""
        import ray

        out = []
        for a in ray._private.state.actors().values():
            match = ROLE.search(a.get("Name") or "")
            if match and a["State"] != "DEAD":
                out.append({"role": f"{match[1]}-{match[2]}", "state": a["State"], "pid": a["Pid"],
                            "node": a["Address"]["NodeID"]})
        return out

    def node_of(self, node_id: str):
        return next((n for n in self.rollout_nodes if n.node_id == node_id), None)

    def remove(self, node) -> None:
        self.rollout_nodes.remove(node)
        self.cluster.remove_node(node, allow_graceful=False)  # every process on it, kill -9

    def add_rollout_node(self) -> None:
        self.rollout_nodes.append(self.cluster.add_node(**self.ROLLOUT_NODE))

    def stop(self) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()


# -- one run ---------------------------------------------------------------------------------

class Attempt:
    """One `python -m cluster.train` process (the first, or a `--resume`)."""

    def __init__(self, args: list[str], resume: bool, log_path: Path, resumed_from: int, step_delay: float):
        """`step_delay`: hold each step this long (bench/chaos_driver.py; the tiny model), else 0."""
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        driver = [str(REPO / "bench/chaos_driver.py"), str(step_delay)] if step_delay else ["-m", "cluster.train"]
        self.command = [sys.executable, *driver, *(["--resume"] if resume else []), *args]
        self.log_path, self.resumed_from = log_path, resumed_from
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(self.command, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.started = time.monotonic()

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text()[-chars:]


class Soak:
    def __init__(self, name: str, out: Path, faults: list[Fault], opts: argparse.Namespace):
        """`opts`: the command line's steps, tiny, step_delay and hang_s."""
        self.name, self.dir = name, out / name
        self.run_dir = self.dir / "run"
        self.max_steps, self.faults, self.tiny, self.hang_s = opts.steps, faults, opts.tiny, opts.hang_s
        self.step_delay = opts.step_delay
        self.attempts: list[dict] = []
        # (attempt, step) → when the step's line first appeared, seen by a thread of its own that
        # only reads the file (the loop's Ray calls, a node's removal or joining, can block).
        self.step_seen: dict[tuple[int, int], float] = {}
        self.old_lines: set[str] = set()  # metrics.jsonl's lines when the current attempt started
        self.lock = threading.Lock()
        self.start = time.monotonic()
        self.unexpected: list[dict] = []

    def now(self) -> float:
        return round(time.monotonic() - self.start, 1)

    # -- what the run has done ------------------------------------------------------------
    def metrics_lines(self) -> list[str]:
        path = self.run_dir / "metrics.jsonl"
        return [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else []

    def steps(self) -> list[int]:
        """The steps in metrics.jsonl now."""
        try:
            return [json.loads(line)["step"] for line in self.metrics_lines()]
        except json.JSONDecodeError:  # a line half-written
            return []

    def _watch_steps(self, stop: threading.Event) -> None:
        """Record when each step of the current attempt first shows: a line the file did not hold
        when the attempt started (until a resumed driver truncates the file, it still holds the
        lost attempt's lines)."""
        while not stop.wait(0.2):
            lines = self.metrics_lines()
            with self.lock:
                k, now = len(self.attempts) - 1, self.now()
                for line in lines:
                    if line not in self.old_lines:
                        try:
                            self.step_seen.setdefault((k, json.loads(line)["step"]), now)
                        except json.JSONDecodeError:  # half-written: read again next time
                            pass

    def top_step(self) -> int:
        """The highest step the current attempt has logged, or the step it resumed from."""
        with self.lock:
            k = len(self.attempts) - 1
            return max((s for (a, s) in self.step_seen if a == k), default=self.attempts[k]["resumed_from"])

    def latest_step(self) -> int:
        """The step of the checkpoint `latest` names (its run state's), 0 before the first."""
        from cluster.driver import checkpoint as ckpt

        latest = ckpt.latest_checkpoint(self.run_dir)
        return ckpt.load_state(latest).step if latest else 0

    def spill_files(self) -> set[str]:
        spill = self.run_dir / "pairs"
        return {p.name for p in spill.glob("pairs-*.parquet")} if spill.exists() else set()

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> dict:
        self.dir.mkdir(parents=True, exist_ok=True)
        cluster = SimCluster()
        args = run_args(self.run_dir, cluster.address, self.max_steps, self.tiny)
        pending = list(self.faults)
        active: Fault | None = None
        attempt = self._launch(args, resume=False)
        last_progress, last_step = time.monotonic(), 0
        node_back_due: float | None = None
        stop = threading.Event()
        watcher = threading.Thread(target=self._watch_steps, args=(stop,), daemon=True)
        watcher.start()
        try:
            while True:
                time.sleep(0.5)
                top = self.top_step()
                if top != last_step:
                    last_progress, last_step = time.monotonic(), top
                if node_back_due is not None and time.monotonic() >= node_back_due:
                    cluster.add_rollout_node()
                    active.note += f"; a new rollout node joined at {self.now()}s"
                    node_back_due = None
                if active is not None and self._recovered(active, cluster, top, node_back_due):
                    active = None
                rc = attempt.proc.poll()
                if rc is not None:
                    self._ended(attempt, rc)
                    if rc == 0 and max(self.steps(), default=0) >= self.max_steps:
                        break
                    active = self._stopped(attempt, rc, active)
                    attempt = self._launch(args, resume=True)
                    last_progress = time.monotonic()
                    continue
                if time.monotonic() - last_progress > self.hang_s:  # no step for hang_s: a hang
                    self.unexpected.append({"at": self.now(), "step": top, "what": f"no step for {self.hang_s:.0f}s"})
                    if active is not None:
                        active.survived, active.note = False, active.note + "; the run hung"
                        active = None
                    attempt.proc.kill()
                    continue
                # One fault at a time: the next once the run has recovered from the last, and
                # none in the run's last step (its end, not a fault, would stop it).
                if active is None and pending and pending[0].step <= top < self.max_steps - 1:
                    fault = pending[0]
                    if fault.due_at is None:
                        fault.due_at = time.monotonic() + fault.delay_s
                    if time.monotonic() >= fault.due_at:
                        pending.pop(0)
                        active = fault
                        node_back_due = self._inject(fault, cluster, attempt, top)
        finally:
            stop.set()
            watcher.join()
            if attempt.proc.poll() is None:
                attempt.proc.kill()
                attempt.proc.wait()
            attempt.log.close()
            cluster.stop()
        for fault in pending:  # never injected (the run ended first): say so
            fault.note = "not injected: the run ended first"
        if active is not None and active.kind not in STOPS_THE_RUN and active.survived is None:
            active.survived = True  # the run went on by itself to its end
            active.note += "; the run ended before the soak saw the actor back and a step after it"
        return self._result()

    def _launch(self, args: list[str], resume: bool) -> Attempt:
        k = len(self.attempts)
        resumed_from = self.latest_step() if resume else 0
        with self.lock:
            self.old_lines = set(self.metrics_lines())
            attempt = Attempt(args, resume, self.dir / f"driver-{k}.log", resumed_from, self.step_delay)
            self.attempts.append({"resumed_from": resumed_from, "started_at": self.now(),
                                  "spill_before": self.spill_files(), "command": shlex.join(attempt.command)})
        return attempt

    def _ended(self, attempt: Attempt, rc: int) -> None:
        """Snapshot what the attempt leaves: its journal and metrics lines, the pairs it spilled."""
        attempt.log.close()
        record = self.attempts[-1]
        record.update(ended_at=self.now(), returncode=rc, journal=read_jsonl(self.run_dir / "journal.jsonl"),
                      metrics_steps=self.steps(), spilled_files=sorted(self.spill_files() - record.pop("spill_before")))

    def _stopped(self, attempt: Attempt, rc: int, active: Fault | None) -> Fault | None:
        """The driver exited before the end: expected after a learner or driver fault (the soak
        resumes it), otherwise a fault not survived. Returns the fault still being recovered."""
        if active is not None and active.kind in STOPS_THE_RUN:
            clean = (active.kind == "driver" and rc == -signal.SIGKILL) or \
                    (active.kind == "learner" and rc == 3 and "--resume" in attempt.tail())
            if not clean:
                active.survived, active.note = False, f"{active.note}; exit {rc}: {attempt.tail(600)}"
            return active
        self.unexpected.append({"at": self.now(), "returncode": rc, "log_tail": attempt.tail(2000)})
        if active is not None:
            active.survived, active.note = False, f"{active.note}; the driver exited {rc}"
        return None

    def _inject(self, fault: Fault, cluster: SimCluster, attempt: Attempt, top: int) -> float | None:
        """Inject `fault`; returns when a lost node's replacement is due (node faults)."""
        actors = {a["role"]: a for a in cluster.actors()}
        fault.at_step, fault.attempt = top, len(self.attempts) - 1
        if fault.kind in ("rollout", "judge", "learner"):
            role = {"rollout": f"rollout-{fault.target}", "judge": "judge-0", "learner": f"learner-{fault.target}"}[fault.kind]
            victim = actors.get(role)
            if victim is None or victim["state"] != "ALIVE" or not victim["pid"]:
                fault.detail, fault.note = f"not injected: {role} was not alive ({victim})", "skipped"
                return None
            fault.injected_at = self.now()
            fault.detail, fault.pid = f"kill -9 {role} pid {victim['pid']}", victim["pid"]
            os.kill(victim["pid"], signal.SIGKILL)
            return None
        fault.injected_at = self.now()
        if fault.kind == "driver":
            fault.detail = f"kill -9 driver pid {attempt.proc.pid}"
            os.kill(attempt.proc.pid, signal.SIGKILL)
            return None
        if fault.kind == "node":
            victim = actors.get(f"rollout-{fault.target}")
            node = cluster.node_of(victim["node"]) if victim else None
            node = node or cluster.rollout_nodes[0]
            on_it = sorted(role for role, a in actors.items() if a["node"] == node.node_id)
            fault.detail = f"removed rollout node {node.node_id[:8]} (with {', '.join(on_it) or 'no actor'})"
            fault.lost_roles = on_it
            cluster.remove(node)
            return time.monotonic() + fault.down_s
        raise ValueError(f"unknown fault kind {fault.kind!r}")

    def _recovered(self, fault: Fault, cluster: SimCluster, top: int, node_back_due: float | None) -> bool:
        if fault.note == "skipped":
            return True
        k = len(self.attempts) - 1
        # A run stopped by the fault is back when an attempt started after it logs a step past it.
        resumed = self.attempts[-1]["started_at"] >= fault.injected_at
        if fault.next_step_at is None and top > fault.at_step and (resumed or fault.kind not in STOPS_THE_RUN):
            with self.lock:
                seen = [t for (a, step), t in self.step_seen.items() if a == k and step > fault.at_step]
            if seen:  # (a step the watcher saw a moment before the fault counts from the fault)
                fault.next_step_at = max(min(seen), fault.injected_at)
        if fault.back_at is None:
            actors = cluster.actors()
            alive = all(a["state"] == "ALIVE" for a in actors)
            if fault.kind in STOPS_THE_RUN:  # the resumed driver's five actors, the old ones gone
                back = resumed and alive and len(actors) == ACTORS
            elif fault.kind == "node":
                back = node_back_due is None and alive and {a["role"] for a in actors} >= set(fault.lost_roles)
            else:
                role = {"rollout": f"rollout-{fault.target}", "judge": "judge-0"}[fault.kind]
                back = any(a["role"] == role and a["state"] == "ALIVE" and a["pid"] not in (0, fault.pid) for a in actors)
            if back:
                fault.back_at = self.now()
        done = fault.back_at is not None and fault.next_step_at is not None
        if done and fault.survived is None:
            fault.survived = True
        return done

    # -- the result -----------------------------------------------------------------------
    def _result(self) -> dict:
        import pyarrow.parquet as pq

        from cluster.config import load_config
        from cluster.driver import checkpoint as ckpt
        from cluster.driver.journal import pair_keys
        from cluster.driver.ledger import PromptSchedule
        from cluster.run import build_run

        cfg = load_config(self.run_dir / "config.yaml")
        spec = build_run(cfg, resume=True)
        latest = ckpt.latest_checkpoint(self.run_dir)
        final = ckpt.load_state(latest)
        order = PromptSchedule(len(spec.prompts), cfg.seed, cfg.data.shuffle)
        metrics = read_jsonl(self.run_dir / "metrics.jsonl")
        for attempt in self.attempts:
            attempt["spilled"] = [key for name in attempt["spilled_files"]
                                  for key in pair_keys(pq.read_table(self.run_dir / "pairs" / name))]
        run = {
            "max_steps": self.max_steps, "pairs_per_step": cfg.learner.pairs_per_step,
            "max_staleness": cfg.pipeline.max_staleness, "sync_every": cfg.learner.sync_every,
            "handed_out": [order.index_at(p) for p in range(final.next_prompt)], "final_state": json.loads(final.to_json()),
            "metrics_steps": [m["step"] for m in metrics],
            "skipped_steps": int(sum(m.get("step/skipped", 0) for m in metrics)),
            "journal": read_jsonl(self.run_dir / "journal.jsonl"), "attempts": self.attempts,
            "optimizer_steps": optimizer_steps(latest),
            "weights_check": _json_or_none(self.run_dir / "weights_check.json"),
        }
        checks = audit(run)
        heldout = _json_or_none(self.run_dir / "heldout.json")
        step_times = self._step_times()
        return {
            "name": self.name,
            "wall_s": self.now(),
            "steps": self.max_steps,
            "attempts": [{k: v for k, v in a.items() if k not in ("journal", "spilled")} for a in self.attempts],
            "faults": [asdict(f) for f in self.faults],
            "unexpected": self.unexpected,
            "audit": checks,
            "heldout_gain": None if heldout is None else heldout["gain"]["prompt_strict"],
            "heldout_sft": None if heldout is None else heldout["sft"]["prompt_strict"]["value"],
            "heldout_final": None if heldout is None else heldout["final"]["prompt_strict"]["value"],
            "step_times": step_times,
            "step_seen": [[k, step, t] for (k, step), t in sorted(self.step_seen.items())],
            "loss_last5": statistics.mean(m["loss"] for m in metrics[-5:]) if metrics else None,
        }

    def _step_times(self) -> list[float]:
        """When the soak first saw each step of the lineage (seconds since it started)."""
        times = {}
        for (k, step), seen in sorted(self.step_seen.items()):
            end = self.attempts[k + 1]["resumed_from"] if k + 1 < len(self.attempts) else None
            if step > self.attempts[k]["resumed_from"] and (end is None or step <= end):
                times[step] = seen
        return [times.get(s) for s in range(1, self.max_steps + 1)]


def _json_or_none(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def optimizer_steps(checkpoint: Path) -> int | None:
    """The learner's own count of optimizer steps (DeepSpeed's global_steps) in a checkpoint."""
    import torch

    files = sorted(checkpoint.rglob("mp_rank_*_model_states.pt"))
    if not files:
        return None
    state = torch.load(files[0], map_location="cpu", weights_only=False)
    return int(state["global_steps"]) if "global_steps" in state else None


# -- the figures -----------------------------------------------------------------------------

def median_step_s(runs: list[dict]) -> float:
    """The median time between consecutive steps of fault-free runs."""
    intervals = [b - a for r in runs for a, b in zip(r["step_times"], r["step_times"][1:]) if a and b]
    return statistics.median(intervals) if intervals else 0.0


def seconds_lost(fault: dict, healed: float, step_seen: list[list], step_s: float) -> float:
    """The time a fault cost: from its injection to the first step logged once it had healed
    (its actor or node back, a step past it), less the new steps (numbered past the one it struck
    at) made meanwhile at the fault-free pace. The steps are those of the driver it struck, or
    for a fault that stops the run, of the resumed one: steps redone after a resume are not new,
    their time counts as lost."""
    attempt = fault["attempt"] + (fault["kind"] in STOPS_THE_RUN)
    steps = [(step, t) for k, step, t in step_seen if k == attempt]
    after = [t for _, t in steps if t >= healed]
    end = min(after) if after else healed
    new = sum(1 for step, t in steps if step > fault["at_step"] and fault["injected_at"] < t <= end)
    return round(max(0.0, end - fault["injected_at"] - new * step_s), 1)


def summarize(soak: dict, baselines: list[dict]) -> dict:
    """The figures docs/reliability.md reports: faults by kind, what was lost, the time lost."""
    base_walls = [b["wall_s"] for b in baselines]
    step_s = median_step_s(baselines or [soak])
    by_kind: dict[str, dict] = {}
    for f in soak["faults"]:
        if f["injected_at"] is None:
            continue
        k = by_kind.setdefault(f["kind"], {"injected": 0, "survived": 0, "recovery_s": [], "lost_s": []})
        k["injected"] += 1
        k["survived"] += bool(f["survived"])
        if f["back_at"] is not None and f["next_step_at"] is not None:
            healed = max(f["back_at"], f["next_step_at"])
            k["recovery_s"].append(round(healed - f["injected_at"], 1))
            k["lost_s"].append(seconds_lost(f, healed, soak["step_seen"], step_s))
    slowest = max(((f["kind"], max(f["back_at"], f["next_step_at"]) - f["injected_at"]) for f in soak["faults"]
                   if f["back_at"] is not None and f["next_step_at"] is not None), key=lambda x: x[1], default=None)
    gains = [b["heldout_gain"]["value"] for b in baselines if b.get("heldout_gain")]
    gain = soak["heldout_gain"]["value"] if soak.get("heldout_gain") else None
    audit_ = soak["audit"]
    return {
        "faults_injected": sum(k["injected"] for k in by_kind.values()),
        "faults_survived": sum(k["survived"] for k in by_kind.values()),
        "by_kind": by_kind,
        "prompts_lost": audit_["prompts"]["lost"],
        "prompts_accounted_twice": audit_["prompts"]["double"],
        "pairs_duplicated": audit_["pairs"]["duplicated"],
        "pairs_trained": audit_["pairs"]["trained"],
        "steps_repeated": len(audit_["steps"]["steps_repeated"]),
        "audit_ok": audit_["ok"],
        "slowest_recovery": None if slowest is None else {"kind": slowest[0], "seconds": round(slowest[1], 1)},
        "soak_wall_s": soak["wall_s"],
        "baseline_wall_s": base_walls,
        "seconds_lost_total": round(soak["wall_s"] - statistics.median(base_walls), 1) if base_walls else None,
        "step_s": round(step_s, 2),  # the median fault-free step interval (baselines; else the soak's own)
        "attempts": len(soak["attempts"]),
        "steps_redone": sum(max(0, (a.get("metrics_steps") or [0])[-1] - b["resumed_from"])
                            for a, b in zip(soak["attempts"], soak["attempts"][1:])),
        "heldout_gain": gain,
        "heldout_gain_ci": None if not soak.get("heldout_gain") else [soak["heldout_gain"]["ci_low"],
                                                                        soak["heldout_gain"]["ci_high"]],
        "baseline_gains": gains,
        "gain_within_baseline_spread": None if gain is None or not gains else min(gains) <= gain <= max(gains),
        "unexpected_exits": len(soak["unexpected"]),
    }


def write_docs(out: Path, path: Path) -> dict:
    """docs/reliability.json's `soak`: the summary, each fault and the audit of the soak, and the
    fault-free runs' figures. Prints the summary's tables in Markdown (docs/reliability.md)."""
    soak = json.loads((out / "soak" / "result.json").read_text())
    baselines = [json.loads(p.read_text()) for p in sorted(out.glob("baseline-*/result.json"))]
    summary = summarize(soak, baselines)
    record = {"date": soak["date"], "command": soak["command"], "summary": summary,
              "faults": soak["faults"], "attempts": soak["attempts"], "audit": soak["audit"],
              "unexpected": soak["unexpected"],
              "baselines": [{"wall_s": b["wall_s"], "heldout_gain": b["heldout_gain"], "audit_ok": b["audit"]["ok"],
                             "loss_last5": b["loss_last5"]} for b in baselines],
              "soak_loss_last5": soak["loss_last5"]}
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc["soak"] = record
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print("| fault | injected | survived | recovery s (each) | seconds lost (each) |\n|---|---|---|---|---|")
    for kind, k in summary["by_kind"].items():
        print(f"| {kind} | {k['injected']} | {k['survived']} | {', '.join(map(str, k['recovery_s']))} | "
              f"{', '.join(map(str, k['lost_s']))} |")
    print(json.dumps({k: v for k, v in summary.items() if k != "by_kind"}, indent=1))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="a folder: one sub-folder and result.json per run")
    parser.add_argument("--steps", type=int, default=40, help="learner steps of each run")
    parser.add_argument("--kinds", default=",".join(DEFAULT_MIX),
                        help=f"the faults, one entry each (kinds: {', '.join(KINDS)}); default: the 10-fault mix")
    parser.add_argument("--seed", type=int, default=0, help="the fault schedule's seed (the run's own seed is its config's)")
    parser.add_argument("--baselines", type=int, default=0, help="fault-free runs of the same config (held-out spread)")
    parser.add_argument("--only", help="run only this one: soak or baseline-<i>")
    parser.add_argument("--tiny", metavar="MODEL_DIR", help="the tiny random model instead of the main job's SmolLM2")
    parser.add_argument("--hang-s", type=float, default=900, help="no step for this long: a hang")
    parser.add_argument("--step-delay", type=float, default=0.0,
                        help="hold each learner step this long (bench/chaos_driver.py): for the tiny model")
    parser.add_argument("--docs", action="store_true", help="write docs/reliability.md and .json from <out>")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    mix = [k for k in args.kinds.split(",") if k]
    if unknown := sorted(set(mix) - set(KINDS)):
        parser.error(f"--kinds: unknown {unknown}; choose from {KINDS}")
    names = [f"baseline-{i}" for i in range(args.baselines)] + ["soak"]
    for name in [args.only] if args.only else names:
        if (out / name / "result.json").exists():
            continue
        faults = schedule(mix, args.steps, args.seed, rollouts=2, ranks=2) if name == "soak" else []
        result = Soak(name, out, faults, args).run()
        result["command"] = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv)
        result["date"] = datetime.date.today().isoformat()
        (out / name / "result.json").write_text(json.dumps(result, indent=1))
        print(json.dumps({"run": name, "wall_s": result["wall_s"], "audit_ok": result["audit"]["ok"],
                          "faults": [(f["kind"], f["at_step"], f["survived"]) for f in result["faults"]]}))
    if args.docs:
        write_docs(out, REPO / "docs" / "reliability.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
