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
    from cluster.prompts import load_prompts
    from cluster.train import run

    steps = 16
    cfg = load_config(None, [
        f"model.path={tiny_model_dir}", "judge.kind=python:judge_fixtures:prefer_marker", "rollout.k=4",
        "rollout.max_tokens=12", "rollout.prompts_per_batch=2", "rollout.temperature=1.0", "data.num_prompts=64",
        f"learner.max_steps={steps}", "learner.pairs_per_step=4", "learner.lr=3e-3", "learner.lora.r=8",
        "loss.beta=0.5", "pipeline.max_staleness=0", "checkpoint.every=0", f"checkpoint.dir={tmp_path / 'run'}",
        "metrics.tensorboard=false", "metrics.progress=false", "metrics.probe_every=0",
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
    # (measured: 2.32 → 2.99 e per response, SE 0.17).
    assert mean(end) - mean(start) > 3 * se, (mean(start), mean(end), se)


def _instruction_file(path, questions, instructions):
    rows = [{"id": f"q{i}", "prompt": f"{q} {text}", "instruction_id_list": [kind], "kwargs": [kwargs]}
            for i, (q, (kind, kwargs, text)) in enumerate(zip(questions, instructions))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.engine
@pytest.mark.timeout(600)
def test_verifier_run_reports_fresh_sample_pass_rate_and_held_out_accuracy(ray_cluster, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cluster import instruction_eval
    from cluster.prompts import load_prompts
    from cluster.train import run

    no_comma = ("punctuation:no_comma", {}, "Do not use any commas.")
    short = ("length_constraints:number_words", {"relation": "less than", "num_words": 4}, "Use under 4 words.")
    words = ["tea", "rain", "bread", "maps", "snow", "music", "glass", "trains", "clocks", "salt", "paper", "wind"]
    train = _instruction_file(tmp_path / "train.jsonl", [f"Tell me about {w}." for w in words], [no_comma, short] * 6)
    held = _instruction_file(tmp_path / "held.jsonl", [f"Describe {w}." for w in words[:6]], [short, no_comma] * 3)
    cfg = load_config(None, [
        f"model.path={tiny_model_dir}", "judge.kind=verifier", "judge.tau=0.5", f"data.prompts={train}",
        f"eval.prompts={held}", "eval.max_tokens=6", "rollout.k=4", "rollout.max_tokens=6", "learner.max_steps=2",
        "learner.pairs_per_step=2", "model.max_prompt_tokens=128", "checkpoint.every=0",
        f"checkpoint.dir={tmp_path / 'run'}", "metrics.tensorboard=false", "metrics.progress=false",
        "metrics.probe_every=0",
    ])
    assert run(cfg).step == 2
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # Each step reports the samples judged since the previous one (a step fed from the buffer alone has none).
    judged = [r for r in rows if "samples/verifier_pass" in r]
    assert judged and all(0.0 <= r["samples/verifier_pass"] <= 1.0 and 0.0 <= r["samples/truncated"] <= 1.0
                          for r in judged)
    report = json.loads((tmp_path / "run" / "heldout.json").read_text())
    assert report["prompts"] == 6 and report["step"] == 2

    # The SFT numbers are the verifier on the SFT model's greedy answers (vLLM's greedy tokens
    # equal transformers'): recompute them here, independently of the engines.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts = load_prompts(held, tokenizer, 128)
    answers = []
    for p in prompts:
        out = model.generate(torch.tensor([p.tokens]), max_new_tokens=6, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        answers.append(tokenizer.decode(out[0, len(p.tokens):], skip_special_tokens=True))
    expected = instruction_eval.accuracy(instruction_eval.verdicts([p.instructions for p in prompts], answers))
    assert report["sft"]["prompt_strict"]["value"] == pytest.approx(expected["prompt_strict"]["value"])
    assert report["gain"]["prompt_strict"]["value"] == pytest.approx(
        report["final"]["prompt_strict"]["value"] - report["sft"]["prompt_strict"]["value"])
