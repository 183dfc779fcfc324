"""Checkpoint layout: the run state, atomic folder renames, the `latest` pointer, pruning,
what a crash at each point of a write leaves behind (always the previous checkpoint), the
manifest, and the choice of the checkpoint a --resume continues from when one is damaged."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path

import pytest

from cluster.driver import checkpoint as ckpt
from cluster.driver.checkpoint import RunState
from core.config import ConfigError

MODEL_STATES = "ds/mp_rank_00_model_states.pt"  # where DeepSpeed puts a rank's module state (tag "ds")


def _write(run_dir: Path, step: int, keep: int = 0, **state) -> Path:
    """One checkpoint as the pipeline writes it: temp folder, the ranks' files, finalize."""
    tmp = ckpt.temp_dir(run_dir, step)
    (tmp / "hf").mkdir()
    (tmp / "hf" / "weights.bin").write_bytes(bytes([step % 256]) * 16)
    return ckpt.finalize(run_dir, tmp, RunState(step=step, **state), keep)


def _listing(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir())


def _pointer(run_dir: Path) -> str:
    return (run_dir / "latest").read_text()


# ---------------------------------------------------------------------------------------
# The run state.


def test_run_state_defaults():
    s = RunState()
    assert (s.step, s.version, s.next_prompt, s.requeued, s.prompts_done, s.pairs_trained) == (0, 0, 0, [], 0, 0)
    assert (s.pairs_regenerated, s.tokens_generated, s.seed, s.rng) == (0, 0, 0, None)
    assert RunState().requeued is not RunState().requeued


def test_run_state_json_round_trip_with_an_rng_state():
    rng = random.Random(5)
    rng.random()
    state = RunState(step=12, version=11, next_prompt=250, requeued=[3, 3, 17], prompts_done=230,
                     pairs_trained=48, pairs_regenerated=6, tokens_generated=12345, seed=7,
                     rng=list(rng.getstate()))
    text = state.to_json()
    back = RunState.from_json(text)
    assert json.loads(text)["requeued"] == [3, 3, 17]
    assert back.step == 12 and back.version == 11 and back.next_prompt == 250
    assert back.requeued == [3, 3, 17]  # duplicates kept: each is one handing-out to redo
    assert (back.prompts_done, back.pairs_trained, back.pairs_regenerated) == (230, 48, 6)
    assert (back.tokens_generated, back.seed) == (12345, 7)
    assert back.to_json() == text
    # The driver restores its RNG from the JSON lists (as Pipeline does): same stream.
    restored = random.Random()
    restored.setstate((back.rng[0], tuple(back.rng[1]), back.rng[2]))
    assert [restored.random() for _ in range(5)] == [rng.random() for _ in range(5)]


def test_run_state_from_json_refuses_unknown_fields():
    with pytest.raises(TypeError):
        RunState.from_json(json.dumps({"step": 1, "bogus": 2}))


def test_run_state_of_an_older_checkpoint_drops_the_retired_dno_iteration():
    """Checkpoints written before methods were objects carry dno_iteration (now step // the
    iteration length): they must still resume."""
    assert RunState.from_json(json.dumps({"step": 4, "dno_iteration": 2})) == RunState(step=4)


# ---------------------------------------------------------------------------------------
# Writing: temp folder, rename, pointer.


def test_temp_dir_is_hidden_and_fresh(tmp_path):
    run_dir = tmp_path / "run"
    tmp = ckpt.temp_dir(run_dir, 10)
    assert tmp == run_dir / ".tmp-ckpt-000010"
    assert tmp.is_dir() and list(tmp.iterdir()) == []
    (tmp / "stale").write_text("left by a crashed attempt")
    again = ckpt.temp_dir(run_dir, 10)  # a retry of the same step starts empty
    assert again == tmp and list(again.iterdir()) == []


