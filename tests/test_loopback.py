"""The local cluster the main job starts listens on 127.0.0.1 only, its actors included
(checked with `ss -ltnp` over every process of that Ray session: the rollout, judge and two
learner ranks of a real run and their weight-broadcast group), and what a kill -9 of its
driver leaves behind is stopped by the next start."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.engine, pytest.mark.timeout(300),
              pytest.mark.skipif(shutil.which("ss") is None, reason="needs `ss` (iproute2)")]

REPO = Path(__file__).resolve().parent.parent

# A driver as the main job starts one (cluster.driver.ray_setup.init_ray, no address): a local
# cluster and, given a model (argv[3]), the main job's actors: a rollout actor, a judge and two
# learner ranks (their DeepSpeed group), two learner steps and weight pushes over a broadcast
# group (its own store and gloo sockets). Then it reports and waits with every actor alive.
DRIVER = """
import json, os, sys, tempfile, time
from cluster.driver.ray_setup import init_ray
ray = init_ray(None, num_cpus=6, dashboard_port=int(sys.argv[1]), worker_logs=False)
if len(sys.argv) > 3:
    from cluster.config import load_config
    from cluster.driver.pipeline import Pipeline
    from cluster.run import build_run
    cfg = load_config(None, [f"model.path={sys.argv[3]}", "rollout.max_tokens=6", "learner.num_ranks=2",
                             "learner.pairs_per_step=2", "learner.max_steps=2", "weight_sync.method=broadcast",
                             "weight_sync.payload=full", "checkpoint.every=0", "metrics.trackers=[]",
                             "metrics.progress=false", f"checkpoint.dir={tempfile.mkdtemp()}/run"])
    spec = build_run(cfg)
    pipeline = Pipeline(spec, spec.initial_state())
    pipeline.start()
    assert pipeline.run().step == 2
else:
    @ray.remote(num_cpus=1)
    class Echo:
        def echo(self, x):
            return x

    echo = Echo.remote()
    assert ray.get(echo.echo.remote(b"x" * (1 << 20))) == b"x" * (1 << 20)
print(json.dumps({"ready": True}), flush=True)
time.sleep(float(sys.argv[2]))
"""


def _descendants(root: int) -> set[int]:
    """`root` and every process under it (the GCS, raylet, agents and workers it started)."""
    return {root} | {p.pid for p in psutil.Process(root).children(recursive=True)}


def _listening(pids: set[int]) -> list[str]:
    """'address:port (process)' of every TCP listener owned by one of `pids`."""
    out = []
    for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines():
        fields = line.split()
        owners = {int(p.split("=")[1]) for p in fields[-1].split(",") if p.startswith("pid=")} if "pid=" in line else set()
        if owners & pids:
            out.append(f"{fields[3]} {fields[-1]}")
    return out


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def _start_driver(seconds: float, model: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO)
    from core.net import free_port

    args = [sys.executable, "-c", DRIVER, str(free_port()), str(seconds)] + ([model] if model else [])
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert json.loads(line or "{}").get("ready"), proc.stderr.read()[-3000:] if proc.poll() is not None else line
    return proc


def test_the_main_jobs_cluster_and_actors_listen_on_loopback_only(tiny_model_dir):
    """Would catch a listener on every interface: torch's TCPStore of the learner group or of
    the weight-broadcast group (`*:<port>` by default), gloo on the host's address, or a Ray
    server not bound to loopback."""
    proc = _start_driver(seconds=60, model=tiny_model_dir)
    try:
        listeners = _listening(_descendants(proc.pid))
        # GCS, raylet (node and object manager), the dashboard and its agents, the workers, and
        # the learner ranks' group and weight group sockets (LearnerRank owns some of them).
        assert len(listeners) >= 5, listeners
        assert any("ray::LearnerRan" in a for a in listeners), listeners  # ss cuts names at 15 characters
        assert [a for a in listeners if not _is_loopback(a.split()[0])] == [], listeners
    finally:
        proc.kill()
        proc.wait()
        time.sleep(1)


def test_what_a_killed_driver_leaves_is_stopped_by_the_next_start():
    from cluster.driver.ray_setup import reap_orphaned_ray_processes

    proc = _start_driver(seconds=120)
    session = _descendants(proc.pid) - {proc.pid}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(3)  # the GCS and raylet notice their parent's death within a second or two
    left = [pid for pid in session if Path(f"/proc/{pid}").exists()]
    killed = reap_orphaned_ray_processes()  # what init_ray does before starting a local cluster
    time.sleep(1)
    still = [pid for pid in session if Path(f"/proc/{pid}/cmdline").exists()
             and Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert still == [], (left, killed)
    # Without the reaper the dashboard and runtime-env agents linger ~60 s (measured here),
    # holding their ports: whatever was left, the reaper stopped it.
    assert not left or killed, (left, killed)
