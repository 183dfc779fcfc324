"""Checkpoint layout and the run state, written atomically.

    <checkpoint.dir>/
      config.yaml           the run's resolved config
      metrics.jsonl         one line per learner step
      ckpt-000010/          one checkpoint (a finished rename: never half-written)
        hf/                 merged policy weights in HF format (transformers and vLLM load it)
        ds/                 DeepSpeed state of every rank (weights, optimizer) for --resume
        run_state.json      step, policy version, data position, prompt accounting, RNG
      latest                name of the newest complete checkpoint (replaced atomically)

A checkpoint is written to a hidden temp folder and renamed into place; `latest` is written
to a temp file and os.replace()d. A crash at any point leaves the previous checkpoint as
`latest`, never a partial one.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class RunState:
    step: int = 0  # learner steps done
    version: int = 0  # policy version the rollout engines should have (step of the last push)
    next_prompt: int = 0  # data position: prompts [0, next_prompt) were handed out
    requeued: list[int] = field(default_factory=list)  # handed out but to be sampled again
    prompts_done: int = 0  # prompts whose pairs were all trained (or yielded none)
    pairs_trained: int = 0
    pairs_regenerated: int = 0  # too-stale pairs whose prompts were sampled again
    tokens_generated: int = 0
    seed: int = 0
    rng: list | None = None  # the driver's random.Random state

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "RunState":
        data = json.loads(text)
        for gone in _RETIRED_FIELDS:  # written by older versions; derived from `step` now
            data.pop(gone, None)
        return cls(**data)


# Fields older checkpoints carry that the run state no longer keeps (a method's iteration is
# step // its iteration length).
_RETIRED_FIELDS = ("dno_iteration",)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:06d}"


def temp_dir(run_dir: Path, step: int) -> Path:
    path = run_dir / f".tmp-{checkpoint_name(step)}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def finalize(run_dir: Path, tmp: Path, state: RunState, keep: int) -> Path:
    """Write the run state, rename the folder into place, then point `latest` at it."""
    atomic_write_text(tmp / "run_state.json", state.to_json())
    final = run_dir / checkpoint_name(state.step)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    atomic_write_text(run_dir / "latest", final.name + "\n")
    prune(run_dir, keep)
    return final


def _step_of(path: Path) -> int | None:
    suffix = path.name[len("ckpt-"):]
    return int(suffix) if suffix.isascii() and suffix.isdigit() else None


def prune(run_dir: Path, keep: int) -> None:
    """Keep the `keep` newest checkpoints (by step number), and always the one `latest` names:
    a complete folder newer than `latest` (a crash between its rename and the pointer update)
    must never push the pointed-to checkpoint out."""
    if keep <= 0:
        return
    pointer = run_dir / "latest"
    current = pointer.read_text().strip() if pointer.exists() else None
    done = sorted((p for p in run_dir.glob("ckpt-*") if p.is_dir() and _step_of(p) is not None), key=_step_of)
    for old in done[:-keep]:
        if old.name != current:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / "latest"
    if not pointer.exists():
        return None
    path = run_dir / pointer.read_text().strip()
    if not (path / "run_state.json").exists():
        raise FileNotFoundError(f"{pointer} names {path.name}, which is incomplete or missing")
    return path


def load_state(ckpt: Path) -> RunState:
    return RunState.from_json((ckpt / "run_state.json").read_text())
