"""A run's life on real engines (tiny model): resume from a checkpoint, refusal to overwrite
a run, and adding a rollout actor while the run goes on (`python -m cluster.scale`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.config import ConfigError, config_from_dict

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]


def _config(model: str, run_dir: Path, **learner) -> dict:
    return {
        "seed": 1,
        "model": {"path": model},
        "data": {"num_prompts": 60},
        "rollout": {"num_actors": 1, "k": 2, "max_tokens": 8, "prompts_per_batch": 2},
        "learner": {"num_ranks": 1, "pairs_per_step": 2, "lr": 1e-3, "lora": {"enabled": False}, **learner},
        "checkpoint": {"dir": str(run_dir), "every": 2, "keep": 3},
        "metrics": {"trackers": [], "progress": False, "probe_every": 1},
    }


def _steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_continues_from_the_last_checkpoint(ray_cluster, tiny_model_dir, tmp_path):
    from cluster.driver import checkpoint as ckpt
    from cluster.run import run

    run_dir = tmp_path / "run"
    first = run(config_from_dict(_config(tiny_model_dir, run_dir, max_steps=3)))
    assert first.step == 3
    assert sorted(p.name for p in run_dir.glob("ckpt-*")) == ["ckpt-000002", "ckpt-000003"]
    saved = ckpt.load_state(ckpt.latest_checkpoint(run_dir))
    assert saved.step == 3 and saved.pairs_trained == 6

    # The same folder without --resume is refused, naming the way out; nothing is touched.
    with pytest.raises(ConfigError, match="--resume"):
        run(config_from_dict(_config(tiny_model_dir, run_dir, max_steps=5)))

    second = run(config_from_dict(_config(tiny_model_dir, run_dir, max_steps=5)), resume=True)
    assert second.step == 5
    assert second.pairs_trained == 10  # 3 steps before, 2 after; none counted twice
    assert second.next_prompt >= saved.next_prompt  # the data position moved on, not back
    assert second.prompts_done + len(second.requeued) == second.next_prompt
    assert _steps(run_dir) == [1, 2, 3, 4, 5]  # one metrics file, continued
    # Already at max_steps: resuming again has nothing to do.
    assert run(config_from_dict(_config(tiny_model_dir, run_dir, max_steps=5)), resume=True).step == 5


def test_rollout_actor_added_while_running(ray_cluster, tiny_model_dir, tmp_path):
    """`cluster.scale --add 1` mid-run: a second vLLM actor starts, receives the current
    weights, and samples; the learner is untouched."""
    import time

    import ray

    from cluster import scale
    from cluster.driver.pipeline import Pipeline
    from cluster.run import build_run

    run_dir = tmp_path / "scaled"
    cfg = config_from_dict(_config(tiny_model_dir, run_dir, max_steps=40) | {"checkpoint": {"dir": str(run_dir), "every": 0}})
    spec = build_run(cfg)
    seen = []

    def progress(step, max_steps, metrics):
        seen.append(metrics["run/rollout_actors"])
        if step == 2:
            assert scale.main(["--add", "1"]) == 0
        if seen[-1] < 2:
            time.sleep(1.5)  # give the new engine (~20 s to start) time to join before the end

    pipeline = Pipeline(spec, spec.initial_state(), progress)
    try:
        pipeline.start()
        state = pipeline.run()
        assert state.step == 40
        assert seen[0] == 1 and seen[-1] == 2
        engines = [r for r in pipeline.rollouts.members if r.ready]
        assert len(engines) == 2
        newest = ray.get(engines[1].handle.info.remote())
        assert newest["name"] == "rollout-1"
        assert newest["tokens_generated"] > 0  # it sampled
        assert newest["version"] == 40  # and holds the learner's final weights
    finally:
        pipeline.shutdown()
