"""The experiments' per-prompt outcomes (experiments/lib/experiment_outcomes.py) and the summaries
that read them: figures recomputed from a hand-made outcomes file (tests/outcomes/synthetic.json)
against values worked out by hand, and an evaluation's eval.json exported and read back. Light:
no engines.

synthetic.json: 4 prompts (kinds: p1 no_comma; p2 postscript + no_comma; p3 number_words;
p4 postscript), prompt-level strict verdicts
    sft "0001"   osp-s0 "1110"   osp-s1 "0011"   dpo-s0 "1000"   dpo-s1 "1110"
so SFT 0.25; OSP 0.75 and 0.50 (gains +0.50, +0.25: mean +0.375, SD 0.25/√2); DPO 0.25 and
0.75 (gains 0, +0.50: mean +0.25, SD 0.5/√2); OSP − DPO +0.125.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC = Path(__file__).resolve().parent / "outcomes" / "synthetic.json"
sys.path.insert(0, str(ROOT / "experiments" / "lib"))

import experiment_outcomes  # noqa: E402
from experiment_summary import training_summary  # noqa: E402


def _module(experiment: str):
    """experiments/<experiment>/summarise.py, imported under a name of its own (the folders are not packages)."""
    spec = importlib.util.spec_from_file_location(f"summarise_{experiment.replace('-', '_')}",
                                                  ROOT / "experiments" / experiment / "summarise.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_methods_summary_recomputes_its_block_from_outcomes():
    """Catches: a gain not paired with SFT's answers, runs pooled as prompts (the SD), per-kind
    rates read from the wrong instruction of a two-instruction prompt, OSP and DPO swapped, the
    truncated/tokens means taken over the wrong answer set, training fifths off by one."""
    keys = _module("methods-ifeval").summarise([SYNTHETIC])
    sft = keys["sft"]
    assert sft["accuracy"]["prompt_strict"]["value"] == 0.25
    assert sft["accuracy"]["prompt_loose"]["value"] == 0.5  # p1 passes no_comma loosely
    assert sft["accuracy"]["instruction_strict"]["value"] == pytest.approx(2 / 5)
    assert (sft["truncated"], sft["mean_tokens"]) == (0.5, 31.5)
    assert sft["per_kind"]["detectable_content:postscript"]["strict"] == 1.0  # p2's first, p4's only
    assert sft["per_kind"]["punctuation:no_comma"]["strict"] == 0.0  # p1's only, p2's second

    osp, dpo = keys["methods"]["osp"], keys["methods"]["dpo"]
    assert osp["seeds"] == [0, 1] and osp["step"] == 15
    assert osp["accuracy"]["value"] == pytest.approx(0.625)
    assert osp["gain"]["value"] == pytest.approx(0.375)
    assert osp["gain"]["runs"] == [[pytest.approx(0.5), pytest.approx(0.25)]]
    assert osp["between_run_sd"] == pytest.approx(0.25 / math.sqrt(2))
    # Per prompt, the runs' mean less SFT: (0.5, 0.5, 1, 0.5) − (0, 0, 0, 1).
    assert osp["gain_prompt_only_ci"]["value"] == pytest.approx(0.375)
    assert osp["per_kind"]["punctuation:no_comma"]["strict"] == 0.5
    assert osp["per_kind"]["detectable_content:postscript"]["strict"] == 0.75
    assert osp["per_kind"]["length_constraints:number_words"]["strict"] == 1.0
    assert (osp["truncated"], osp["mean_tokens"]) == (pytest.approx(0.125), pytest.approx(26.25))
    assert dpo["accuracy"]["value"] == pytest.approx(0.5) and dpo["gain"]["value"] == pytest.approx(0.25)
    assert dpo["between_run_sd"] == pytest.approx(0.5 / math.sqrt(2))
    assert keys["osp_minus_dpo"] == pytest.approx(0.125)
    assert keys["osp_minus_dpo_ci_low"] <= 0.125 <= keys["osp_minus_dpo_ci_high"]
    assert keys["task"].startswith("held-out IFEval") and "4 instruction prompts" in keys["task"]

    runs = keys["runs"]
    assert sorted(runs) == ["dpo-s0@15", "dpo-s1@15", "osp-s0@15", "osp-s1@15"]
    assert runs["dpo-s0@15"]["accuracy"]["prompt_strict"]["value"] == 0.25
    assert runs["dpo-s0@15"]["gain"]["prompt_strict"]["value"] == 0.0
    assert runs["osp-s1@15"]["training"] is None  # no metrics kept for it
    t = runs["osp-s0@15"]["training"]
    # 5 steps: the first and last fifths are one step each.
    assert (t["steps"], t["wall_s"], t["pairs_trained"]) == (5, 50.0, 20)
    assert (t["samples_pass_first_fifth"], t["samples_pass_last_fifth"]) == (0.2, 0.6)
    assert (t["loss_first_fifth"], t["loss_last_fifth"]) == (0.7, 0.6)
    assert t["tie_share_mean"] == pytest.approx(0.4)
    assert (t["median_step_s"], t["median_push_s"]) == (11.0, 0.3)  # push: the steps that pushed


def test_the_methods_summary_rewrites_only_its_own_keys(tmp_path, monkeypatch):
    """Catches: a re-summary that drops another experiment's block, or keeps a key it retired."""
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"broad": {"osp_gain": 0.084}, "methods_seed0_step15": {}, "sft_accuracy": 0.9}))
    monkeypatch.setattr(sys, "argv", ["summarise.py", "--outcomes", str(SYNTHETIC), "--out", str(results)])
    _module("methods-ifeval").main()
    out = json.loads(results.read_text())
    assert out["broad"] == {"osp_gain": 0.084} and "methods_seed0_step15" not in out
    assert out["sft_accuracy"] == 0.25 and out["osp_gain"] == pytest.approx(0.375)


