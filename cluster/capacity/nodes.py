"""The nodes a run is planned against: read from a live Ray cluster, or from a cluster file that
describes nodes by CPUs, GPUs, GPU memory and RAM (`osp plan --cluster FILE`).

A cluster file (YAML; deploy/recipes/ holds examples):

    nodes:
      - name: gpu-node        # `count` > 1 names them gpu-node-0, gpu-node-1, …
        count: 2
        cpus: 96
        gpus: 8
        gpu_memory_gb: 80     # per GPU
        memory_gb: 1024       # RAM
        resources: {}         # custom Ray resources the node advertises, e.g. {rollout: 1}
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from core.config import ConfigError

GB = 1e9


@dataclass(frozen=True)
class Node:
    """One node as the plan sees it. `node_id`: Ray's id on a live cluster (the plan pins actors
    to it), None for a described node. Memory in bytes; None where it is not known (a live node
    that declares GPUs as a resource but has no driver to ask, e.g. a simulated cluster)."""

    name: str
    cpus: float
    gpus: float = 0.0
    gpu_memory: float | None = None  # per GPU
    memory: float | None = None  # RAM
    resources: dict[str, float] = field(default_factory=dict)
    node_id: str | None = None
    object_store: float | None = None  # RAM Ray's object store reserves (live nodes); else Ray's default share

    def has(self, kind: str) -> float:
        """The node's total of one Ray resource (CPU, GPU or a custom one)."""
        if kind == "CPU":
            return self.cpus
        if kind == "GPU":
            return self.gpus
        return self.resources.get(kind, 0.0)


_NODE_KEYS = {"name", "count", "cpus", "gpus", "gpu_memory_gb", "memory_gb", "resources"}


def nodes_from_file(path: str | Path) -> list[Node]:
    """The nodes a cluster file describes (ConfigError naming the file and the entry if malformed)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"cluster file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"cluster file {str(p)!r} is not valid YAML: {err}") from None
    entries = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"cluster file {str(p)!r}: expected `nodes:`, a list of node descriptions")
    nodes: list[Node] = []
    for i, entry in enumerate(entries):
        where = f"cluster file {str(p)!r}, nodes[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping, got {entry!r}")
        if unknown := set(entry) - _NODE_KEYS:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; valid: {sorted(_NODE_KEYS)}")
        if "cpus" not in entry:
            raise ConfigError(f"{where}: `cpus` is required")
        try:
            count = int(entry.get("count", 1))
            cpus, gpus = float(entry["cpus"]), float(entry.get("gpus", 0))
            gpu_memory = float(entry["gpu_memory_gb"]) * GB if entry.get("gpu_memory_gb") is not None else None
            memory = float(entry["memory_gb"]) * GB if entry.get("memory_gb") is not None else None
            resources = {str(k): float(v) for k, v in (entry.get("resources") or {}).items()}
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from None
        if count < 1 or cpus < 0 or gpus < 0:
            raise ConfigError(f"{where}: count must be ≥ 1 and cpus/gpus ≥ 0")
        if gpus and gpu_memory is None:
            raise ConfigError(f"{where}: a node with GPUs needs gpu_memory_gb (memory per GPU)")
        base = str(entry.get("name") or f"node{i}")
        for j in range(count):
            name = base if count == 1 else f"{base}-{j}"
            nodes.append(Node(name, cpus, gpus, gpu_memory, memory, resources))
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise ConfigError(f"cluster file {str(p)!r}: node names repeat: {names}")
    return nodes


# Ray's own resources that are not placement resources.
_RAY_INTERNAL = ("memory", "object_store_memory")


def nodes_from_ray(probe: bool = True) -> list[Node]:
    """The live cluster's alive nodes, in Ray's order with the head last (on a real cluster the
    driver's node: actors go there only when nothing else fits). `probe`: ask each node for its
    RAM and GPU memory (one tiny task per node); else RAM is Ray's `memory` resource and GPU
    memory is unknown."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    measure = ray.remote(num_cpus=0)(node_memory)
    here = ray.get_runtime_context().get_node_id()
    found = []
    for n in (n for n in ray.nodes() if n.get("Alive")):
        res = dict(n.get("Resources") or {})
        custom = {k: v for k, v in res.items()
                  if k not in ("CPU", "GPU", *_RAY_INTERNAL) and not k.startswith(("node:", "accelerator_type"))}
        ram, gpu_memory = None, None
        if probe and n["NodeID"] == here:  # the driver's own node: no task needed
            ram, gpu_memory = node_memory()
        elif probe:
            where = NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ram, gpu_memory = ray.get(measure.options(scheduling_strategy=where).remote())
        head = "node:__internal_head__" in res
        found.append((head, Node(f"{'head' if head else 'node'}-{n['NodeID'][:6]}", res.get("CPU", 0.0),
                                 res.get("GPU", 0.0), gpu_memory, ram if ram is not None else res.get("memory"),
                                 custom, n["NodeID"], res.get("object_store_memory"))))
    found.sort(key=lambda pair: pair[0])  # stable: Ray's order, the head last
    return [node for _, node in found]


def this_machine(cpus: float) -> Node:
    """This machine as the one node of a local cluster with `cpus` logical CPUs (what
    cluster/run.execute starts when no cluster is named)."""
    import os

    from core.env import has_cuda

    gpus = 0
    if has_cuda():
        import torch

        gpus = torch.cuda.device_count()
    return Node(f"local-{os.uname().nodename}"[:14], cpus, float(gpus), gpu_memory_per_gpu() if gpus else None, node_ram())


def node_memory() -> tuple[float | None, float | None]:
    """(RAM, memory per GPU) of the machine this runs on: what the probe task reports."""
    return node_ram(), gpu_memory_per_gpu()


def node_ram() -> float | None:
    """This machine's RAM in bytes."""
    try:
        import psutil

        return float(psutil.virtual_memory().total)
    except Exception:
        return None


def gpu_memory_per_gpu() -> float | None:
    """The smallest GPU's memory in bytes, from nvidia-smi (which sees every GPU of the node,
    whatever CUDA_VISIBLE_DEVICES a zero-GPU task has); None without NVIDIA GPUs."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
        sizes = [float(line) * (1 << 20) for line in out.split() if line.strip()]  # MiB
    except (subprocess.SubprocessError, ValueError, OSError):
        return None
    return min(sizes) if sizes else None
