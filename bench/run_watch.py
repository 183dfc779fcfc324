"""What the machine did during one bench invocation: the CPU seconds and threads of every process
of the run at each learner step, the model file's pages in the page cache before it started, and
the load average. Read by bench/pairs_per_second.py to say what moves a throughput figure
between invocations (docs/benchmarks.md, "What moves the figure").

The run's processes are this process and its descendants: a run that starts its own local Ray
cluster (what a user's first invocation does) owns its raylet, GCS, dashboard and every actor's
worker process, so processes of other users' runs on the same machine are never counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import psutil

# A thread counts as computing in a window when it ran at least this share of the window's wall time.
BUSY_THREAD_SHARE = 0.05


def role_of(proc: psutil.Process, me: int) -> str:
    """A process's part in the run: the actor class of a Ray worker (`ray::RolloutActor.generate`
    → RolloutActor), `driver` for this process, else the Ray service it is."""
    if proc.pid == me:
        return "driver"
    try:
        cmd = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    head = cmd[0] if cmd else ""
    if head.startswith("ray::"):
        return head[5:].split(".")[0]  # IDLE for a pooled worker without an actor
    line = " ".join(cmd)
    for key, role in (("raylet", "raylet"), ("gcs_server", "gcs"), ("dashboard", "ray-dashboard"),
                      ("log_monitor", "ray-log-monitor"), ("runtime_env", "ray-runtime-env")):
        if key in line:
            return role
    return "other"


def snapshot() -> dict[int, dict]:
    """CPU seconds of this process and each descendant, and of each of their threads."""
    me = psutil.Process()
    out = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                threads = {t.id: t.user_time + t.system_time for t in proc.threads()}
                out[proc.pid] = {"role": role_of(proc, me.pid), "cpu_s": times.user + times.system, "threads": threads}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def window(first: dict, last: dict, wall_s: float) -> dict[str, dict]:
    """Each process's share of a window between two snapshots, by role (`RolloutActor`,
    `LearnerRank#2` for a second process of the same role): CPU seconds, cores (CPU seconds
    over the wall time), its OS threads and how many of them computed (BUSY_THREAD_SHARE)."""
    out: dict[str, dict] = {}
    for pid in sorted(last):
        end, start = last[pid], first.get(pid, {"cpu_s": 0.0, "threads": {}})
        cpu_s = end["cpu_s"] - start["cpu_s"]
        used = [end["threads"][t] - start["threads"].get(t, 0.0) for t in end["threads"]]
        role, n = end["role"], 2
        while role in out:
            role, n = f"{end['role']}#{n}", n + 1
        out[role] = {"cpu_s": round(cpu_s, 2), "cores": round(cpu_s / wall_s, 3), "os_threads": len(end["threads"]),
                     "busy_threads": sum(u >= BUSY_THREAD_SHARE * wall_s for u in used)}
    return out


class StepWatch:
    """Snapshots the run's processes (`snapshot`) each time a learner step's line lands in the
    run's metrics.jsonl, on a background thread polling every `poll_s` seconds: so each step's
    CPU use by role can be read afterwards (`between`). A snapshot lags its line by up to
    `poll_s` (0.25 s against steps of 5–20 s)."""

    def __init__(self, metrics_path: Path, poll_s: float = 0.25):
        self.path, self.poll_s = Path(metrics_path), poll_s
        self.at_step: dict[int, tuple[float, dict]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="step-watch", daemon=True)

    def __enter__(self) -> StepWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        seen = 0
        while not self._stop.wait(self.poll_s):
            if not self.path.exists():
                continue
            lines = [line for line in self.path.read_text().splitlines() if line.strip()]
            if len(lines) > seen:
                snap, now = snapshot(), time.time()
                for line in lines[seen:]:
                    self.at_step[json.loads(line)["step"]] = (now, snap)
                seen = len(lines)

    def between(self, first_step: int, last_step: int) -> dict[str, dict] | None:
        """CPU use by role from `first_step`'s line to `last_step`'s (`window`); None when
        either was missed."""
        if first_step not in self.at_step or last_step not in self.at_step:
            return None
        (t0, s0), (t1, s1) = self.at_step[first_step], self.at_step[last_step]
        return window(s0, s1, max(t1 - t0, 1e-9))


def resident_bytes(path: Path) -> int | None:
    """Bytes of `path` in the page cache now (util-linux `fincore`); None if it cannot tell."""
    try:
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                             capture_output=True, text=True, check=True, timeout=30)
        return int(out.stdout.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def drop_page_cache() -> None:
    """Write dirty pages back and drop the page cache (needs root): the next process reads its
    libraries and the model from disk, as after a reboot. RuntimeError naming the fix if refused."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as err:
        raise RuntimeError(f"--cold-cache: cannot drop the page cache ({err}); run as root or leave --cold-cache out") from None


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages (as `uptime` prints them)."""
    return [round(x, 2) for x in os.getloadavg()]