def test_finalize_renames_the_folder_into_place_and_points_latest_at_it(tmp_path):
    run_dir = tmp_path / "run"
    assert ckpt.latest_checkpoint(run_dir) is None  # no run folder yet
    path = _write(run_dir, 10, version=9, next_prompt=40)
    assert path == run_dir / "ckpt-000010"
    assert _listing(run_dir) == ["ckpt-000010", "latest"]  # the temp folder is gone (renamed)
    assert (path / "hf" / "weights.bin").read_bytes() == bytes([10]) * 16
    assert _pointer(run_dir) == "ckpt-000010\n"
    assert ckpt.latest_checkpoint(run_dir) == path
    state = ckpt.load_state(path)
    assert (state.step, state.version, state.next_prompt) == (10, 9, 40)

    second = _write(run_dir, 20)
    assert _pointer(run_dir) == "ckpt-000020\n"
    assert ckpt.latest_checkpoint(run_dir) == second
    assert _listing(run_dir) == ["ckpt-000010", "ckpt-000020", "latest"]  # keep=0: prune nothing
    assert not list(run_dir.glob(".*"))  # no temp file or folder left


def test_finalize_replaces_a_complete_folder_of_the_same_step(tmp_path):
    run_dir = tmp_path / "run"
    _write(run_dir, 10, next_prompt=1)
    _write(run_dir, 10, next_prompt=2)
    assert ckpt.load_state(ckpt.latest_checkpoint(run_dir)).next_prompt == 2
    assert _listing(run_dir) == ["ckpt-000010", "latest"]


def test_checkpoint_names_sort_by_step():
    assert ckpt.checkpoint_name(7) == "ckpt-000007"
    assert ckpt.checkpoint_name(123456) == "ckpt-123456"


# ---------------------------------------------------------------------------------------
# Pruning.


def test_prune_keeps_the_newest(tmp_path):
    run_dir = tmp_path / "run"
    for step in (5, 10, 15, 20):
        _write(run_dir, step, keep=2)
    assert _listing(run_dir) == ["ckpt-000015", "ckpt-000020", "latest"]
    ckpt.prune(run_dir, 1)
    assert _listing(run_dir) == ["ckpt-000020", "latest"]
    assert ckpt.latest_checkpoint(run_dir) == run_dir / "ckpt-000020"


def test_prune_zero_keeps_everything_and_ignores_temp_folders(tmp_path):
    run_dir = tmp_path / "run"
    for step in (1, 2, 3):
        _write(run_dir, step)
    ckpt.temp_dir(run_dir, 4)
    ckpt.prune(run_dir, 0)
    assert _listing(run_dir) == [".tmp-ckpt-000004", "ckpt-000001", "ckpt-000002", "ckpt-000003", "latest"]
    ckpt.prune(run_dir, 1)
    assert _listing(run_dir) == [".tmp-ckpt-000004", "ckpt-000003", "latest"]


def test_prune_orders_by_step_number_past_six_digits(tmp_path):
    run_dir = tmp_path / "run"
    _write(run_dir, 999_999)
    _write(run_dir, 1_000_000, keep=1)  # "ckpt-1000000" sorts before "ckpt-999999" as text
    assert _listing(run_dir) == ["ckpt-1000000", "latest"]
    assert ckpt.latest_checkpoint(run_dir) == run_dir / "ckpt-1000000"


def test_prune_never_removes_the_checkpoint_latest_names(tmp_path):
    """A crash after renaming ckpt-000020 but before `latest` moved leaves a complete orphan
    newer than `latest`; a resumed run that checkpoints at step 15 (checkpoint.every=5) with
    keep=1 must still be resumable from 15."""
    run_dir = tmp_path / "run"
    _write(run_dir, 10, keep=1)
    orphan = ckpt.temp_dir(run_dir, 20)
    ckpt.atomic_write_text(orphan / "run_state.json", RunState(step=20).to_json())
    orphan.rename(run_dir / "ckpt-000020")
    assert ckpt.latest_checkpoint(run_dir) == run_dir / "ckpt-000010"

    _write(run_dir, 15, keep=1)
    assert ckpt.latest_checkpoint(run_dir) == run_dir / "ckpt-000015"
    assert ckpt.load_state(ckpt.latest_checkpoint(run_dir)).step == 15
    assert _listing(run_dir) == ["ckpt-000015", "ckpt-000020", "latest"]
    _write(run_dir, 20, keep=1)  # the re-done step replaces the orphan and prunes 15
    assert _listing(run_dir) == ["ckpt-000020", "latest"]
    assert ckpt.load_state(ckpt.latest_checkpoint(run_dir)).step == 20


