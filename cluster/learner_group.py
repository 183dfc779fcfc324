"""The learner ranks as one thing to the driver: one DeepSpeed group in one placement group,
fed a step's pairs as Arrow shards, saved and loaded together. A rank that dies fails the run
with a message that says how to continue it (`--resume` from the last checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray

from cluster import checkpoint as ckpt
from cluster.pools import make_learner_group
from core.config import Config


class LearnerFailed(RuntimeError):
    """A learner rank died or raised: the run stops, resumable from the last checkpoint."""


class LearnerGroup:
    def __init__(self, cfg: Config, model_path: str, run_dir: Path, prefix: str):
        self.run_dir = run_dir
        self.ranks, self.placement_group = make_learner_group(cfg, model_path, prefix=prefix)

    def roles(self) -> list[tuple[str, Any]]:
        """(role, handle) of each rank, named as their actors are (cluster.pools)."""
        return [(f"learner-{i}", r) for i, r in enumerate(self.ranks)]

    def start_step(self, batch: pa.Table, probe: pa.Table | None) -> list[ray.ObjectRef]:
        """One learner step on `batch`, split into equal contiguous shards (pairs_per_step is a
        multiple of the rank count). Each shard is put once here and passed wrapped, so each
        rank fetches its own (and times it). `probe`: a fixed batch whose loss is logged.
        Every rank is told how many of the step's pairs have a verdict (p ≠ 0.5): the loss is
        their mean, so ties, on whichever rank, neither train nor dilute the step."""
        shards = [[ray.put(shard)] for shard in _split(batch, len(self.ranks))]
        probes = [[ray.put(p)] for p in _split(probe, len(self.ranks))] if probe is not None else [None] * len(self.ranks)
        decided = int(pc.sum(pc.not_equal(batch["strength"], 0.5)).as_py() or 0)
        return [rank.train_step.remote(shard, p, decided) for rank, shard, p in zip(self.ranks, shards, probes)]

    def results(self, refs: list[ray.ObjectRef], step: int) -> list[dict[str, float]]:
        try:
            return ray.get(refs)
        except ray.exceptions.RayError as err:
            raise self.failed(err, step) from err

    def alive(self, timeout: float = 60) -> bool:
        try:
            ray.get([r.info.remote() for r in self.ranks], timeout=timeout)
            return True
        except Exception:
            return False

    def load(self, checkpoint: Path) -> None:
        ray.get([r.load_checkpoint.remote(str(checkpoint)) for r in self.ranks])

    def save(self, folder: Path, step: int) -> None:
        try:
            ray.get([r.save_checkpoint.remote(str(folder), {"step": step}) for r in self.ranks])
        except ray.exceptions.RayError as err:  # a rank (or its node) died while saving
            raise self.failed(err, step, "saving its checkpoint") from err

    def failed(self, err: Exception, step: int, doing: str = "") -> LearnerFailed:
        try:
            latest = ckpt.latest_checkpoint(self.run_dir)
        except FileNotFoundError:
            latest = None
        where = f"the last checkpoint is {latest}" if latest else "no checkpoint was written yet"
        during = f" ({doing})" if doing else ""
        return LearnerFailed(f"a learner rank failed at step {step}{during}: {str(err).splitlines()[0]}\n"
                             f"The run stops ({where}); continue it with --resume.")

    def shutdown(self) -> None:
        for rank in self.ranks:
            ray.kill(rank)
        ray.util.remove_placement_group(self.placement_group)


def _split(table: pa.Table, parts: int) -> list[pa.Table]:
    size = table.num_rows // parts
    return [table.slice(i * size, size) for i in range(parts)]
