"""A run whose model.path is a Hugging Face id, offline from a hub cache (conftest.hub_cache): the
driver pins it, and the rollout actor, the judge and the learner each resolve the pin on their
own node (here the same one) and load that snapshot, with the cache and the offline switch the
driver forwarded to them: the session's Ray cluster was started before this test set either."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hub_fixtures import TINY_REPO, snapshot_of

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]


CANARY = "hf_osp_canary_hub_run_5150"


def test_a_run_on_a_hub_id_trains_and_every_actor_loads_the_snapshot(ray_cluster, offline_hub, tmp_path, monkeypatch):
    """Catches an actor that does not see the forwarded HF_HUB_CACHE/HF_HUB_OFFLINE (it would
    search ~/.cache/huggingface and fail offline), an actor that cannot load a hub id at all, and
    a learner that writes its checkpoint from another folder, and HF_TOKEN passed on in a Ray
    runtime env (Ray writes those to its logs in plain text). (One node: an actor handed the
    driver's folder instead of the pin would look the same here; tests/test_hub_models.py checks
    what the actors are given.)"""
    import ray

    from cluster.config import config_from_dict
    from cluster.driver.pipeline import Pipeline
    from cluster.run import build_run

    cache, sha = offline_hub
    monkeypatch.setenv("HF_TOKEN", CANARY)
    snapshot = snapshot_of(cache, TINY_REPO, sha)
    run_dir = tmp_path / "hub-run"
    cfg = config_from_dict({
        "seed": 1,
        "model": {"path": TINY_REPO},
        "data": {"num_prompts": 20},
        "rollout": {"num_actors": 1, "k": 2, "max_tokens": 8, "prompts_per_batch": 2},
        "learner": {"num_ranks": 1, "pairs_per_step": 2, "max_steps": 2, "lr": 1e-3, "lora": {"enabled": False}},
        "checkpoint": {"dir": str(run_dir), "every": 0},
        "metrics": {"trackers": [], "progress": False},
    })
    spec = build_run(cfg)
    assert spec.model_ref == f"{TINY_REPO}@{sha}"
    pipeline = Pipeline(spec, spec.initial_state())
    try:
        pipeline.start()
        state = pipeline.run()
        roles = [(r.name, r.handle) for r in pipeline.rollouts.live()] + pipeline.judges.roles() + pipeline.learner.roles()
        infos = dict(zip([name for name, _ in roles], ray.get([handle.info.remote() for _, handle in roles])))
    finally:
        pipeline.shutdown()
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())  # no public API for it
    leaked = [p.name for p in logs.rglob("*") if p.is_file() and CANARY.encode() in p.read_bytes()]
    assert leaked == []
    assert state.step == 2 and state.pairs_trained == 4
    assert sorted(infos) == ["judge-0", "learner-0", "rollout-0"]
    assert {name: info["model_folder"] for name, info in infos.items()} == dict.fromkeys(infos, str(snapshot))
    weights = (snapshot / "model.safetensors").stat().st_size
    assert json.loads((run_dir / "memory.json").read_text())["model_bytes"] == weights
    [final] = sorted(Path(run_dir).glob("ckpt-*"))
    assert json.loads((final / "hf" / "config.json").read_text())["num_hidden_layers"] == 2
    assert (final / "hf" / "generation_config.json").read_bytes() == (snapshot / "generation_config.json").read_bytes()
