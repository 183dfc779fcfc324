"""Experiment trackers: each step's metrics (and the run's config) to TensorBoard, Weights &
Biases or MLflow (`metrics.trackers`), beside metrics.jsonl, which is always written.

- `tensorboard`: event files in <run>/tensorboard.
- `wandb`: a W&B run named after the run folder, its files under <run>/wandb; the mode is W&B's
  own (`WANDB_MODE=offline` writes locally, `wandb sync` uploads later). Needs `pip install
  -e .[wandb]`.
- `mlflow`: an MLflow run named after the run folder; the tracking URI is MLflow's own
  (`MLFLOW_TRACKING_URI`: a server, `sqlite:///…`), else a SQLite store at <run>/mlflow.db
  (MLflow 3's local default: its folder store is frozen). The config is logged as params
  (dotted keys). Needs `pip install -e .[mlflow]`.

A tracker that fails to start, or fails while logging, warns once and is dropped: a tracker
never stops training.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("osp")

TRACKERS = ("tensorboard", "wandb", "mlflow")


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class TensorBoard:
    def __init__(self, run_dir: Path, run_name: str, config: dict[str, Any]):
        from torch.utils.tensorboard import SummaryWriter  # the tracker's own library: loaded only when chosen

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class Wandb:
    def __init__(self, run_dir: Path, run_name: str, config: dict[str, Any]):
        import wandb  # optional extra: loaded only when chosen

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "osp"), name=run_name, dir=str(run_dir),
                              config=config, reinit="finish_previous")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class MLflow:
    def __init__(self, run_dir: Path, run_name: str, config: dict[str, Any]):
        import mlflow  # optional extra: loaded only when chosen

        self.mlflow = mlflow
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "osp")
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        params = [mlflow.entities.Param(k, str(v)[:6000]) for k, v in _flat(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=params[start:start + 100])

    def log(self, step: int, metrics: dict[str, float]) -> None:
        timestamp = int(1000 * time.time())
        self.client.log_batch(self.run_id, metrics=[self.mlflow.entities.Metric(k, v, timestamp, step)
                                                    for k, v in metrics.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


KINDS = {"tensorboard": TensorBoard, "wandb": Wandb, "mlflow": MLflow}


class Trackers:
    """The chosen trackers, each dropped (with one warning) the first time it fails."""

    def __init__(self, names: list[str], run_dir: Path, run_name: str, config: dict[str, Any]):
        self.active: dict[str, Any] = {}
        for name in names:
            try:
                self.active[name] = KINDS[name](run_dir, run_name, config)
            except Exception as err:  # a tracker is optional: say so once, train on
                log.warning("tracker %s disabled: it failed to start: %s", name, str(err).splitlines()[0] if str(err)
                            else type(err).__name__)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        for name, tracker in list(self.active.items()):
            try:
                tracker.log(step, numbers)
            except Exception as err:
                log.warning("tracker %s disabled: it failed at step %d: %s", name, step, str(err).splitlines()[0])
                self.active.pop(name)

    def close(self) -> None:
        for name, tracker in self.active.items():
            try:
                tracker.close()
            except Exception as err:
                log.warning("tracker %s did not close cleanly: %s", name, str(err).splitlines()[0])