def test_the_broad_summary_marks_kinds_from_outcomes():
    """Catches: a kind's gain read from another instruction's verdict, a mark on the wrong side
    of 0. number_words (p3 only): SFT fails, both OSP runs pass: +1 in every replicate, improved.
    no_comma: OSP seed 0 gains on both prompts, seed 1 on neither: flat. postscript: −0.25."""
    block, _ = _module("broad-ifeval").summarise([SYNTHETIC], 15, {"arm": "by hand", "dpo_note": "dropped"})
    kinds = block["kinds"]["osp"]
    assert kinds["length_constraints:number_words"] == {
        "n": 1, "sft": 0.0, "method": 1.0, "gain": 1.0, "gain_ci_low": 1.0, "gain_ci_high": 1.0, "mark": "improved"}
    assert (kinds["punctuation:no_comma"]["gain"], kinds["punctuation:no_comma"]["mark"]) == (0.5, "flat")
    assert kinds["detectable_content:postscript"]["gain"] == pytest.approx(-0.25)
    assert (block["kinds_improved"], block["kinds_regressed"], block["kinds_total"]) == (1, 0, 3)
    assert block["osp_gain"] == pytest.approx(0.375) and block["dpo_gain"] == pytest.approx(0.25)
    assert block["osp_minus_dpo"]["value"] == pytest.approx(0.125)
    assert block["sft_repeated_share"] == pytest.approx(0.15)
    assert block["runs"]["osp-s0@15"]["repeated_share"] == pytest.approx(0.05)
    assert block["arm"] == "by hand" and "dpo_note" not in block  # DPO has runs now: its note goes
    assert block["prompts"] == "instructions-eval"


