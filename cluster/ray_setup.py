"""Starting or joining Ray, with the stack's environment passed to every worker."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cluster.env import apply_runtime_env, runtime_env_vars

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent


def ray_address(configured: str | None) -> str | None:
    """The cluster to join: the config's, else RAY_ADDRESS (set by `ray job submit`), else None
    (start a local one)."""
    if configured:
        return configured
    return os.environ.get("RAY_ADDRESS") or None


def init_ray(address: str | None = None, num_cpus: int | None = None, dashboard_host: str = "127.0.0.1",
             dashboard_port: int = 8265, worker_logs: bool = True):
    """`worker_logs`: stream every worker's stdout/stderr to this console (Ray's log_to_driver)."""
    import ray

    env = apply_runtime_env()
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
        # apply cluster/env.py themselves first thing, so nothing is lost.
        log.info("joining Ray cluster at %s (as a submitted job)", target)
        ray.init(address=target, log_to_driver=worker_logs)
    elif target:
        log.info("joining Ray cluster at %s", target)
        ray.init(address=target, runtime_env=worker_env, log_to_driver=worker_logs)
    else:
        cpus = num_cpus or max(os.cpu_count() or 1, 4)
        log.info("starting a local Ray cluster (%d CPUs, dashboard on %s)", cpus, dashboard_host)
        ray.init(
            num_cpus=cpus,
            runtime_env=worker_env,
            include_dashboard=True,
            dashboard_host=dashboard_host,  # loopback by default: the dashboard can run jobs
            dashboard_port=dashboard_port,
            log_to_driver=worker_logs,
        )
    del env
    return ray


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
