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
from cluster.methods import Method
from core.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "cluster" / "configs"
# The experiments' own configs (not shipped with the package): experiments/<name>/*.yaml.
IFEVAL = ROOT / "experiments" / "methods-ifeval"
EXPERIMENT_CONFIGS = sorted(ROOT.glob("experiments/*/*.yaml"))
METHODS = ["osp", "dpo-online", "cdpo", "ipo", "spo", "dno"]
STEPS = 4


@pytest.mark.parametrize("path", [CONFIGS / f"{m}.yaml" for m in METHODS + ["default"]] + EXPERIMENT_CONFIGS,
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_config_ranks_k_samples(path):
    """Every config, the experiments' too, loads (a key misspelt after a move fails here) and ranks K samples."""
    cfg = load_config(path)
    assert cfg.rollout.k >= 4  # ranked pairing: K=2 would be a single unranked pair


def test_the_experiment_configs_are_found():
    """The glob above finds the moved configs (an empty glob would skip their checks silently)."""
    assert {p.name for p in EXPERIMENT_CONFIGS} >= {"ifeval-osp.yaml", "ifeval-dpo.yaml", "broad-osp.yaml", "broad-dpo.yaml"}


def test_default_run_is_osp_with_the_verifier_and_a_held_out_check():
    cfg = load_config(CONFIGS / "default.yaml")
    assert (cfg.method, cfg.loss.hard_labels, cfg.judge.kind) == ("osp", False, "verifier")
    assert cfg.data.prompts == "instructions" and cfg.eval.prompts == "instructions-eval"
    osp, dpo = load_config(IFEVAL / "ifeval-osp.yaml"), load_config(IFEVAL / "ifeval-dpo.yaml")
    # The experiment's two arms differ only in the method: soft strengths or the verdict.
    osp.method = "dpo"
    osp.checkpoint.dir = dpo.checkpoint.dir
    assert osp == dpo


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
    # DNO: 4 pairs a step, so that dno.replay_fraction=0.3 keeps one place for a replayed pair (floor(1.2)).
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
        # The sampling policy (= the reference) moves only at iteration boundaries.
        assert [r["step"] for r in rows if "push_s" in r] == [2, 4]
        # Iteration 1 has nothing to replay; iteration 2 replays one pair a step (floor(0.3 · 4) = 1,
        # beside 3 fresh ones), and replayed pairs are not counted as trained again.
        assert [r["pairs/replayed"] for r in rows] == [0.0, 0.0, 1.0, 1.0]
        assert state.pairs_trained == 4 + 4 + 3 + 3
    else:
        assert state.pairs_trained == STEPS * 2
        assert all("push_s" in r for r in rows)  # sync_every=1


# -- a new method is one module and one registry line ------------------------------------------


class Hinge(Method):
    """A toy method, defined here as a user would in cluster/methods/hinge.py: SLiC's hinge on the
    verdict's margin, max(0, 1 − β·sign(p − ½)·h), and refusing K below 4."""

    name = "hinge"

    def validate(self, cfg):
        super().validate(cfg)
        if cfg.rollout.k < 4:
            raise ConfigError(f"rollout.k: method=hinge wants K ≥ 4, got {cfg.rollout.k}")

    def pair_loss(self, h, p):
        import torch

        return torch.relu(1 - self.cfg.loss.beta * torch.sign(p - 0.5) * h)


@pytest.fixture
def with_hinge(monkeypatch):
    from cluster import methods

    monkeypatch.setitem(methods.METHODS, "hinge", Hinge)  # the one registry line
    return Hinge


def test_a_toy_method_passes_config_validation_and_drives_the_scheduler(with_hinge):
    """Would catch a registry the config does not consult, a validator that skips the method's
    own refusals, or a scheduler that bypasses the method (K//2 pairs a prompt, its batch)."""
    import random

    from cluster.driver.checkpoint import RunState
    from cluster.driver.scheduler import StepScheduler
    from cluster.methods import method_of

    with pytest.raises(ConfigError, match="method=hinge wants K ≥ 4, got 2"):
        load_config(None, ["method=hinge"])
    cfg = load_config(None, ["method=hinge", "rollout.k=4"])
    method = method_of(cfg)
    assert isinstance(method, Hinge)
    scheduler = StepScheduler(cfg, 10, RunState(), random.Random(0), method)
    assert scheduler.pairs_per_prompt == 2
    prompts = scheduler.take_prompts(2)
    scheduler.judged(prompts, _pair_table(prompts * 2))
    batch = scheduler.next_batch()
    assert batch.pairs.num_rows == cfg.learner.pairs_per_step == 4 and batch.replayed == 0
    assert scheduler.trained(batch) == 1 and scheduler.state.prompts_done == 2


def _pair_table(prompt_indices, prompt=(5, 6, 7), chosen=(8, 9), rejected=(10,), ref=(0.0, 0.0), strength=0.9):
    from core.records import pair_batch

    return pair_batch([{"prompt_id": f"p{i}", "prompt_index": i, "prompt_tokens": list(prompt),
                        "chosen_tokens": list(chosen), "rejected_tokens": list(rejected), "chosen_text": "a",
                        "rejected_text": "b", "strength": strength, "ref_logp_chosen": ref[0],
                        "ref_logp_rejected": ref[1], "policy_version": 0, "source": "round_robin"}
                       for i in prompt_indices])


@pytest.mark.engine
@pytest.mark.timeout(300)
def test_a_toy_method_trains_one_learner_step_with_its_own_loss(with_hinge, ray_cluster, tiny_model_dir):
    """The toy method travels to a real DeepSpeed learner rank (a Ray actor) and its loss is the
    one trained: with the reference equal to the policy (LoRA's B starts at zero), h = 0, so the
    hinge is exactly 1 on every decided pair (SPCE or DPO would give log 2)."""
    import ray

    from cluster.driver.actors import make_learner_group
    from cluster.methods import method_of

    cfg = load_config(None, ["method=hinge", "rollout.k=4", f"model.path={tiny_model_dir}", "learner.pairs_per_step=2"])
    ranks, pg = make_learner_group(cfg, method_of(cfg), tiny_model_dir)
    try:
        rank = ranks[0]
        prompt, chosen, rejected = [5, 6, 7], [8, 9], [10]
        ref = (sum(ray.get(rank.logprobs_of.remote(prompt, chosen))), sum(ray.get(rank.logprobs_of.remote(prompt, rejected))))
        metrics = ray.get(rank.train_step.remote(_pair_table([0, 1], prompt, chosen, rejected, ref)))
        assert metrics["loss/pref"] == pytest.approx(1.0, abs=1e-5)
        assert metrics["step/skipped"] == 0.0
    finally:
        for r in ranks:
            ray.kill(r)
        ray.util.remove_placement_group(pg)
