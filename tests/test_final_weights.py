"""A run's final score is verified or refused (real engines, the tiny model).

At the end of a run every rollout actor must hold the final weights: their log-probs are compared
with the learner's (cluster/driver/weight_sync.push_gaps), the held-out answers are taken from an actor that
passed, and an actor that fails gets a second push. If the check still fails, heldout.json says
`"weights_verified": false` with no final score and `python -m cluster.train` exits 4."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

OUR_LOGGERS = ("osp", "cluster", "actors", "judge", "learner")
STEPS = 3


def test_a_push_check_passes_only_when_every_engine_is_under_the_tolerance():
    from cluster.driver.weight_sync import PushCheck

    ok = PushCheck({"rollout-0": 2e-6, "rollout-1": 9e-4}, tolerance=1e-3)
    assert ok.verified and ok.failed == [] and ok.max_gap == 9e-4
    stale = PushCheck({"rollout-0": 2e-6, "rollout-1": 0.15, "rollout-2": float("inf")}, tolerance=1e-3)
    assert not stale.verified and stale.failed == ["rollout-1", "rollout-2"]  # inf: did not answer
    assert not PushCheck({}, tolerance=1e-3).verified  # no engine holds anything: nothing verified


def test_heldout_json_without_verified_final_answers_keeps_the_sft_side_and_no_score(tmp_path):
    """Bug it catches: a final score written from answers no check vouched for."""
    from cluster.data.prompts import Prompt
    from cluster.evaluation.heldout import write_result
    from judge.verifier import Instructions

    no_comma = Instructions(("punctuation:no_comma",), ({},))
    prompts = [Prompt(f"q{i}", f"Describe tea {i}. Do not use any commas.", (1, 2), no_comma) for i in range(3)]
    sft = ["tea, hot", "tea", "green tea"]
    refused = write_result(tmp_path, 3, prompts, sft, None, seed=0)
    assert refused["weights_verified"] is False
    assert refused["final"] is None and refused["gain"] is None and refused["per_kind"]["final"] is None
    assert refused["sft"]["prompt_strict"]["value"] == pytest.approx(2 / 3) and refused["answers"]["sft"] == sft
    assert json.loads((tmp_path / "heldout.json").read_text()) == refused
    scored = write_result(tmp_path, 3, prompts, sft, ["tea", "tea", "tea"], seed=0)
    assert scored["weights_verified"] is True and scored["final"]["prompt_strict"]["value"] == 1.0
    assert scored["gain"]["prompt_strict"]["value"] == pytest.approx(1 / 3)


def _instruction_file(path: Path, questions: list[str]) -> Path:
    no_comma = ("punctuation:no_comma", {}, "Do not use any commas.")
    short = ("length_constraints:number_words", {"relation": "less than", "num_words": 4}, "Use under 4 words.")
    rows = [{"id": f"q{i}", "prompt": f"{q} {text}", "instruction_id_list": [kind], "kwargs": [kwargs]}
            for i, (q, (kind, kwargs, text)) in enumerate(zip(questions, [no_comma, short] * len(questions)))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _overrides(model: str, tmp: Path, run_dir: Path) -> list[str]:
    """A verifier run of STEPS steps with a held-out check on 4 prompts, LoRA, one rollout actor
    and one learner rank; lr 0.05 so the final weights answer differently from the SFT model's."""
    words = ["tea", "rain", "bread", "maps", "snow", "music", "glass", "trains"]
    train = _instruction_file(tmp / "train.jsonl", [f"Tell me about {w}." for w in words])
    held = _instruction_file(tmp / "held.jsonl", [f"Describe {w}." for w in words[:4]])
    return [
        f"model.path={model}", "model.max_prompt_tokens=128", "judge.kind=verifier", f"data.prompts={train}",
        f"eval.prompts={held}", "eval.max_tokens=6", "rollout.k=4", "rollout.max_tokens=6",
        "rollout.prompts_per_batch=2", f"learner.max_steps={STEPS}", "learner.pairs_per_step=2", "learner.lr=0.05",
        "learner.lora.r=4", "pipeline.max_staleness=1", "checkpoint.every=0", f"checkpoint.dir={run_dir}",
        "metrics.trackers=[]", "metrics.progress=false", "metrics.probe_every=0",
    ]