# ---------------------------------------------------------------------------------------
# latest_checkpoint.


def test_latest_checkpoint_is_none_without_a_pointer(tmp_path):
    assert ckpt.latest_checkpoint(tmp_path) is None
    ckpt.temp_dir(tmp_path, 10)  # only a temp folder: nothing complete yet
    assert ckpt.latest_checkpoint(tmp_path) is None


@pytest.mark.parametrize("make_folder", [False, True], ids=["missing", "without-run-state"])
def test_latest_pointing_at_an_incomplete_folder_raises_naming_it(tmp_path, make_folder):
    _write(tmp_path, 10)
    if make_folder:
        (tmp_path / "ckpt-000020" / "hf").mkdir(parents=True)
    ckpt.atomic_write_text(tmp_path / "latest", "ckpt-000020\n")
    with pytest.raises(FileNotFoundError, match=r"names ckpt-000020, which is incomplete or missing") as err:
        ckpt.latest_checkpoint(tmp_path)
    assert str(tmp_path / "latest") in str(err.value)


# ---------------------------------------------------------------------------------------
# Crashes mid-write: the previous checkpoint stays `latest`.


def test_crash_leaving_a_temp_folder_keeps_the_previous_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    _write(run_dir, 10, next_prompt=40)
    tmp = ckpt.temp_dir(run_dir, 20)  # the process dies while the ranks write into it
    (tmp / "ds").mkdir()
    (tmp / "ds" / "half.pt").write_bytes(b"\0" * 3)
    (tmp / "run_state.json").write_text(RunState(step=20).to_json())  # even the state written

    assert _pointer(run_dir) == "ckpt-000010\n"
    latest = ckpt.latest_checkpoint(run_dir)
    assert latest == run_dir / "ckpt-000010"
    assert ckpt.load_state(latest).next_prompt == 40
    ckpt.prune(run_dir, 1)  # pruning neither counts nor removes the partial folder
    assert _listing(run_dir) == [".tmp-ckpt-000020", "ckpt-000010", "latest"]

    # The resumed run writes step 20 again: the stale temp folder is cleared, not merged.
    path = _write(run_dir, 20, keep=1)
    assert sorted(p.name for p in path.iterdir()) == ["hf", "manifest.json", "run_state.json"]
    assert _listing(run_dir) == ["ckpt-000020", "latest"]


def test_exception_inside_the_write_before_finalize_keeps_the_previous_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    _write(run_dir, 10)

    class RankDied(RuntimeError):
        pass

    with pytest.raises(RankDied):
        tmp = ckpt.temp_dir(run_dir, 20)
        (tmp / "hf").mkdir()
        raise RankDied("save_checkpoint failed on rank 1")
    assert ckpt.latest_checkpoint(run_dir) == run_dir / "ckpt-000010"
    assert not (run_dir / "ckpt-000020").exists()


def test_crash_after_the_rename_before_the_pointer_keeps_the_previous_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    _write(run_dir, 10)
    tmp = ckpt.temp_dir(run_dir, 20)
    ckpt.atomic_write_text(tmp / "run_state.json", RunState(step=20).to_json())
    tmp.rename(run_dir / "ckpt-000020")  # ... and the process dies before `latest` is replaced
    assert ckpt.latest_checkpoint(run_dir) == run_dir / "ckpt-000010"


def test_crash_while_writing_the_pointer_keeps_the_old_pointer(tmp_path):
    run_dir = tmp_path / "run"
    _write(run_dir, 10)
    (run_dir / ".latest.tmp").write_text("ckpt-0000")  # half-written temp file, never replaced
    assert ckpt.latest_checkpoint(run_dir) == run_dir / "ckpt-000010"
    _write(run_dir, 20)  # the next write reuses the temp name and replaces it
    assert _pointer(run_dir) == "ckpt-000020\n"
    assert not (run_dir / ".latest.tmp").exists()


