"""Per-step metrics to stdout, a JSONL file, TensorBoard and Ray's metrics (dashboard)."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("osp")


class RayGauges:
    """Every metric as a Ray gauge `osp_<name>` (shown by the Ray dashboard's metrics view)."""

    def __init__(self, run_name: str):
        from ray.util.metrics import Gauge

        self._gauge_cls = Gauge
        self.gauges: dict[str, Any] = {}
        self.tags = {"run": run_name}

    def record(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            name = "osp_" + "".join(c if c.isalnum() else "_" for c in key)
            if name not in self.gauges:
                self.gauges[name] = self._gauge_cls(name, description=f"osp {key}", tag_keys=("run",))
            self.gauges[name].set(float(value), tags=self.tags)


def truncate_after(path: Path, step: int) -> int:
    """Drop the lines of steps after `step` (a resumed run redoes them); atomic. Returns how
    many lines were dropped."""
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(path)
    return len(lines) - len(kept)


class MetricsLogger:
    def __init__(self, run_dir: Path, run_name: str, tensorboard: bool = True, ray_metrics: bool = True,
                 resume_step: int | None = None):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "metrics.jsonl"
        # Lines of steps after the run's checkpoint (or of an attempt that never reached one)
        # are redone now: keep exactly one line per step.
        if resume_step is not None:
            dropped = truncate_after(self.path, resume_step)
            if dropped:
                log.info("metrics.jsonl: dropped %d lines after step %d (redone after the resume)", dropped, resume_step)
        self.file = open(self.path, "a", buffering=1)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except Exception as err:  # TensorBoard is optional; say so once
                log.warning("TensorBoard disabled: %s", err)
        self.ray = None
        if ray_metrics:
            try:
                self.ray = RayGauges(run_name)
            except Exception as err:
                log.warning("Ray metrics disabled: %s", err)
        self.start = time.time()

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": step, "time": round(time.time() - self.start, 3), **metrics}
        self.file.write(json.dumps(record) + "\n")
        if self.tb:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)
        if self.ray:
            self.ray.record({**metrics, "step": step})

    def close(self) -> None:
        self.file.close()
        if self.tb:
            self.tb.close()


def format_line(step: int, max_steps: int, m: dict[str, Any]) -> str:
    def f(key, fmt="{:.4f}"):
        return fmt.format(m[key]) if key in m else "-"

    return (
        f"step {step}/{max_steps} loss {f('loss')} p {f('strength/mean', '{:.3f}')} "
        f"acc {f('rewards/accuracy', '{:.2f}')} margin {f('rewards/margin')} "
        f"pairs/s {f('pairs_per_s', '{:.2f}')} tok/s {f('rollout_tokens_per_s', '{:.0f}')} "
        f"push {f('push_s', '{:.3f}')}s stale {f('staleness/mean', '{:.2f}')} kl {f('kl/policy_sft', '{:.3f}')}"
        + (f" busy {f('learner/busy', '{:.0%}')}" if "learner/busy" in m else "")
        + (f" pass {f('samples/verifier_pass', '{:.2f}')} (last 5 steps {f('samples/verifier_pass_last5', '{:.2f}')})"
           if "samples/verifier_pass" in m else "")
        + (f" trunc {f('samples/truncated', '{:.2f}')}" if "samples/truncated" in m else "")
    )