def _greedy(model_dir: Path, prompts, max_tokens: int) -> list[str]:
    """Greedy answers by transformers (vLLM's greedy tokens equal transformers')."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for p in prompts:
            ids = model.generate(torch.tensor([p.tokens]), max_new_tokens=max_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            out.append(tokenizer.decode(ids[0, len(p.tokens):], skip_special_tokens=True).rstrip("\ufffd"))
    return out


@pytest.mark.engine
@pytest.mark.timeout(600)
def test_a_rollout_actor_killed_after_the_last_push_is_pushed_again_and_verified(
        ray_cluster, tiny_model_dir, tmp_path, caplog):
    """The rollout actor is killed (SIGKILL) once it has loaded step 3's weights; Ray restarts it
    on the SFT weights, and nothing brings it up to date before the end. Bugs it catches: the
    held-out "step 3" answers given by the SFT weights of the restarted actor (today's code
    answered with them and only logged a warning about the gap), and a run that ends without a
    second push."""
    import ray

    from cluster.config import load_config
    from cluster.driver.pipeline import Pipeline
    from cluster.run import build_run

    run_dir = tmp_path / "run"
    killed = {}

    def progress(step, max_steps, metrics):
        if step == STEPS:  # step 3's push was just sent: info() runs after the load, in call order
            info = ray.get(pipeline.rollouts.members[0].handle.info.remote())
            assert info["version"] == STEPS
            killed["pid"] = info["pid"]
            os.kill(info["pid"], signal.SIGKILL)

    spec = build_run(load_config(None, _overrides(tiny_model_dir, tmp_path, run_dir)))
    pipeline = Pipeline(spec, spec.initial_state(), progress)
    try:
        pipeline.start()
        with caplog.at_level(logging.WARNING, logger="osp"):
            state = pipeline.run()
        info = ray.get(pipeline.rollouts.members[0].handle.info.remote())
    finally:
        pipeline.shutdown()
    assert state.step == STEPS and killed
    assert info["pid"] != killed["pid"] and info["version"] == STEPS  # restarted, then pushed again
    assert any("rollout-0 not on the learner's step-3 weights" in r.getMessage() and "pushing again" in r.getMessage()
               for r in caplog.records)
    check = json.loads((run_dir / "weights_check.json").read_text())
    assert check["pushed_again"] and check["weights_verified"]
    assert check["max_abs_logprob_gap"] < 1e-4 and check["gaps"]["rollout-0"] < 1e-4
    report = json.loads((run_dir / "heldout.json").read_text())
    assert report["weights_verified"] is True and report["step"] == STEPS and report["gain"] is not None
    # The "step 3" answers are step 3's, not the restarted actor's SFT answers.
    final = _greedy(run_dir / f"ckpt-{STEPS:06d}" / "hf", spec.eval_prompts, 6)
    sft = _greedy(Path(tiny_model_dir), spec.eval_prompts, 6)
    assert final != sft  # the weights moved enough for the answers to tell them apart
    assert [a.rstrip("\ufffd") for a in report["answers"]["final"]] == final


@pytest.fixture
def restore_loggers():
    """main() installs its own handlers on our loggers (propagate off); put them back after."""
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate)
             for n in OUR_LOGGERS}
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


class _ChangeModelFolderOnceActorsAreUp(logging.Filter):
    """When the driver logs "actors up" (every actor has loaded the model; nothing is pushed
    yet), rewrite one adapted weight in the model folder. The learner and the judge hold the
    weights they loaded; each rollout engine merges every adapter push into the SFT weights it
    reads from that folder (actors/engine_weights.load_lora_delta), so from then on every push
    leaves the engine off the learner's weights, the second push too: what a node whose copy
    of the model differs from the learner's would do. No product code is changed for it."""

    def __init__(self, model_dir: Path, name: str):
        super().__init__()
        self.model_dir, self.name, self.done = model_dir, name, False

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.done and record.getMessage().startswith("actors up"):
            from safetensors.torch import load_file, save_file

            path = self.model_dir / "model.safetensors"
            state = load_file(str(path))
            weight = state[self.name]  # a tenth of its own spread: the model still samples sensibly
            state[self.name] = weight + 0.1 * weight.std() * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))
            save_file(state, str(self.model_dir / "changed.tmp"), metadata={"format": "pt"})
            os.replace(self.model_dir / "changed.tmp", path)
            self.done = True
        return True


@pytest.mark.engine
@pytest.mark.timeout(600)
def test_a_push_that_cannot_reach_the_engine_refuses_the_score_and_exits_4(
        ray_cluster, tiny_model_dir, tmp_path, capsys, restore_loggers):
    """Bugs it catches: a final score computed from an engine whose weights are not the
    learner's (today: a warning in the log, heldout.json written from it anyway, exit 0)."""
    from cluster.train import EXIT_CODES, main

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    run_dir = tmp_path / "run"
    changer = _ChangeModelFolderOnceActorsAreUp(model, "model.layers.0.self_attn.q_proj.weight")
    logging.getLogger("osp").addFilter(changer)
    try:
        code = main(_overrides(str(model), tmp_path, run_dir))
    finally:
        logging.getLogger("osp").removeFilter(changer)
    err = capsys.readouterr().err
    assert changer.done
    assert code == EXIT_CODES["weights unverified"] == 4, err[-3000:]
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1, err[-3000:]
    assert "weights check failed: rollout-0 not on the learner's step-3 weights after a second push" in errors[0]
    assert "heldout.json: weights_verified false" in errors[0]
    check = json.loads((run_dir / "weights_check.json").read_text())
    assert check["pushed_again"] and not check["weights_verified"]
    assert check["gaps"]["rollout-0"] > check["tolerance"] == 1e-3
    report = json.loads((run_dir / "heldout.json").read_text())
    assert report["weights_verified"] is False
    assert report["final"] is None and report["gain"] is None and report["answers"]["final"] is None
    assert len(report["answers"]["sft"]) == report["prompts"] == 4  # the SFT side is kept
    # nothing trained is lost: the final checkpoint holds the adapter and the merged model
    assert (run_dir / f"ckpt-{STEPS:06d}" / "hf" / "adapter_model.safetensors").exists()
    assert (run_dir / f"ckpt-{STEPS:06d}" / "hf" / "merged" / "model.safetensors").exists()
