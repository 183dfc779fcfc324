"""Faults on real engines (tiny model): actors killed by pid mid-run, a learner rank's death,
and exact resume (the loss curve of an interrupted run equals an uninterrupted one)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from cluster.config import config_from_dict

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]


def _config(model: str, run_dir: Path, max_steps: int, **extra) -> dict:
    cfg = {
        "seed": 2,
        "model": {"path": model},
        "data": {"num_prompts": 60},
        "rollout": {"num_actors": 1, "k": 2, "max_tokens": 8, "prompts_per_batch": 2},
        "learner": {"num_ranks": 2, "pairs_per_step": 2, "max_steps": max_steps, "lr": 1e-3,
                    "lora": {"enabled": False}},
        "checkpoint": {"dir": str(run_dir), "every": 2, "keep": 3},
        "metrics": {"trackers": [], "progress": False, "probe_every": 1},
    }
    for section, values in extra.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return cfg


def _pipeline(cfg_dict, progress=None):
    from cluster.driver.pipeline import Pipeline
    from cluster.run import build_run

    spec = build_run(config_from_dict(cfg_dict))
    return Pipeline(spec, spec.initial_state(), progress)


def test_killed_rollout_and_judge_actors_restart_and_nothing_is_lost(ray_cluster, tiny_model_dir, tmp_path):
    import ray

    killed = {}

    def progress(step, max_steps, metrics):
        if step == 2:
            rollout = ray.get(pipeline.rollouts.members[0].handle.info.remote())
            judge = ray.get(pipeline.judges.judges[0].info.remote())
            killed.update(rollout=rollout["pid"], judge=judge["pid"])
            os.kill(rollout["pid"], signal.SIGKILL)
            os.kill(judge["pid"], signal.SIGKILL)

    pipeline = _pipeline(_config(tiny_model_dir, tmp_path / "run", 6, checkpoint={"every": 0}), progress)
    try:
        pipeline.start()
        state = pipeline.run()
        assert killed
        assert state.step == 6 and state.pairs_trained == 12  # 6 steps × 2 pairs, none twice
        # Every prompt taken from the data order is done or recorded to be sampled again.
        assert state.prompts_done + len(state.requeued) == state.next_prompt
        rollout = ray.get(pipeline.rollouts.members[0].handle.info.remote())
        judge = ray.get(pipeline.judges.judges[0].info.remote())
        assert rollout["pid"] != killed["rollout"] and judge["pid"] != killed["judge"]  # restarted by Ray
        assert rollout["version"] == 6  # the restarted engine was brought up to date
    finally:
        pipeline.shutdown()


def test_learner_rank_death_fails_cleanly_and_the_run_resumes(ray_cluster, tiny_model_dir, tmp_path):
    import ray

    from cluster.driver import checkpoint as ckpt
    from cluster.driver.pools import LearnerFailed
    from cluster.run import run

    run_dir = tmp_path / "run"

    def progress(step, max_steps, metrics):
        if step == 3:
            os.kill(ray.get(pipeline.learner.ranks[1].info.remote())["pid"], signal.SIGKILL)

    pipeline = _pipeline(_config(tiny_model_dir, run_dir, 6), progress)
    try:
        pipeline.start()
        with pytest.raises(LearnerFailed, match=r"(?s)learner rank failed.*ckpt-000002.*--resume"):
            pipeline.run()
    finally:
        pipeline.shutdown()
    assert ckpt.latest_checkpoint(run_dir).name == "ckpt-000002"
    state = run(config_from_dict(_config(tiny_model_dir, run_dir, 4)), resume=True)
    assert state.step == 4


def test_learner_rank_0_dying_between_steps_stops_the_run_cleanly(ray_cluster, tiny_model_dir, tmp_path):
    """Learner rank 0 owns the pushed weights (it put them in the object store); when it dies
    between steps, an engine that is behind (here: restarted at the same moment, so back at the
    SFT weights) fails each call at once fetching them (OwnerDiedError). Found by the chaos soak
    (bench/chaos_soak.py): the driver requeued and re-sent the batch 21 times in 70 ms and ended
    with 'too many failed rollout calls' (exit 1, no word of --resume) instead of stopping as a
    rank's death stops it. max_staleness=0 leaves nothing buffered after the step, so no learner
    step notices the death first. Would catch that again."""
    import ray

    from cluster.driver.pools import LearnerFailed

    def progress(step, max_steps, metrics):
        if step == 3:  # after ckpt-000002, before the next checkpoint
            rank0 = ray.get(pipeline.learner.ranks[0].info.remote())["pid"]
            engine = ray.get(pipeline.rollouts.members[0].handle.info.remote())["pid"]
            os.kill(rank0, signal.SIGKILL)
            os.kill(engine, signal.SIGKILL)

    cfg = _config(tiny_model_dir, tmp_path / "run", 6, pipeline={"max_staleness": 0, "buffer_max_pairs": 8})
    pipeline = _pipeline(cfg, progress)
    try:
        pipeline.start()
        with pytest.raises(LearnerFailed, match=r"(?s)learner rank failed at step 4.*ckpt-000002.*--resume"):
            pipeline.run()
        assert pipeline.failures < 5  # stopped at the first call that lost the weights
    finally:
        pipeline.shutdown()


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


# Synchronous (max_staleness=0) and deterministic (per-prompt sampling seeds, a checkpoint taken
# with nothing in flight), with LoRA: a resume must reproduce an uninterrupted run's losses.
SYNC = {"pipeline": {"max_staleness": 0, "buffer_max_pairs": 8}, "learner": {"lora": {"enabled": True, "r": 4, "alpha": 8}}}


@pytest.fixture(scope="module")
def uninterrupted_losses(ray_cluster, tiny_model_dir, tmp_path_factory) -> dict[int, float]:
    from cluster.run import run

    whole = tmp_path_factory.mktemp("whole")
    run(config_from_dict(_config(tiny_model_dir, whole, 6, **SYNC)))
    return _losses(whole)


def _forget_after(run_dir: Path, step: int) -> None:
    """The metrics of the steps after `step` removed, as if the run had died right after it."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()[:step]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def _assert_same_losses(a: dict[int, float], b: dict[int, float]) -> None:
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    for step in a:  # tolerance 1e-6: float32 reductions
        assert b[step] == pytest.approx(a[step], abs=1e-6), (step, a, b)


