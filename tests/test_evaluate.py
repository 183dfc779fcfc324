"""Evaluation: outcome counting, the bootstrap interval, the offline heuristic scorer (hand
values), and a real head-to-head on the tiny model (vLLM engine, self-judge, plot)."""

from __future__ import annotations

import json
import shutil

import pytest

from cluster.evaluation.head_to_head import HeadToHeadOptions, outcome_values, summarise
from cluster.evaluation.intervals import mean_with_interval
from judge.scorers import HeuristicScorer, heuristic_score, make_scorer


def test_outcomes_from_strengths():
    assert outcome_values([0.9, 0.5, 0.1, 0.5000001, 0.4999999]) == [1.0, 0.5, 0.0, 1.0, 0.0]


def test_summary_counts_and_win_rate():
    o = summarise("s", [0.9, 0.8, 0.5, 0.2])  # 2 wins, 1 tie, 1 loss
    assert (o.wins, o.ties, o.losses, o.n) == (2, 1, 1, 4)
    assert o.win_rate == pytest.approx((2 + 0.5) / 4)
    assert o.ci_low <= o.win_rate <= o.ci_high


def bootstrap_interval(values, samples=2000, seed=0):
    m = mean_with_interval(values, seed, samples)
    return m["ci_low"], m["ci_high"]


def test_bootstrap_degenerate_and_symmetric_cases():
    assert bootstrap_interval([1.0] * 10) == (1.0, 1.0)
    assert bootstrap_interval([0.5] * 7) == (0.5, 0.5)
    lo, hi = bootstrap_interval([1.0, 0.0] * 50, samples=4000, seed=1)
    # mean of 100 fair coin flips: sd 0.05, so the 95% interval is about 0.5 ± 0.098
    assert lo == pytest.approx(0.40, abs=0.025) and hi == pytest.approx(0.60, abs=0.025)
    assert bootstrap_interval([1.0, 0.0, 1.0], seed=3) == bootstrap_interval([1.0, 0.0, 1.0], seed=3)
    with pytest.raises(ValueError):
        bootstrap_interval([])


def test_heuristic_score_hand_values():
    prompt = "How do I boil an egg?"  # RAKE keywords: "boil", "egg"
    # both keywords, no repeated trigram: 1.0 - 0 + 0.1
    assert heuristic_score(prompt, "Boil the egg for nine minutes.") == pytest.approx(1.1)
    # one of two keywords: 0.5 + 0.1
    assert heuristic_score(prompt, "Put it in hot water.") == pytest.approx(0.1)
    assert heuristic_score(prompt, "Boil water first.") == pytest.approx(0.6)
    # "egg egg egg egg egg": trigrams (egg,egg,egg) ×3, 1 distinct → repetition 2/3
    assert heuristic_score(prompt, "egg egg egg egg egg") == pytest.approx(0.5 - 2 / 3 + 0.1)
    assert heuristic_score(prompt, "") == 0.0 and heuristic_score(prompt, " ... ") == 0.0
    # The repeat share is judge/repetition's (words as \w+ finds them, trigrams): "the egg's egg's
    # egg's" is the egg s egg s egg s, 5 trigrams, 2 repeats. Would catch the scorer going back to
    # a measure of its own (which read "egg's" as one word: 0 repeats, 0.6).
    assert heuristic_score(prompt, "the egg's egg's egg's") == pytest.approx(0.5 - 2 / 5 + 0.1)


def test_heuristic_scorer_compares():
    s = HeuristicScorer()
    p = ["How do I boil an egg?"] * 3
    assert s.compare(p, ["Boil the egg.", "", "Water."], ["Water.", "Boil the egg.", "Heat."]) == [1.0, 0.0, 0.5]


