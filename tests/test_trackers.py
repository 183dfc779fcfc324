"""Experiment trackers receive the run's per-step metrics and its config, read back from each
tracker's own files or store; a tracker that fails never stops training."""

from __future__ import annotations

import glob
import logging
import struct

import pytest

from cluster.driver.metrics import MetricsLogger

CONFIG = {"seed": 3, "method": "osp", "loss": {"beta": 0.1}}
STEPS = {1: {"loss": 0.69, "rewards/margin": 0.01}, 2: {"loss": 0.61, "rewards/margin": 0.05},
         3: {"loss": 0.55, "rewards/margin": 0.12, "note": "not a number"}}


def _log_run(run_dir, trackers):
    logger = MetricsLogger(run_dir, run_dir.name, trackers, ray_metrics=False, config=CONFIG)
    for step, metrics in STEPS.items():
        logger.log(step, metrics)
    logger.close()
    return logger


def _wandb_records(path: str):
    """The records of an offline W&B run file: a LevelDB-style log of 32 KiB blocks, each record
    7 bytes of header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) after a 7-byte
    file header, each payload a wandb_internal Record."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, out, part = open(path, "rb").read(), 7, 32 * 1024, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        payload, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            out.append(payload)
        elif kind in (2, 3):
            part = (b"" if kind == 2 else part) + payload
        elif kind == 4:
            out.append(part + payload)
    records = []
    for raw in out:
        record = pb.Record()
        record.ParseFromString(raw)
        records.append(record)
    return records


def test_offline_wandb_run_holds_the_per_step_metrics_and_the_config(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    _log_run(tmp_path / "wb-run", ["wandb"])
    [path] = glob.glob(str(tmp_path / "wb-run" / "wandb" / "offline-run-*" / "run-*.wandb"))
    records = _wandb_records(path)
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    assert [(h["_step"], h["loss"], h["rewards/margin"]) for h in history] == [
        (1, 0.69, 0.01), (2, 0.61, 0.05), (3, 0.55, 0.12)]
    assert all("note" not in h for h in history)  # numbers only
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in run.config.update}
    assert config["seed"] == 3 and config["method"] == "osp" and config["loss"] == {"beta": 0.1}
    assert run.display_name == "wb-run"


def test_mlflow_store_holds_the_run_its_params_and_per_step_metrics(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _log_run(tmp_path / "ml-run", ["mlflow"])
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'ml-run' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("osp").experiment_id])
    assert run.info.run_name == "ml-run" and run.info.status == "FINISHED"
    assert run.data.params == {"seed": "3", "method": "osp", "loss.beta": "0.1"}
    history = {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
               for key in ("loss", "rewards/margin")}
    assert history == {"loss": [(1, 0.69), (2, 0.61), (3, 0.55)], "rewards/margin": [(1, 0.01), (2, 0.05), (3, 0.12)]}


def test_a_tracker_that_fails_warns_once_and_the_metrics_file_is_still_written(tmp_path, monkeypatch, caplog):
    """An MLflow server that is not there: the tracker is dropped with one warning, the others
    and metrics.jsonl go on. Would catch a tracker error that stops training."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9/")  # nothing listens on port 9
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with caplog.at_level(logging.WARNING, logger="osp"):
        logger = _log_run(tmp_path / "failing", ["mlflow", "tensorboard"])
    warnings = [r.message for r in caplog.records if "tracker mlflow disabled" in r.message]
    assert len(warnings) == 1 and list(logger.trackers.active) == ["tensorboard"]
    assert len((tmp_path / "failing" / "metrics.jsonl").read_text().splitlines()) == 3
    assert list((tmp_path / "failing" / "tensorboard").glob("events.out.tfevents.*"))


def test_unknown_tracker_is_refused_by_the_config():
    from cluster.config import load_config
    from core.config import ConfigError

    with pytest.raises(ConfigError, match=r"^metrics.trackers: unknown \['neptune'\]"):
        load_config(None, ["metrics.trackers=[tensorboard, neptune]"])