def test_interrupted_run_resumes_exactly(uninterrupted_losses, tiny_model_dir, tmp_path):
    """Resumed from an adapter-only checkpoint (a LoRA run's: the adapter and its optimizer
    states, the base from model.path), the losses equal the uninterrupted run's, step for step.
    Would catch a checkpoint missing part of the trained state (the adapter, Adam's moments,
    an RNG) or a resume that trains the frozen base from the wrong weights."""
    import shutil

    from cluster.run import run

    cut = tmp_path / "cut"
    run(config_from_dict(_config(tiny_model_dir, cut, 3, **SYNC)))  # stops after ckpt-000002 + final 3
    assert (cut / "ckpt-000002" / "hf" / "adapter_model.safetensors").exists()
    assert not (cut / "ckpt-000002" / "hf" / "merged").exists()  # checkpoint.merged is off: adapter only
    # Drop the final checkpoint so the resume starts from step 2, as after a kill -9 at step 3.
    shutil.rmtree(cut / "ckpt-000003")
    (cut / "latest").write_text("ckpt-000002\n")
    _forget_after(cut, 2)
    run(config_from_dict(_config(tiny_model_dir, cut, 6, **SYNC)), resume=True)
    _assert_same_losses(uninterrupted_losses, _losses(cut))


def test_resume_past_a_damaged_checkpoint_continues_exactly_from_the_previous_one(uninterrupted_losses, tiny_model_dir,
                                                                                  tmp_path, caplog):
    """Issue 34.3: the latest checkpoint's model states cut short (a full disk). --resume must
    not hand it to DeepSpeed (a raw traceback, exit 1) but fall back to ckpt-000002, and from
    there reproduce the uninterrupted run's losses."""
    import logging

    from cluster.run import run

    cut = tmp_path / "cut"
    run(config_from_dict(_config(tiny_model_dir, cut, 4, **SYNC)))  # ckpt-000002 and the final ckpt-000004
    states = cut / "ckpt-000004" / "ds" / "mp_rank_00_model_states.pt"
    states.write_bytes(states.read_bytes()[:1000])
    _forget_after(cut, 2)
    with caplog.at_level(logging.WARNING, logger="osp"):
        state = run(config_from_dict(_config(tiny_model_dir, cut, 6, **SYNC)), resume=True)
    assert state.step == 6
    assert any("ckpt-000004 is damaged (ds/mp_rank_00_model_states.pt has 1000 bytes" in r.getMessage()
               and "resuming from ckpt-000002" in r.getMessage() for r in caplog.records)
    _assert_same_losses(uninterrupted_losses, _losses(cut))
