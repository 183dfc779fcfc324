"""The loop learns what its judge prefers: real engines, the tiny model, a python: judge.

The judge (tests/judge_fixtures.py) prefers responses with more letters "e"; after a short
run, fresh samples of the trained policy carry clearly more of them than the SFT model's."""

from __future__ import annotations

import json

import pytest
import torch

from cluster.config import load_config


def _marker_counts(model_dir: str, prompts, samples: int = 4, max_new_tokens: int = 12) -> list[int]:
    """Letters "e" in each of `samples` fresh samples (T = 1) per prompt, by transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    torch.manual_seed(0)
    counts = []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p.tokens])
            out = model.generate(ids, do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens,
                                 num_return_sequences=samples, pad_token_id=tokenizer.pad_token_id)
            counts += [tokenizer.decode(o[len(p.tokens):], skip_special_tokens=True).count("e") for o in out]
    return counts


@pytest.mark.engine
@pytest.mark.timeout(600)
def test_fresh_samples_move_toward_what_the_judge_prefers(ray_cluster, tiny_model_dir, tiny_tokenizer, tmp_path):
    from cluster.data.prompts import load_prompts
    from cluster.run import run

    steps = 24
    cfg = load_config(None, [
        f"model.path={tiny_model_dir}", "judge.kind=python:judge_fixtures:prefer_marker", "rollout.k=4",
        "rollout.max_tokens=12", "rollout.prompts_per_batch=2", "rollout.temperature=1.0", "data.num_prompts=64",
        f"learner.max_steps={steps}", "learner.pairs_per_step=4", "learner.lr=3e-3", "learner.lora.r=8",
        "loss.beta=0.5", "pipeline.max_staleness=0", "checkpoint.every=0", f"checkpoint.dir={tmp_path / 'run'}",
        "metrics.trackers=[]", "metrics.progress=false", "metrics.probe_every=0",
    ])
    assert run(cfg).step == steps
    # Fresh samples (256 each) from the SFT model and from the trained policy, same prompts and seed.
    prompts = load_prompts(None, tiny_tokenizer, 96, limit=64)
    start = _marker_counts(tiny_model_dir, prompts)
    end = _marker_counts(str(tmp_path / "run" / f"ckpt-{steps:06d}" / "hf"), prompts)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    var = lambda xs: sum((x - mean(xs)) ** 2 for x in xs) / (len(xs) - 1)  # noqa: E731
    se = (var(start) / len(start) + var(end) / len(end)) ** 0.5
    # "Clearly above its start": a rise of more than 3 standard errors of the difference
    # (measured: 2.32 → 2.89 e per response, SE 0.15, in 24 steps with ties dropped, the default).
    assert mean(end) - mean(start) > 3 * se, (mean(start), mean(end), se)


def _instruction_file(path, questions, instructions):
    rows = [{"id": f"q{i}", "prompt": f"{q} {text}", "instruction_id_list": [kind], "kwargs": [kwargs]}
            for i, (q, (kind, kwargs, text)) in enumerate(zip(questions, instructions))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.engine
@pytest.mark.timeout(600)
def test_verifier_run_judges_by_the_instructions_and_scores_the_final_weights_held_out(
        ray_cluster, tiny_model_dir, tmp_path):
    """A verifier run with sync_every=3 and max_steps=4. Bugs it catches:
    - the held-out "step 4" answers coming from step 3's weights (the last push was at step 3):
      they must equal what cluster.evaluate answers from ckpt-000004/hf;
    - the SFT baseline not being the SFT model's greedy answers (recomputed with transformers);
    - the verifier judging a pair by the wrong prompt's instructions: every spilled pair's
      strength is recomputed from its two answers, p = σ((s_a − s_b)/τ)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cluster.data.prompts import load_prompts
    from cluster.evaluation import instruction_eval
    from cluster.evaluation.head_to_head import HeadToHeadOptions, evaluate
    from cluster.run import run
    from judge.preferences import sigmoid
    from judge.verifier import verify

    no_comma = ("punctuation:no_comma", {}, "Do not use any commas.")
    short = ("length_constraints:number_words", {"relation": "less than", "num_words": 4}, "Use under 4 words.")
    words = ["tea", "rain", "bread", "maps", "snow", "music", "glass", "trains", "clocks", "salt", "paper", "wind"]
    train = _instruction_file(tmp_path / "train.jsonl", [f"Tell me about {w}." for w in words], [no_comma, short] * 6)
    held = _instruction_file(tmp_path / "held.jsonl", [f"Describe {w}." for w in words[:6]], [short, no_comma] * 3)
    run_dir = tmp_path / "run"
    cfg = load_config(None, [
        f"model.path={tiny_model_dir}", "judge.kind=verifier", "judge.tau=0.5", f"data.prompts={train}",
        f"eval.prompts={held}", "eval.max_tokens=6", "rollout.k=4", "rollout.max_tokens=6", "learner.max_steps=4",
        "learner.sync_every=3", "learner.pairs_per_step=2", "learner.lr=0.05", "model.max_prompt_tokens=128",
        "checkpoint.every=0", f"checkpoint.dir={run_dir}", f"pipeline.spill_dir={run_dir / 'pairs'}",
        "metrics.trackers=[]", "metrics.progress=false", "metrics.probe_every=0",
    ])
    assert run(cfg).step == 4
    report = json.loads((run_dir / "heldout.json").read_text())
    assert report["prompts"] == 6 and report["step"] == 4

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = load_prompts(held, tokenizer, 128)
    # Step 4's weights, answered by the evaluation CLI's engine from the final checkpoint.
    [result] = evaluate([run_dir / "ckpt-000004" / "hf"], prompts, HeadToHeadOptions(tiny_model_dir, [], max_tokens=6))
    assert report["answers"]["final"] == result["answers"]
    assert report["answers"]["sft"] == result["baseline_answers"]

    # The SFT answers recomputed independently of the engines (vLLM's greedy tokens equal transformers').
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    answers = []
    for p in prompts:
        out = model.generate(torch.tensor([p.tokens]), max_new_tokens=6, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        answers.append(tokenizer.decode(out[0, len(p.tokens):], skip_special_tokens=True))
    # vLLM holds back a trailing incomplete UTF-8 character where transformers decodes it as U+FFFD.
    assert [a.rstrip("\ufffd") for a in report["answers"]["sft"]] == [a.rstrip("\ufffd") for a in answers]
    expected = instruction_eval.accuracy(instruction_eval.verdicts([p.instructions for p in prompts], answers))
    assert report["sft"]["prompt_strict"]["value"] == pytest.approx(expected["prompt_strict"]["value"])

    # Every trained pair's strength from its own prompt's instructions.
    by_text = {p.text: p.instructions for p in load_prompts(train, tokenizer, 128)}
    pairs = pa.concat_tables([pq.read_table(f) for f in sorted((run_dir / "pairs").glob("*.parquet"))]).to_pylist()
    prompt_text = {p.prompt_id: p.text for p in load_prompts(train, tokenizer, 128)}
    assert pairs
    for pair in pairs:
        instructions = by_text[prompt_text[pair["prompt_id"]]]
        chosen, rejected = (verify(pair[f"{side}_text"], instructions).fraction for side in ("chosen", "rejected"))
        assert pair["strength"] == pytest.approx(sigmoid((chosen - rejected) / 0.5))
        assert pair["strength"] > 0.5  # judge.drop_ties (the default): no tie reaches the learner
