"""Every environment variable the stack needs, set in one place.

Call `apply_runtime_env()` before importing vLLM, Ray, DeepSpeed or transformers in any
process (driver, actors, tests). Values already set by the user win, except where a
different value is known to break the run (noted per variable).
"""

from __future__ import annotations

import os
import resource

# Applied on every machine.
COMMON_ENV: dict[str, str] = {
    # Models: the hub is NOT switched off here. Every model library is handed a local folder
    # (core/models.resolve_model), and only that resolver downloads a hub id, unless the user
    # sets HF_HUB_OFFLINE=1 (forwarded to the workers with the other HUB_ENV variables).
    # Prompt sets named like a dataset id stay cache-only, as documented (cluster/data/prompts.py);
    # HF_DATASETS_OFFLINE touches the `datasets` library alone.
    "HF_DATASETS_OFFLINE": "1",
    # Head, driver and actors must agree on the auth mode. Locally it is off (a token written
    # by one local `ray.init` makes later `address="auto"` drivers fail to create actors, and
    # the local cluster listens on loopback only). A cluster with Ray's token auth sets
    # RAY_AUTH_MODE=token (and RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH) on every node and in the
    # submitting shell: that choice is kept (apply_runtime_env).
    "RAY_AUTH_MODE": "disabled",
    # Fork-after-tokenizer-use warnings flood the logs of every actor.
    "TOKENIZERS_PARALLELISM": "false",
    # Ray's usage-stats prompt/upload: nothing outside is reachable.
    "RAY_USAGE_STATS_ENABLED": "0",
}

# The user's Hugging Face hub settings: passed on to every worker where set in the driver's
# environment (workers on another node do not inherit the driver's shell), so an actor resolves
# a hub id with the same offline switch, cache and endpoint. Not HF_TOKEN: Ray writes every
# runtime env it creates, in plain text, to the session's runtime_env_agent.log (measured: 63
# copies in one test session), which the run folder links as worker-logs. The workers of a
# local cluster the driver starts inherit HF_TOKEN from it; on any other cluster each node has
# its own (its environment, or the token file `hf auth login` writes, which HF_TOKEN_PATH may
# name). docs/models.md.
HUB_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "HF_ENDPOINT", "HF_TOKEN_PATH")

# Applied only when no CUDA device is visible.
CPU_ENV: dict[str, str] = {
    # vLLM-CPU's default KV-cache sizing asks for a fraction of node memory and fails on small
    # machines ("Available memory on node 0 ... less than desired"). 1 GiB is plenty here.
    "VLLM_CPU_KVCACHE_SPACE": "1",
    # DeepSpeed picks its accelerator by probing; pin it so a stray CUDA wheel cannot confuse it.
    "DS_ACCELERATOR": "cpu",
}
# gloo's interface is set by each process that forms a group, from its node's address
# (core/net.bind_gloo_to): `lo` on a local cluster, the node's own interface on a real one.


def has_cuda() -> bool:
    """True when a CUDA device is usable; decided without importing torch when possible."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # torch missing or broken: certainly no CUDA path
        return False


def hub_env_vars() -> dict[str, str]:
    """The HUB_ENV variables set in this process, read now."""
    return {key: os.environ[key] for key in HUB_ENV if os.environ.get(key)}


def runtime_env_vars(cuda: bool | None = None) -> dict[str, str]:
    """The variables to set in this process and pass to Ray workers (runtime_env): the stack's
    own, and the user's hub settings (HUB_ENV) where set."""
    cuda = has_cuda() if cuda is None else cuda
    env = {**COMMON_ENV, **hub_env_vars()}
    if os.environ.get("RAY_AUTH_MODE") == "token":  # a cluster with token auth: every process keeps it
        env["RAY_AUTH_MODE"] = "token"
    if not cuda:
        env.update(CPU_ENV)
    return env


def apply_runtime_env(cuda: bool | None = None) -> dict[str, str]:
    """Set the stack's variables in os.environ (user values kept) and return them."""
    env = runtime_env_vars(cuda)
    for key, value in env.items():
        if key == "RAY_AUTH_MODE":
            os.environ[key] = value  # `token` if chosen, else `disabled`: never an unknown mode
        else:
            os.environ.setdefault(key, value)
    return {k: os.environ[k] for k in env}


def use_cores(threads: int | None) -> int:
    """An actor's compute threads, set one way for every role: as many as the cores Ray gives it
    (its num_cpus). OpenMP and MKL read their variables when a library first starts its pool,
    torch is told directly; one inter-op thread (nothing here runs ops concurrently within one
    process). Call first thing in the actor, before vLLM or DeepSpeed start threads. Returns
    the count in force (torch's own when `threads` is None)."""
    import torch

    if threads:
        threads = max(1, int(threads))
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[key] = str(threads)
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already fixed by earlier parallel work in this process: keep it
            pass
    return torch.get_num_threads()


def thread_report() -> dict[str, int]:
    """What this process computes with: torch's intra-op threads and the OS threads it has."""
    import psutil
    import torch

    return {"torch_threads": torch.get_num_threads(), "os_threads": psutil.Process().num_threads()}


def disable_deepspeed_shm_comm() -> None:
    """Stop DeepSpeed JIT-building its shared-memory comm op (~100 s) at init_distributed.

    It is only used by inference all-reduce, which we never call.
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def peak_rss_bytes() -> int:
    """This process's peak resident set (Linux reports KiB). It counts shared pages the process
    touched too (the object store's mapping, the page cache of mmapped weights)."""


    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
