"""Starting or joining Ray, with the stack's environment passed to every worker."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import psutil

from core.env import apply_runtime_env, runtime_env_vars

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]  # cluster/driver/ray_setup.py → the repository
LOOPBACK = "127.0.0.1"
_SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def ray_address(configured: str | None) -> str | None:
    """The cluster to join: the config's, else RAY_ADDRESS (set by `ray job submit`), else None
    (start a local one)."""
    if configured:
        return configured
    return os.environ.get("RAY_ADDRESS") or None


def init_ray(address: str | None = None, num_cpus: int | None = None, dashboard_host: str = "127.0.0.1",
             dashboard_port: int = 8265, worker_logs: bool = True):
    """`worker_logs`: stream every worker's stdout/stderr to this console (Ray's log_to_driver)."""
    env = apply_runtime_env()
    import ray  # lazy: Ray reads the environment (RAY_AUTH_MODE, …) at import, applied just above
    if ray.is_initialized():
        return ray
    # Workers inherit the stack's variables and can import this repo's packages even when it
    # is not pip-installed on every node (under `ray job submit` the working_dir ships it).
    worker_env = {"env_vars": dict(runtime_env_vars())}
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    worker_env["env_vars"]["PYTHONPATH"] = pythonpath
    target = ray_address(address)
    if target and os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        # Under `ray job submit` the job's runtime env (working_dir, env_vars) already applies
        # to every worker, and Ray refuses a driver runtime env that repeats its keys. Actors
        # apply core/env.py themselves first thing, so nothing is lost.
        log.info("joining Ray cluster at %s (as a submitted job)", target)
        ray.init(address=target, log_to_driver=worker_logs)
    elif target:
        log.info("joining Ray cluster at %s", target)
        ray.init(address=target, runtime_env=worker_env, log_to_driver=worker_logs)
    else:
        cpus = num_cpus or max(os.cpu_count() or 1, 4)
        reaped = reap_orphaned_ray_processes()
        if reaped:
            log.info("stopped %d Ray processes left by a run that was killed: %s", len(reaped), ", ".join(reaped))
        log.info("starting a local Ray cluster (%d CPUs, listening on 127.0.0.1 only, dashboard on %s:%d)", cpus,
                 dashboard_host, dashboard_port)
        with _loopback_only():
            ray.init(
                num_cpus=cpus,
                runtime_env=worker_env,
                include_dashboard=True,
                dashboard_host=dashboard_host,  # loopback by default: the dashboard can run jobs
                dashboard_port=dashboard_port,
                log_to_driver=worker_logs,
                _node_ip_address=LOOPBACK,
            )
    del env
    return ray


@contextlib.contextmanager
def _loopback_only():
    """A local cluster whose every server (GCS, raylet, object manager, workers, agents, metrics)
    listens on 127.0.0.1 only: the node's address must *stay* 127.0.0.1. Ray turns a loopback
    node address into the host's IP unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (its "no
    multi-node cluster" mode; ray/_private/services.resolve_ip_for_localhost). Ray reads it at
    import, so the constant is set too; the variable reaches the processes ray.init starts
    (and their workers) and is restored here, so nothing else in this process changes."""
    from ray._private import ray_constants  # no public switch for it

    previous_env = os.environ.get(_SINGLE_NODE_ENV)
    previous_constant = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_SINGLE_NODE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous_constant
        if previous_env is None:
            os.environ.pop(_SINGLE_NODE_ENV, None)
        else:
            os.environ[_SINGLE_NODE_ENV] = previous_env


def reap_orphaned_ray_processes() -> list[str]:
    """Kill this user's Ray processes whose raylet is gone (what a kill -9 of a driver that
    started a local cluster leaves: its dashboard and runtime-env agents linger ~60 s holding
    their ports, and a new cluster's agent then fails to bind). A process named `ray::…` is
    always a child of its node's raylet; one whose parent is not a raylet is an orphan. Returns
    the names of the processes killed."""
    killed = []
    me = os.getuid()
    for proc in psutil.process_iter(["cmdline", "uids"]):
        try:
            name = (proc.info["cmdline"] or [""])[0]
            if proc.info["uids"] is None or proc.info["uids"].real != me or not name.startswith("ray::"):
                continue
            parent = proc.parent()
            if parent is not None and parent.pid > 1 and any("raylet" in part for part in parent.cmdline()):
                continue
            proc.kill()
            killed.append(f"{name} (pid {proc.pid})")
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # gone meanwhile, or not ours to read
            continue
    return killed


def link_worker_logs(run_dir: Path) -> Path | None:
    """<run_dir>/worker-logs → this Ray session's log folder (one file per worker process),
    where the actors' own output goes when it is not streamed to the console. None when the
    folder is not on this machine (a remote cluster: see the dashboard's Logs view)."""
    try:
        import ray

        logs = Path(ray._private.worker._global_node.get_logs_dir_path())  # no public API for it
    except Exception:
        return None
    if not logs.is_dir():
        return None
    link = run_dir / "worker-logs"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(logs, target_is_directory=True)
    return link
