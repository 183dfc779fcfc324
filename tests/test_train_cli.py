"""The driver's input checks (`python -m cluster.train`): a bad config, model, tokenizer or
prompt file is refused with exit code 2 and a message naming the problem, before Ray or any
actor starts."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.config import ConfigError, dump_config, load_config
from cluster.data.prompts import PromptFileError
from cluster.driver import checkpoint as ckpt
from cluster.run import build_run
from cluster.train import main, parse_args, resolve_config
from core.chat import ChatEncoder

REPO_ROOT = Path(__file__).resolve().parents[1]
RAY_START = "starting a local Ray cluster"
OUR_LOGGERS = ("osp", "cluster", "actors", "judge", "learner")


@pytest.fixture(autouse=True)
def restore_loggers():
    """main() installs its own handlers on our loggers (propagate off); put them back so other
    tests' caplog still sees `cluster.*` records."""
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate)
             for n in OUR_LOGGERS}
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def _prompt_file(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _row(pid: str, prompt: str) -> str:
    return json.dumps({"id": pid, "prompt": prompt})


GOOD = [_row("a", "Explain how rain forms."), _row("b", "Give three tips for sleeping well.")]
MALFORMED = [
    GOOD[0],
    '{"id": "c", "prompt": ',  # line 2: truncated JSON
    json.dumps({"id": "d", "text": "wrong field"}),  # line 3: no prompt
    json.dumps({"id": "e", "prompt": "   "}),  # line 4: empty
    GOOD[1],
]


def _run_main(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    assert RAY_START not in err
    return code, err


# ---------------------------------------------------------------------------------------
# In-process: main() for the config errors (no model needed: refused first).


@pytest.mark.parametrize("override, message", [
    ("learner.max_step=10", "unknown config key learner.max_step (did you mean learner.max_steps?)"),
    ("rollout.kk=4", "unknown config key rollout.kk (did you mean rollout.k?)"),
    ("rollout.k=3", "rollout.k: ranked pairing needs an even K ≥ 2 (method=dno takes any K ≥ 2), got 3"),
    ("loss.beta=0", "loss.beta: must be > 0, got 0.0"),
    ("judge.answer_tokens=[A]", "judge.answer_tokens: need two distinct strings, got ['A']"),
])
def test_main_refuses_bad_config_values(tmp_path, capsys, override, message):
    run_dir = tmp_path / "run"
    code, err = _run_main([override, f"checkpoint.dir={run_dir}"], capsys)
    assert code == 2
    assert message in err
    assert not run_dir.exists()


def test_main_refuses_a_missing_config_file(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    code, err = _run_main(["--config", str(missing), f"checkpoint.dir={tmp_path / 'run'}"], capsys)
    assert code == 2
    assert f"config file {str(missing)!r} does not exist" in err


# ---------------------------------------------------------------------------------------
# The model path and the judge's answer tokens.


def test_main_refuses_a_model_path_that_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "models" / "absent"
    code, err = _run_main([f"model.path={missing}", f"checkpoint.dir={tmp_path / 'run'}"], capsys)
    assert code == 2
    assert f"model path {str(missing)!r} does not exist or is not a folder" in err
    assert not (tmp_path / "run").exists()


def test_main_refuses_a_folder_that_is_not_a_model(tmp_path, capsys):
    folder = tmp_path / "empty-model"
    folder.mkdir()
    code, err = _run_main([f"model.path={folder}", f"checkpoint.dir={tmp_path / 'run'}"], capsys)
    assert code == 2
    assert f"model path {str(folder)!r} has no config.json (not a HF model folder)" in err


def test_main_refuses_a_missing_judge_model(tiny_model_dir, tmp_path, capsys):
    missing = tmp_path / "judge-model"
    code, err = _run_main([f"model.path={tiny_model_dir}", f"judge.kind=lm:{missing}",
                           f"checkpoint.dir={tmp_path / 'run'}"], capsys)
    assert code == 2
    assert f"model path {str(missing)!r} does not exist" in err


def test_main_refuses_judge_answers_the_tokenizer_splits(tiny_model_dir, tiny_tokenizer, tmp_path, capsys):
    absolutely = tiny_tokenizer("Absolutely", add_special_tokens=False)["input_ids"]
    assert len(absolutely) > 1  # the premise: a multi-token word for the tiny BPE
    assert len(tiny_tokenizer("Never", add_special_tokens=False)["input_ids"]) > 1
    code, err = _run_main([f"model.path={tiny_model_dir}", "judge.kind=self", 'judge.answer_tokens=["Absolutely","Never"]',
                           f"checkpoint.dir={tmp_path / 'run'}"], capsys)
    assert code == 2
    assert (f"judge.answer_tokens: judge answer 'Absolutely' is not a single token for this tokenizer "
            f"(encodes to {absolutely}); choose other judge.answer_tokens") in err
    assert not (tmp_path / "run").exists()


def test_build_run_raises_config_error_for_split_answers(tiny_model_dir, tmp_path):
    cfg = load_config(None, [f"model.path={tiny_model_dir}", "judge.answer_tokens=[A, Never]",
                             f"checkpoint.dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"^judge.answer_tokens: judge answer 'Never' is not a single token"):
        build_run(cfg)


def test_build_run_accepts_single_token_answers_and_the_shipped_prompts(tiny_model_dir, tiny_tokenizer, tmp_path):
    cfg = load_config(None, [f"model.path={tiny_model_dir}", "data.num_prompts=7", f"checkpoint.dir={tmp_path}"])
    spec = build_run(cfg)
    model_path, judge, prompts = spec.model_path, spec.cfg.judge.kind, spec.prompts
    assert model_path == tiny_model_dir and judge == "self"
    assert [p.prompt_id for p in prompts] == [f"train-{i:04d}" for i in range(1, 8)]
    assert list(prompts[0].tokens) == ChatEncoder(tiny_tokenizer).user_prompt(prompts[0].text)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------
# The prompt file.


def test_main_reports_malformed_rows_by_line(tiny_model_dir, tmp_path, capsys):
    path = _prompt_file(tmp_path / "prompts.jsonl", MALFORMED)
    code, err = _run_main([f"model.path={tiny_model_dir}", f"data.prompts={path}",
                           f"checkpoint.dir={tmp_path / 'run'}"], capsys)
    assert code == 2
    assert (f"{path}: 3 bad row(s): line 2: not valid JSON (Expecting value); line 3: missing string field "
            "'prompt'; line 4: empty prompt. Fix them or set data.on_bad_rows=skip") in err
    assert not (tmp_path / "run").exists()


def test_on_bad_rows_skip_proceeds_with_the_good_rows(tiny_model_dir, tmp_path, capsys):
    path = _prompt_file(tmp_path / "prompts.jsonl", MALFORMED)
    from cluster.driver.progress import setup_logging

    setup_logging()  # as main() does: the warning goes to stderr
    cfg = load_config(None, [f"model.path={tiny_model_dir}", f"data.prompts={path}", "data.on_bad_rows=skip",
                             f"checkpoint.dir={tmp_path / 'run'}"])
    prompts = build_run(cfg).prompts
    assert [(p.prompt_id, p.text) for p in prompts] == [("a", "Explain how rain forms."),
                                                         ("b", "Give three tips for sleeping well.")]
    err = capsys.readouterr().err
    assert "skipping 3 bad row(s): line 2: not valid JSON" in err
    assert "line 3: missing string field 'prompt'; line 4: empty prompt" in err


def test_main_refuses_an_over_long_prompt(tiny_model_dir, tiny_tokenizer, tmp_path, capsys):
    long_text = "Write a short poem about the sea. " * 12
    n_long = len(ChatEncoder(tiny_tokenizer).user_prompt(long_text))
    assert n_long > 64 >= len(ChatEncoder(tiny_tokenizer).user_prompt("Explain how rain forms."))
    path = _prompt_file(tmp_path / "prompts.jsonl", [GOOD[0], _row("long", long_text)])
    code, err = _run_main([f"model.path={tiny_model_dir}", f"data.prompts={path}", "model.max_prompt_tokens=64",
                           f"checkpoint.dir={tmp_path / 'run'}"], capsys)
    assert code == 2
    assert f"line 2: prompt is {n_long} tokens, over model.max_prompt_tokens=64" in err

    cfg = load_config(None, [f"model.path={tiny_model_dir}", f"data.prompts={path}", "model.max_prompt_tokens=64",
                             "data.on_bad_rows=skip", f"checkpoint.dir={tmp_path / 'run'}"])
    assert [p.prompt_id for p in build_run(cfg).prompts] == ["a"]


def test_main_refuses_a_prompt_file_that_does_not_exist(tiny_model_dir, tmp_path, capsys):
    missing = tmp_path / "absent.jsonl"
    code, err = _run_main([f"model.path={tiny_model_dir}", f"data.prompts={missing}",
                           f"checkpoint.dir={tmp_path / 'run'}"], capsys)
    assert code == 2
    assert f"prompt file {str(missing)!r} does not exist" in err


def test_build_run_raises_prompt_file_error_when_no_row_is_usable(tiny_model_dir, tmp_path):
    path = _prompt_file(tmp_path / "prompts.jsonl", ["not json", "[1, 2]"])
    cfg = load_config(None, [f"model.path={tiny_model_dir}", f"data.prompts={path}", "data.on_bad_rows=skip",
                             f"checkpoint.dir={tmp_path}"])
    with pytest.raises(PromptFileError, match="no usable prompts"):
        build_run(cfg)


# ---------------------------------------------------------------------------------------
# The run folder, checked before Ray starts.


def _checkpoint(run_dir: Path, step: int, base: dict | None = None) -> None:
    tmp = ckpt.temp_dir(run_dir, step)
    if base is not None:
        ckpt.write_base_model(tmp, base)
    ckpt.finalize(run_dir, tmp, ckpt.RunState(step=step), keep=0)


def test_main_refuses_to_overwrite_a_run_without_resume(tiny_model_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    _checkpoint(run_dir, 10)
    code, err = _run_main([f"model.path={tiny_model_dir}", f"checkpoint.dir={run_dir}"], capsys)
    assert code == 2
    assert f"checkpoint.dir {str(run_dir)!r} already holds checkpoints (latest ckpt-000010)" in err
    assert sorted(p.name for p in run_dir.iterdir()) == ["ckpt-000010", "latest"]  # untouched


def test_resume_past_a_latest_pointer_to_a_missing_checkpoint_takes_the_previous_one(tiny_model_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    _checkpoint(run_dir, 10)
    ckpt.atomic_write_text(run_dir / "latest", "ckpt-000020\n")
    code, err = _run_main(["--resume", f"model.path={tiny_model_dir}", "learner.max_steps=10",
                           f"checkpoint.dir={run_dir}"], capsys)
    assert code == 0, err
    assert "ckpt-000020 is damaged (missing); resuming from ckpt-000010" in err
    assert "nothing to do: the run is at step 10 of learner.max_steps=10" in err


def test_main_refuses_a_resume_with_no_complete_checkpoint_in_one_line(tiny_model_dir, tmp_path, capsys):
    """Exit 2 and one error line, no traceback: would catch a damaged checkpoint reaching
    DeepSpeed's loader (its PytorchStreamReader traceback, exit 1)."""
    run_dir = tmp_path / "run"
    _checkpoint(run_dir, 10)
    (run_dir / "ckpt-000010" / "run_state.json").write_text("")
    code, err = _run_main(["--resume", f"model.path={tiny_model_dir}", f"checkpoint.dir={run_dir}"], capsys)
    assert code == 2
    errors = [line for line in err.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "Traceback" not in err
    assert "--resume: no complete checkpoint in" in errors[0] and "ckpt-000010 is damaged (run_state.json has 0 bytes" in err


def test_main_refuses_a_resume_on_another_base_model(tiny_model_dir, tmp_path, capsys):
    """The checkpoint records the base it trained on; model.path now names another one (here:
    the same folder whose weights changed). Would catch a LoRA resume that loads its adapter
    onto whatever model.path names."""
    from cluster.data.model_identity import base_identity

    run_dir = tmp_path / "run"
    trained_on = {**base_identity(tiny_model_dir), "id": "local-v1:sha256:" + "0" * 64}
    _checkpoint(run_dir, 10, trained_on)
    code, err = _run_main(["--resume", f"model.path={tiny_model_dir}", f"checkpoint.dir={run_dir}"], capsys)
    assert code == 2
    assert (f"model.path: ckpt-000010 was trained on {tiny_model_dir} (fingerprint 000000000000), not on "
            f"{tiny_model_dir} (fingerprint ") in err
    assert RAY_START not in err


def test_resume_of_a_finished_run_has_nothing_to_do(tiny_model_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    _checkpoint(run_dir, 10)
    code, err = _run_main(["--resume", f"model.path={tiny_model_dir}", "learner.max_steps=10",
                           f"checkpoint.dir={run_dir}"], capsys)
    assert code == 0
    assert "nothing to do: the run is at step 10 of learner.max_steps=10" in err
    assert not (run_dir / "config.yaml").exists()


# ---------------------------------------------------------------------------------------
# resolve_config: which config a (resumed) run uses.


def test_resolve_config_without_resume_ignores_a_saved_config(tmp_path):
    saved = load_config(None, ["rollout.k=6", f"checkpoint.dir={tmp_path}"])
    dump_config(saved, tmp_path / "config.yaml")
    cfg = resolve_config(parse_args([f"checkpoint.dir={tmp_path}"]))
    assert cfg.rollout.k == 4  # default.yaml's, not the saved 6


def test_resolve_config_on_resume_uses_the_runs_own_config_plus_overrides(tmp_path):
    saved = load_config(None, ["rollout.k=4", "method=ipo", "learner.max_steps=5", f"checkpoint.dir={tmp_path}"])
    dump_config(saved, tmp_path / "config.yaml")
    cfg = resolve_config(parse_args(["--resume", "learner.max_steps=9", f"checkpoint.dir={tmp_path}"]))
    assert (cfg.rollout.k, cfg.method, cfg.learner.max_steps) == (4, "ipo", 9)
    assert cfg.checkpoint.dir == str(tmp_path)


def test_resolve_config_on_resume_with_an_explicit_config_ignores_the_saved_one(tmp_path):
    saved = load_config(None, ["rollout.k=4", f"checkpoint.dir={tmp_path}"])
    dump_config(saved, tmp_path / "config.yaml")
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text("rollout:\n  k: 6\n")
    cfg = resolve_config(parse_args(["--resume", "--config", str(explicit), f"checkpoint.dir={tmp_path}"]))
    assert cfg.rollout.k == 6


def test_resolve_config_on_resume_validates_overrides_against_the_saved_config(tmp_path):
    saved = load_config(None, ["learner.pairs_per_step=2", "pipeline.buffer_max_pairs=16", f"checkpoint.dir={tmp_path}"])
    dump_config(saved, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml", ["pipeline.buffer_max_pairs=2"]).pipeline.buffer_max_pairs == 2
    cfg = resolve_config(parse_args(["--resume", "pipeline.buffer_max_pairs=2", f"checkpoint.dir={tmp_path}"]))
    assert cfg.pipeline.buffer_max_pairs == 2


def test_resolve_config_on_resume_refuses_a_bad_override_of_the_saved_config(tmp_path):
    dump_config(load_config(None, [f"checkpoint.dir={tmp_path}"]), tmp_path / "config.yaml")
    with pytest.raises(ConfigError, match="rollout.k: ranked pairing needs an even K"):
        resolve_config(parse_args(["--resume", "rollout.k=5", f"checkpoint.dir={tmp_path}"]))


# ---------------------------------------------------------------------------------------
# As a subprocess: the real entry point, exit code and stderr. Each pays the ~3 s import of the
# stack, so they are started when this module's first test runs, go on beside the in-process
# tests, and are awaited by the tests at the end of the module.

CLI_CASES = {
    "odd_k": (["rollout.k=3"], "rollout.k: ranked pairing needs an even K ≥ 2 (method=dno takes any K ≥ 2), got 3"),
    "unknown_key": (["learner.max_step=10"], "unknown config key learner.max_step (did you mean learner.max_steps?)"),
    "missing_model": (["model.path={base}/no-such-model"], "no-such-model' does not exist or is not a folder"),
    # The command, offline with an empty cache: the id, its revision and the cache named.
    "uncached_hub_id": (["model.path=HuggingFaceTB/SmolLM2-135M-Instruct"],
                        "Hugging Face model 'HuggingFaceTB/SmolLM2-135M-Instruct' (revision 'main') is not in the cache; "
                        "Hugging Face cache searched: {base}/empty-hub-cache. HF_HUB_OFFLINE=1 is set"),
}
CLI_ENV = {"uncached_hub_id": {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": "{base}/empty-hub-cache"}}


@pytest.fixture(scope="module", autouse=True)
def cli_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONIOENCODING"] = "utf-8"
    procs = {}
    for name, (overrides, _) in CLI_CASES.items():
        run_dir = base / f"run-{name}"
        out, err = base / f"{name}.out", base / f"{name}.err"
        case_env = {**env, **{k: v.format(base=base) for k, v in CLI_ENV.get(name, {}).items()}}
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cluster.train", *(o.format(base=base) for o in overrides),
                 f"checkpoint.dir={run_dir}"],
                cwd=REPO_ROOT, env=case_env, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe,
            )
        procs[name] = (proc, run_dir, out, err, base)

    def result(name: str) -> tuple[int, str, str, Path, Path]:
        proc, run_dir, out, err, base = procs[name]
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return proc.returncode, out.read_text("utf-8"), err.read_text("utf-8"), run_dir, base

    yield result
    for proc, *_ in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_refuses_bad_input_with_exit_code_2(cli_runs, case):
    code, out, err, run_dir, base = cli_runs(case)
    message = CLI_CASES[case][1].format(base=base)
    assert code == 2, err
    error_lines = [line for line in err.splitlines() if " ERROR " in line]
    assert len(error_lines) == 1 and message in error_lines[0], err
    assert "Traceback" not in err
    assert RAY_START not in out + err  # refused before any cluster or actor start
    assert not run_dir.exists()  # nothing written


def test_verifier_judge_refuses_prompts_without_instructions(tiny_model_dir, tmp_path):
    cfg = load_config(None, [f"model.path={tiny_model_dir}", "judge.kind=verifier", f"checkpoint.dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"^judge.kind: verifier needs instructions on every prompt; 200 prompt"):
        build_run(cfg)


def test_python_judge_that_cannot_be_imported_is_refused_before_any_actor(tiny_model_dir, tmp_path):
    cfg = load_config(None, [f"model.path={tiny_model_dir}", "judge.kind=python:no_such_module:fn",
                             f"checkpoint.dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"^judge.kind: judge python:no_such_module:fn: cannot load 'fn'"):
        build_run(cfg)


def test_unknown_judge_kind_is_refused_by_the_config():
    with pytest.raises(ConfigError, match=r"^judge.kind: unknown 'oracle'; choose one of self, checklist, lm:<model>"):
        load_config(None, ["judge.kind=oracle"])