def test_the_paper_summary_counts_wins_from_the_kept_strengths():
    """Catches: a tie (p = 0.5 exactly) counted as a win or loss, identical answers miscounted."""
    rows = {r["policy"]: r for r in _module("paper-self-judge").head_to_head(SYNTHETIC)}
    assert (rows["osp-s1@15"]["wins"], rows["osp-s1@15"]["ties"], rows["osp-s1@15"]["losses"]) == (1, 3, 0)
    assert rows["osp-s1@15"]["win_rate"] == 0.625 and rows["osp-s1@15"]["identical"] == 1
    assert (rows["dpo-s0@15"]["wins"], rows["dpo-s0@15"]["ties"], rows["dpo-s0@15"]["losses"]) == (1, 1, 2)
    assert (rows["dpo-s0@15"]["mean_tokens"], rows["dpo-s0@15"]["baseline_mean_tokens"]) == (48.0, 31.5)


def _write(tmp_path: Path, name: str, edit) -> Path:
    raw = json.loads(SYNTHETIC.read_text())
    edit(raw)
    path = tmp_path / name
    path.write_text(json.dumps(raw))
    return path


def test_outcomes_that_disagree_are_refused(tmp_path):
    """Catches: SFT answers from two evaluations silently mixed, a set counted twice, and a
    prompt-level verdict that contradicts its instructions' (a hand-edited file)."""
    def other_sft(raw):
        raw["answer_sets"] = {"sft": {**raw["answer_sets"]["sft"], "tokens": [48, 48, 10, 21]}}

    with pytest.raises(SystemExit, match="the SFT answers differ"):
        experiment_outcomes.load([SYNTHETIC, _write(tmp_path, "other.json", other_sft)])
    with pytest.raises(SystemExit, match="osp-s0@15 is also in"):
        experiment_outcomes.load([SYNTHETIC, _write(tmp_path, "again.json", lambda raw: None)])

    def contradict(raw):
        raw["answer_sets"]["osp-s0@15"]["strict"] = "1111"

    with pytest.raises(SystemExit, match="osp-s0@15: a prompt-level verdict disagrees"):
        experiment_outcomes.load([_write(tmp_path, "bad.json", contradict)])
    empty = tmp_path / "empty"  # an experiment whose outcomes were lost
    empty.mkdir()
    with pytest.raises(SystemExit, match="no outcomes in"):
        experiment_outcomes.load([empty])