# ---------------------------------------------------------------------------------------
# atomic_write_text.


def test_atomic_write_text_replaces_the_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "config.yaml"
    ckpt.atomic_write_text(target, "a: 1\n")
    assert target.read_text() == "a: 1\n"
    ckpt.atomic_write_text(target, "a: 2\n")
    assert target.read_text() == "a: 2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_atomic_write_text_into_a_missing_folder_fails_without_touching_anything(tmp_path):
    with pytest.raises(FileNotFoundError):
        ckpt.atomic_write_text(tmp_path / "missing" / "latest", "x")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------
# The manifest, and the checkpoint a --resume continues from.


def _write_full(run_dir: Path, step: int, keep: int = 0) -> Path:
    """A checkpoint with the files a real one has (DeepSpeed's under ds/, the adapter under hf/)."""
    tmp = ckpt.temp_dir(run_dir, step)
    (tmp / "ds").mkdir()
    (tmp / MODEL_STATES).write_bytes(bytes(range(256)) * 40 + bytes([step]))
    (tmp / "ds" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"adam" * 100)
    (tmp / "hf").mkdir()
    (tmp / "hf" / "adapter_model.safetensors").write_bytes(b"lora" * 50)
    ckpt.write_base_model(tmp, {"model": "/models/base", "id": "local-v1:sha256:00ff"})
    return ckpt.finalize(run_dir, tmp, RunState(step=step), keep)


def test_the_manifest_lists_every_other_file_with_its_size_and_sha256(tmp_path):
    """Would catch a manifest that misses a file (nested ones: ds/, hf/), lists itself, or
    records a size or digest other than the bytes on disk."""
    path = _write_full(tmp_path, 4)
    files = json.loads((path / "manifest.json").read_text())["files"]
    assert sorted(files) == ["base_model.json", "ds/mp_rank_00_model_states.pt",
                             "ds/zero_pp_rank_0_mp_rank_00_optim_states.pt", "hf/adapter_model.safetensors",
                             "run_state.json"]
    body = bytes(range(256)) * 40 + bytes([4])
    assert files[MODEL_STATES] == {"size": 10241, "sha256": hashlib.sha256(body).hexdigest()}
    assert files["hf/adapter_model.safetensors"] == {"size": 200, "sha256": hashlib.sha256(b"lora" * 50).hexdigest()}
    assert ckpt.damage(path) is None


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[1000] ^= 0x01  # same size: only the digest sees it
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("harm, problem", [
    (_truncate, "ds/mp_rank_00_model_states.pt has 5120 bytes, the manifest says 10241"),
    (Path.unlink, "ds/mp_rank_00_model_states.pt missing"),
    (_flip_a_byte, "ds/mp_rank_00_model_states.pt's sha256 differs from the manifest's"),
], ids=["truncated", "deleted", "flipped-byte"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, harm, problem):
    """The issue's case: checkpoint.every=2, keep=2, ckpt-000008's model states cut short by a
    full disk. Would catch a resume that trusts `latest` unverified (DeepSpeed's raw traceback),
    one that skips the digest (a flipped byte has the right size), or a fallback that is silent
    or names no file."""
    for step in (2, 4, 6, 8):
        _write_full(tmp_path, step, keep=2)
    harm(tmp_path / "ckpt-000008" / MODEL_STATES)
    with caplog.at_level(logging.WARNING, logger="osp"):
        chosen = ckpt.resume_checkpoint(tmp_path)
    assert chosen == tmp_path / "ckpt-000006"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"--resume: ckpt-000008 is damaged ({problem}); resuming from ckpt-000006, "
                        "the newest complete checkpoint"]


def test_an_intact_latest_checkpoint_is_chosen_without_a_word(tmp_path, caplog):
    for step in (2, 4):
        _write_full(tmp_path, step)
    with caplog.at_level(logging.INFO, logger="osp"):
        assert ckpt.resume_checkpoint(tmp_path) == tmp_path / "ckpt-000004"
    assert not caplog.records
    assert ckpt.resume_checkpoint(tmp_path / "nothing-yet") is None  # no `latest`: a run not started