def test_an_evaluation_of_a_run_defaults_to_the_runs_own_settings(tmp_path):
    """RunDefaults from a run's config.yaml. Would catch an evaluation of a run that ignores its
    model, chat template, prompt budget or answer length, or that plays it on the wrong prompts
    (the held-out counterpart of data.prompts when one is shipped, else the shipped questions)."""
    import yaml

    from cluster.data.prompts import SHIPPED_EVAL
    from cluster.evaluation.head_to_head import RunDefaults

    cfg = {"model": {"path": "/m", "chat_template": "plain", "max_prompt_tokens": 128}, "rollout": {"max_tokens": 12},
           "data": {"prompts": "instructions"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert RunDefaults.of(tmp_path) == RunDefaults("/m", "plain", 128, 12, "instructions-eval")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"data": {"prompts": "mine.jsonl"}}))
    assert RunDefaults.of(tmp_path) == RunDefaults(None, None, 256, 64, SHIPPED_EVAL)
    assert RunDefaults.of(tmp_path / "absent") == RunDefaults.of(None) == RunDefaults()


def test_unknown_scorer_is_refused():
    with pytest.raises(ValueError, match="unknown scorer"):
        make_scorer("oracle", "/nowhere")
    with pytest.raises(ValueError, match="unknown scorer"):
        make_scorer("lm", "/nowhere")  # lm needs a path


def _lora_checkpoints(model_dir: str, tmp_path):
    """One LoRA policy of `model_dir` (B non-zero) saved twice: as a LoRA run's checkpoint holds
    it (hf/: peft's adapter files, base_model.json beside hf/) and merged into a full folder."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from cluster.data.model_identity import base_identity
    from cluster.driver import checkpoint as ckpt
    from learner.policy import merged_state_dict

    torch.manual_seed(1)
    lm = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    adapter = tmp_path / "ckpt-000030" / "hf"
    lm.save_pretrained(str(adapter))
    ckpt.write_base_model(adapter.parent, base_identity(model_dir))
    merged = tmp_path / "merged-000030"
    shutil.copytree(model_dir, merged)
    save_file(merged_state_dict(lm), str(merged / "model.safetensors"), metadata={"format": "pt"})
    return adapter, merged


@pytest.fixture
def restore_loggers():
    """main() installs its own handlers on our loggers (propagate off): put them back."""
    import logging

    names = ("osp", "cluster", "actors", "judge", "learner")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate)
             for n in names}
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:], logger.propagate = handlers, propagate
        logger.setLevel(level)


def test_an_adapter_is_refused_on_a_base_it_was_not_trained_on(tiny_model_dir, tmp_path, capsys, restore_loggers):
    """An adapter applies to its own base only: `--sft` naming another model is refused (exit 2,
    before any engine) naming both. Would catch an evaluation that merges a LoRA delta into
    whatever --sft names and reports the result as the checkpoint's."""
    from tiny_model import build_tiny_model

    from cluster.evaluate import main

    adapter, _ = _lora_checkpoints(tiny_model_dir, tmp_path)
    other = build_tiny_model(tmp_path / "other-base", seed=7)
    assert main(["--checkpoint", str(adapter.parent), "--sft", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"--sft: ckpt-000030 was trained on {tiny_model_dir} (fingerprint " in err
    assert f"not on {other} (fingerprint " in err and f"set --sft={tiny_model_dir}" in err
    assert "starting a local Ray cluster" not in err


@pytest.mark.engine
@pytest.mark.timeout(600)
def test_head_to_head_on_the_tiny_model(ray_cluster, tiny_model_dir, tmp_path):
    from tiny_model import build_tiny_model
    from transformers import AutoTokenizer

    from cluster.data.prompts import SHIPPED_EVAL, load_prompts
    from cluster.evaluation.head_to_head import evaluate
    from cluster.evaluation.report import write_report

    same = tmp_path / "ckpt-000010" / "hf"  # a checkpoint identical to the SFT model
    shutil.copytree(tiny_model_dir, same)
    other = build_tiny_model(tmp_path / "ckpt-000020" / "hf", seed=7)  # different weights, same tokenizer
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = load_prompts(SHIPPED_EVAL, tokenizer, 256, "error", 12)
    adapter, merged = _lora_checkpoints(tiny_model_dir, tmp_path)
    results = evaluate([same, other, adapter, merged], prompts, HeadToHeadOptions(tiny_model_dir, ["self", "heuristic"], 10))
    identical, different, from_adapter, from_merged = results
    # A LoRA run's checkpoint (the adapter alone) answers as the same policy merged does: the
    # engine merged it into the SFT weights. A load that fails or does nothing differs.
    assert from_adapter["answers"] == from_merged["answers"]
    assert from_adapter["identical_answers"] < 12
    results = results[:2]  # the report below plots steps 10 and 20
    # Greedy answers of identical weights are identical: every prompt ties, for every scorer.
    assert identical["identical_answers"] == 12
    for o in identical["outcomes"]:
        assert (o["wins"], o["ties"], o["losses"]) == (0, 12, 0)
        assert o["win_rate"] == 0.5 and (o["ci_low"], o["ci_high"]) == (0.5, 0.5)
    assert different["identical_answers"] < 12
    self_judge = different["outcomes"][0]
    assert self_judge["scorer"] == "self-judge" and self_judge["ties"] < 12
    assert self_judge["wins"] + self_judge["ties"] + self_judge["losses"] == 12
    assert different["mean_tokens_policy"] > 0 and different["mean_tokens_baseline"] > 0
    # Per answer, what the experiments keep as outcomes (experiments/lib/experiment_outcomes.py):
    # lengths whose means are the reported ones, cut flags, each scorer's per-prompt strengths.
    assert sum(different["answer_tokens"]) / 12 == different["mean_tokens_policy"]
    assert sum(different["baseline_answer_tokens"]) / 12 == different["mean_tokens_baseline"]
    assert [type(t) for t in different["answer_truncated"] + different["baseline_answer_truncated"]] == [bool] * 24
    assert len(self_judge["strengths"]) == 12 and sum(p > 0.5 for p in self_judge["strengths"]) == self_judge["wins"]
    # Against itself as the baseline, the other checkpoint ties everywhere.
    (mirror,) = evaluate([other], prompts, HeadToHeadOptions(tiny_model_dir, ["heuristic"], 10, baseline=other))
    assert mirror["baseline"] == str(other) and mirror["outcomes"][0]["ties"] == 12

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps({"step": s, "loss": 0.7 - 0.01 * s, "loss/probe": 0.7}) for s in range(1, 21)))
    write_report(results, tmp_path / "eval", metrics)
    assert (tmp_path / "eval" / "eval.png").stat().st_size > 10_000
    assert "self-judge" in (tmp_path / "eval" / "eval.md").read_text()
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())[0]["prompts"] == 12