PROMPTS = [
    {"id": "q1", "prompt": "Say hi. Do not use commas.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
    {"id": "q2", "prompt": "Say hi with a P.S. and no commas.",
     "instruction_id_list": ["detectable_content:postscript", "punctuation:no_comma"],
     "kwargs": [{"postscript_marker": "P.S."}, {}]},
    {"id": "q3", "prompt": "Say hi in fewer than 5 words.", "instruction_id_list": ["length_constraints:number_words"],
     "kwargs": [{"relation": "less than", "num_words": 5}]},
]


def test_an_evaluation_is_exported_verified_and_read_back(tmp_path):
    """eval.json (as cluster.evaluate writes it) → outcomes: each answer verified against its own
    prompt's instructions, in order. Catches: policy and baseline answers swapped, verdicts
    shifted by a prompt, the identical flags inverted, training read from another run."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    sft = ["Hi, there.", "Hi there.", "Hi there my good old friend."]
    policy = ["Hi there.", "Hi there. P.S. bye", "hi hi hi hi hi hi hi hi"]
    eval_dir = tmp_path / "eval-x"
    eval_dir.mkdir()
    (eval_dir / "eval.json").write_text(json.dumps([{
        "checkpoint": str(tmp_path / "runs" / "osp-s0" / "ckpt-000015" / "hf"), "baseline": "sft",
        "prompt_ids": ["q1", "q2", "q3"], "answers": policy, "baseline_answers": sft,
        "answer_tokens": [3, 6, 8], "baseline_answer_tokens": [4, 3, 7],
        "answer_truncated": [False, False, True], "baseline_answer_truncated": [False, False, False],
        "outcomes": [{"scorer": "verifier", "strengths": [0.88, 0.88, 0.12]}]}]))
    run = tmp_path / "runs" / "osp-s0"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "time": 1.23456789, "loss": 0.69, "step_s": 2.0, "run/pairs_trained": 4, "other": 1}) + "\n"
        + json.dumps({"step": 2, "time": 2.5, "loss": 0.68, "step_s": 2.0, "push_s": 0.1, "run/pairs_trained": 8}) + "\n")

    out = experiment_outcomes.export(eval_dir, str(prompts), tmp_path / "runs")
    assert out["kinds"] == ["detectable_content:postscript", "length_constraints:number_words", "punctuation:no_comma"]
    assert out["instructions"] == ["2", "0 2", "1"]  # q2: postscript, then no_comma
    s, p = out["answer_sets"]["sft"], out["answer_sets"]["osp-s0@15"]
    # SFT: a comma in q1; q2 no P.S. but no comma; q3 six words. The policy: q1 and q2 pass, q3 has 8 words.
    assert (s["strict"], s["strict_per_instruction"]) == ("000", ["0", "01", "0"])
    assert (p["strict"], p["strict_per_instruction"]) == ("110", ["1", "11", "0"])
    assert (p["truncated"], p["tokens"], s["tokens"]) == ("001", [3, 6, 8], [4, 3, 7])
    # "hi" × 8: five 4-grams, one distinct: 4 of 5 repeat.
    assert p["repeated_share"] == [0.0, 0.0, 0.8]
    assert p["versus"] == {"baseline": "sft", "identical": "000", "strengths": {"verifier": [0.88, 0.88, 0.12]}}
    assert out["training"] == {"osp-s0": {"step": [1, 2], "time": [1.23457, 2.5], "run/pairs_trained": [4, 8],
                                          "loss": [0.69, 0.68], "step_s": [2.0, 2.0], "push_s": [None, 0.1]}}

    path = tmp_path / "outcomes" / "eval-x.json"
    path.parent.mkdir()
    path.write_text(experiment_outcomes.dumps(out))
    assert len(path.read_text().splitlines()) == 15  # one line a set and a run: a re-run's diff names them
    assert '"step":[1,2]' in path.read_text()  # integers stay integers
    back = experiment_outcomes.load([path.parent])
    assert [i.ids for i in back.instructions] == [("punctuation:no_comma",),
                                                  ("detectable_content:postscript", "punctuation:no_comma"),
                                                  ("length_constraints:number_words",)]
    assert back.sets["osp-s0@15"].verdicts[1].strict == (True, True)
    assert list(back.sets["osp-s0@15"].truncated) == [False, False, True]
    assert training_summary(back.training["osp-s0"])["median_push_s"] == 0.1


def test_an_evaluation_without_per_answer_lengths_is_refused(tmp_path):
    """An eval.json from before cluster.evaluate kept each answer's tokens: a clear refusal, not a KeyError."""
    (tmp_path / "eval.json").write_text(json.dumps([{"checkpoint": "x", "baseline": "sft", "prompt_ids": [], "answers": []}]))
    with pytest.raises(SystemExit, match="no per-answer tokens"):
        experiment_outcomes.export(tmp_path, "instructions-eval")


def test_a_transfer_summary_takes_the_runs_training_from_the_arm_that_trained_them(tmp_path):
    """An evaluation of another arm's runs keeps no training (that arm's outcomes do): the
    summary finds it there. Catches: the transfer block's training summaries lost (null)."""
    def answers_only(raw):
        del raw["training"]

    answers = _write(tmp_path, "eval-tasks.json", answers_only)
    block, _ = _module("broad-ifeval").summarise([answers], 15)
    assert block["runs"]["osp-s0@15"]["training"] is None
    block, _ = _module("broad-ifeval").summarise([answers], 15, training=[SYNTHETIC])
    assert block["runs"]["osp-s0@15"]["training"]["pairs_trained"] == 20