def test_fallback_skips_every_damaged_checkpoint_and_never_goes_past_latest(tmp_path, caplog):
    """A complete folder newer than `latest` (a crash before the pointer moved) is not taken:
    `latest` is the newest the run vouched for. Each damaged one is named, in one line."""
    for step in (2, 4, 6):
        _write_full(tmp_path, step)
    ckpt.atomic_write_text(tmp_path / "latest", "ckpt-000004\n")
    (tmp_path / "ckpt-000004" / "hf" / "adapter_model.safetensors").unlink()
    (tmp_path / "ckpt-000002" / "run_state.json").write_text("{}")
    state_bytes = len(RunState(step=2).to_json().encode())
    with pytest.raises(ConfigError) as err:
        ckpt.resume_checkpoint(tmp_path)
    assert str(err.value) == (
        f"--resume: no complete checkpoint in {tmp_path}: ckpt-000004 is damaged (hf/adapter_model.safetensors "
        f"missing); ckpt-000002 is damaged (run_state.json has 2 bytes, the manifest says {state_bytes}); "
        "start a new run (checkpoint.dir=<new folder>)")


def test_latest_naming_a_missing_folder_falls_back(tmp_path, caplog):
    _write_full(tmp_path, 2)
    ckpt.atomic_write_text(tmp_path / "latest", "ckpt-000004\n")
    with caplog.at_level(logging.WARNING, logger="osp"):
        assert ckpt.resume_checkpoint(tmp_path) == tmp_path / "ckpt-000002"
    assert "ckpt-000004 is damaged (missing)" in caplog.records[-1].getMessage()


def _without_manifest(path: Path) -> Path:
    (path / "manifest.json").unlink()
    return path


def test_a_checkpoint_written_before_manifests_is_accepted_with_a_note(tmp_path, caplog):
    """Runs started before manifests existed stay resumable (their folders were renamed into
    place complete); the note says the files were not verified."""
    for step in (2, 4):
        _without_manifest(_write_full(tmp_path, step))
    with caplog.at_level(logging.WARNING, logger="osp"):
        assert ckpt.resume_checkpoint(tmp_path) == tmp_path / "ckpt-000004"
    assert [r.getMessage() for r in caplog.records] == [
        "ckpt-000004 has no manifest.json (written before checkpoints had one): resuming from it unverified"]


def test_a_lost_manifest_after_one_that_had_it_is_damage(tmp_path, caplog):
    """Would catch a resume that takes any manifest-less folder on trust: ckpt-000004 is newer
    than a checkpoint with a manifest, so it was written with one and lost it."""
    _write_full(tmp_path, 2)
    _without_manifest(_write_full(tmp_path, 4))
    with caplog.at_level(logging.WARNING, logger="osp"):
        assert ckpt.resume_checkpoint(tmp_path) == tmp_path / "ckpt-000002"
    assert "ckpt-000004 is damaged (no manifest.json)" in caplog.records[-1].getMessage()


# ---------------------------------------------------------------------------------------
# The base model a checkpoint was trained on.


def test_a_resume_on_another_base_is_refused_naming_both(tmp_path):
    path = _write_full(tmp_path, 2)
    same = {"model": "/moved/elsewhere", "id": "local-v1:sha256:00ff"}
    ckpt.check_base_model(path, same)  # the same fingerprint in another folder: accepted
    other = {"model": "/models/other", "id": "local-v1:sha256:abcdef0123456789"}
    with pytest.raises(ConfigError) as err:
        ckpt.check_base_model(path, other)
    assert str(err.value) == (
        "model.path: ckpt-000002 was trained on /models/base (fingerprint 00ff), not on /models/other "
        "(fingerprint abcdef012345); set model.path=/models/base or start a new run (checkpoint.dir=<new folder>)")
    (path / "base_model.json").unlink()  # written before identities were recorded: not checked
    ckpt.check_base_model(path, other)
