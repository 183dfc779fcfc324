"""Each method's shipped config runs the same loop end to end (tiny model, real engines).

osp, spo and dno exercise distinct code paths (soft labels; the degree head; DNO iterations,
margin-filtered pairs, replay, pushes at iteration boundaries) and run in CI; dpo-online,
cdpo and ipo only swap the loss function (unit-tested in test_losses.py) and run with
OSP_HEAVY_TESTS=1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cluster.config import load_config

CONFIGS = Path(__file__).resolve().parent.parent / "cluster" / "configs"
METHODS = ["osp", "dpo-online", "cdpo", "ipo", "spo", "dno"]
STEPS = 4


@pytest.mark.parametrize("method", METHODS + ["default", "ifeval-osp", "ifeval-dpo"])
def test_shipped_config_ranks_k_samples(method):
    cfg = load_config(CONFIGS / f"{method}.yaml")
    assert cfg.rollout.k >= 4  # ranked pairing: K=2 would be a single unranked pair


def test_default_run_is_osp_with_the_verifier_and_a_held_out_check():
    cfg = load_config(CONFIGS / "default.yaml")
    assert (cfg.loss.name, cfg.loss.hard_labels, cfg.judge.kind) == ("spce", False, "verifier")
    assert cfg.data.prompts == "instructions" and cfg.eval.prompts == "instructions-eval"
    osp, dpo = load_config(CONFIGS / "ifeval-osp.yaml"), load_config(CONFIGS / "ifeval-dpo.yaml")
    # The experiment's two arms differ only in the loss: soft strengths or the verdict.
    osp.loss.name = "dpo"
    osp.checkpoint.dir = dpo.checkpoint.dir
    assert osp == dpo


@pytest.mark.parametrize("method", METHODS + ["ifeval-dpo"])
def test_no_shipped_config_sets_a_label_option_its_loss_ignores(method):
    """hard_labels only changes spce (the others read the verdict alone): a config that sets it
    for another loss promises a choice the code does not make."""
    cfg = load_config(CONFIGS / f"{method}.yaml")
    assert not (cfg.loss.hard_labels and cfg.loss.name != "spce")


def _tiny_overrides(model: str, run_dir: Path) -> list[str]:
    return [
        f"model.path={model}", "data.num_prompts=40", "rollout.max_tokens=8", "rollout.prompts_per_batch=2",
        f"learner.max_steps={STEPS}", "learner.pairs_per_step=2", "learner.num_ranks=1", "learner.lr=1e-3",
        "learner.lora.r=4", "dno.iteration_steps=2", "checkpoint.every=0", f"checkpoint.dir={run_dir}",
        "metrics.trackers=[]", "metrics.progress=false", "metrics.probe_every=1",
    ]


@pytest.mark.engine
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "method",
    [pytest.param(m, marks=pytest.mark.heavy) if m in ("dpo-online", "cdpo", "ipo") else m for m in METHODS],
)
def test_method_runs_end_to_end(method, ray_cluster, tiny_model_dir, tmp_path):
    from cluster.run import run

    run_dir = tmp_path / method
    # DNO: 4 pairs a step, so that dno.replay_fraction=0.25 keeps one place for a replayed pair.
    extra = ["learner.pairs_per_step=4"] if method == "dno" else []
    cfg = load_config(CONFIGS / f"{method}.yaml", _tiny_overrides(tiny_model_dir, run_dir) + extra)
    state = run(cfg)
    assert state.step == STEPS and state.pairs_trained > 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert all(math.isfinite(r["loss"]) for r in rows)
    final = run_dir / f"ckpt-{STEPS:06d}" / "hf"  # a LoRA run's: the adapter, and at the end the merged model
    assert (final / "adapter_model.safetensors").exists() and (final / "merged" / "model.safetensors").exists()
    if method == "spo":
        # The degree head's cross-entropy over 4 degrees starts near log 4 and is added in, on
        # the chosen answers long enough for the 4 classes to differ (the others are counted).
        assert all(0.0 <= r["spo/skipped_share"] <= 1.0 for r in rows)
        learned = [r for r in rows if r["spo/skipped_share"] < 1.0]
        assert learned and all(0.5 < r["loss/spo_degree"] < 3.0 for r in learned)
    if method == "dno":
        assert cfg.rollout.k == 5  # the paper's K, odd: DNO keeps one pair a prompt
        # Step 1: the policy is the SFT model (LoRA's B is zero) and the reference is the
        # sampling policy's log-probs from vLLM at T = 0.7, so h = 0 and DPO = log 2. Tempered
        # log-probs (vLLM's processed modes) would put the reference off by tens of nats.
        assert cfg.rollout.temperature == 0.7
        assert rows[0]["loss/pref"] == pytest.approx(math.log(2), abs=1e-3)
        assert state.dno_iteration == STEPS // 2
        # The sampling policy (= the reference) moves only at iteration boundaries.
        assert [r["step"] for r in rows if "push_s" in r] == [2, 4]
        # Iteration 1 has nothing to replay; iteration 2 replays one pair a step (replay_mix:
        # floor(0.25 · 3 / 0.75) = 1), and replayed pairs are not counted as trained again.
        assert [r["pairs/replayed"] for r in rows] == [0.0, 0.0, 1.0, 1.0]
        assert state.pairs_trained == 4 + 4 + 3 + 3
    else:
        assert state.pairs_trained == STEPS * 2
        assert all("push_s" in r for r in rows)  # sync_every=1
