"""Shared fixtures: the tiny random model (built once per session) and one Ray cluster.

`ray.init` costs ~6 s and vLLM/DeepSpeed start-up tens of seconds, so both are shared by
every test of a session.
"""

from __future__ import annotations

import os

import pytest

from core.env import apply_runtime_env

apply_runtime_env()


def pytest_collection_modifyitems(config, items):
    if os.environ.get("OSP_HEAVY_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="heavy end-to-end run; set OSP_HEAVY_TESTS=1")
    for item in items:
        if "heavy" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    from tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def hub_cache(tiny_model_dir, tmp_path_factory):
    """A Hugging Face hub cache (tests/hub_fixtures.py: the real layout, blobs and symlinks)
    holding the tiny model as TINY_REPO on `main` (and, broken, as NO_CONFIG_REPO: its files
    less config.json): (the cache folder, the tiny model's commit sha)."""
    from hub_fixtures import NO_CONFIG_REPO, TINY_REPO, folder_files, write_hub_cache

    cache = tmp_path_factory.mktemp("hf-hub-cache")
    files = folder_files(tiny_model_dir)
    write_hub_cache(cache, NO_CONFIG_REPO, {k: v for k, v in files.items() if k != "config.json"})
    return cache, write_hub_cache(cache, TINY_REPO, files)


@pytest.fixture
def offline_hub(hub_cache, monkeypatch):
    """HF_HUB_OFFLINE=1 with HF_HUB_CACHE at `hub_cache`, for one test: (cache, sha)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache[0]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub_cache


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster for the whole session (8 logical CPUs on a 2-core machine:
    actors here are mostly idle, waiting on each other)."""
    import ray

    from cluster.driver.ray_setup import init_ray

    # Workers import test-only modules (judge_fixtures, for the python: judge kind) from here.
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (tests_dir, os.environ.get("PYTHONPATH", "")) if p)
    init_ray(address=None, num_cpus=8)
    yield ray
    ray.shutdown()