@pytest.mark.engine
@pytest.mark.timeout(600)
def test_one_answerer_chunked_or_whole_and_k_samples(ray_cluster, tiny_model_dir):
    """cluster/evaluation/answers.Answerer, the one place answers come from: 7 prompts in chunks
    of 3 (the command lines' way, a bar advancing 3, 3, 1) are the answers of one call (the
    in-run held-out's way), in prompt order; `sample` gives K answers per prompt, in prompt
    order. Would catch a chunk boundary that drops or repeats the tail, answers out of order,
    or a bar that miscounts."""
    from transformers import AutoTokenizer

    from cluster.data.prompts import SHIPPED_EVAL, load_prompts
    from cluster.evaluation.answers import Answerer
    from core.config import RolloutConfig

    class Counted:  # what CountBar is told, on a machine where CountBar itself draws nothing
        def __init__(self):
            self.steps = []

        def advance(self, n):
            self.steps.append(n)

    prompts = load_prompts(SHIPPED_EVAL, AutoTokenizer.from_pretrained(tiny_model_dir), 256, "error", 7)
    with Answerer.start(tiny_model_dir, RolloutConfig(k=3, max_tokens=6), prompts, 0, "answers-test", 1) as answerer:
        bar = Counted()
        chunked = Answerer(answerer.engine, chunk=3).answer(prompts, 6, bar=bar)
        whole = Answerer.wrap(answerer.engine).answer(prompts, 6)
        one_by_one = [Answerer.wrap(answerer.engine).answer([p], 6)[0] for p in prompts[::3]]
        samples = answerer.sample(prompts)
    assert bar.steps == [3, 3, 1]
    assert len(chunked) == 7 and chunked == whole
    assert one_by_one == chunked[::3]  # each answer belongs to its own prompt
    assert [r["prompt_id"] for r in samples] == [p.prompt_id for p in prompts]
    assert [len(r["answers"]) for r in samples] == [3] * 7
