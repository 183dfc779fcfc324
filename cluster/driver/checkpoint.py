"""Checkpoint layout, the run state, atomic writes, and the check of a checkpoint before a resume.

    <checkpoint.dir>/
      config.yaml           the run's resolved config
      metrics.jsonl         one line per learner step
      ckpt-000010/          one checkpoint (a finished rename: never half-written)
        hf/                 the policy in HF format. A full fine-tune: its weights (transformers
                            and vLLM load the folder). A LoRA run: the adapter as peft saves it
                            (adapter_model.safetensors, adapter_config.json; peft, transformers
                            with peft, and vLLM's LoRA load it) and the tokenizer; the merged
                            model in hf/merged/ with checkpoint.merged, and always in the final
                            checkpoint (not in hf/ itself: transformers would apply the adapter
                            found beside merged weights a second time)
        ds/                 DeepSpeed state of every rank for --resume: the parameters that train
                            (a LoRA run: the adapter, never the frozen base) and their optimizer states;
                            DeepSpeed also leaves `latest` (its tag, "ds") and zero_to_fp32.py beside it
        base_model.json     the base model's identity (cluster/data/model_identity.py): a resume,
                            or an adapter's evaluation, on another base is refused
        run_state.json      step, policy version, data position, prompt accounting, RNG
        manifest.json       every other file's path, size and sha256, written last
      latest                name of the newest complete checkpoint (replaced atomically)

A checkpoint is written to a hidden temp folder and renamed into place; `latest` is written
to a temp file and os.replace()d. A crash at any point leaves the previous checkpoint as
`latest`, never a partial one. What happens to a checkpoint after its rename (a full disk, an
interrupted copy, a flipped bit) the manifest shows: `--resume` verifies the checkpoint `latest`
names before anything loads it and falls back to the newest complete one (`resume_checkpoint`).
A checkpoint written before manifests existed is resumed from unverified, with a note
(`unverifiable`): it was renamed into place complete, and refusing it would strand those runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cluster.data.model_identity import base_identity, describe, same_base
from core.adapters import ADAPTER_CONFIG, is_adapter_folder
from core.config import ConfigError
from core.models import parse_hub_id, resolve_model

log = logging.getLogger("osp")

MANIFEST = "manifest.json"
BASE_MODEL = "base_model.json"


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


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def checkpoint_files(folder: Path) -> list[str]:
    """Every file under `folder` but the manifest, as sorted relative POSIX paths."""
    files = (p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return sorted(rel for rel in files if rel != MANIFEST)


def write_manifest(folder: Path) -> dict:
    """manifest.json: each file's size and sha256, as the checkpoint is finalized."""
    files = {rel: {"size": (folder / rel).stat().st_size, "sha256": sha256_of(folder / rel)}
             for rel in checkpoint_files(folder)}
    manifest = {"version": 1, "files": files}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def write_base_model(folder: Path, identity: dict) -> None:
    atomic_write_text(folder / BASE_MODEL, json.dumps(identity, indent=1))


def read_base_model(ckpt: Path) -> dict | None:
    """The base model's identity a checkpoint records; None for one written before they did."""
    path = ckpt / BASE_MODEL
    return json.loads(path.read_text()) if path.exists() else None


def check_base_model(ckpt: Path, identity: dict, key: str = "model.path",
                     other: str = "or start a new run (checkpoint.dir=<new folder>)") -> None:
    """Refuse (ConfigError, one line naming both) a base that is not the one `ckpt` was trained
    on. A checkpoint written before base identities were recorded is not checked."""
    recorded = read_base_model(ckpt)
    if recorded is not None and not same_base(recorded, identity):
        raise ConfigError(f"{key}: {ckpt.name} was trained on {describe(recorded)}, not on {describe(identity)}; "
                          f"set {key}={recorded['model']} {other}".rstrip())


def policy_folder(path: str | Path) -> Path:
    """The policy a command line names: a checkpoint folder (its hf/) or an HF folder itself,
    holding full weights (config.json) or a LoRA adapter (adapter_config.json); or a Hugging
    Face id `org/name[@rev]` (core/models.resolve_model: downloaded unless HF_HUB_OFFLINE=1)."""
    if parse_hub_id(str(path)) is not None:
        return resolve_model(str(path))
    folder = Path(path)
    if (folder / "hf").is_dir():
        folder = folder / "hf"
    if not ((folder / "config.json").is_file() or is_adapter_folder(folder)):
        raise FileNotFoundError(f"{folder} is not an HF checkpoint folder (no config.json, no {ADAPTER_CONFIG})")
    return folder


def check_adapter_base(folder: Path, model_path: str | Path, key: str, model_ref: str | None = None) -> None:
    """An adapter applies to the base it was trained on: refuse (ConfigError) to load the adapter
    in `folder` onto the model in `model_path` (named by the option `key`; `model_ref`: its pinned
    hub id, if it is one) when the checkpoint records another base. Full weights need no base."""
    if is_adapter_folder(folder):
        ckpt = folder.parent if folder.name == "hf" else folder
        check_base_model(ckpt, base_identity(model_path, model_ref), key, "")


def finalize(run_dir: Path, tmp: Path, state: RunState, keep: int) -> Path:
    """Write the run state and the manifest, rename the folder into place, then point `latest` at it."""
    atomic_write_text(tmp / "run_state.json", state.to_json())
    write_manifest(tmp)
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


# -- verifying a checkpoint before a resume ------------------------------------------------
def damage(ckpt: Path) -> str | None:
    """What is wrong with `ckpt` against its manifest (the first file that differs), or None
    when every file it lists has its size and sha256. Files the manifest does not list are
    not read: nothing loads them. Without a manifest: see `unverifiable`."""
    if not ckpt.is_dir():
        return "missing"
    try:
        files = json.loads((ckpt / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return f"no {MANIFEST}"
    except (ValueError, KeyError, TypeError):
        return f"{MANIFEST} unreadable"
    for rel, want in files.items():
        path = ckpt / rel
        if not path.is_file():
            return f"{rel} missing"
        size = path.stat().st_size
        if size != want["size"]:
            return f"{rel} has {size} bytes, the manifest says {want['size']}"
        if sha256_of(path) != want["sha256"]:
            return f"{rel}'s sha256 differs from the manifest's"
    return None


def _checkpoints(run_dir: Path) -> list[Path]:
    """Complete-looking checkpoint folders (renamed into place), newest step first."""
    found = [p for p in run_dir.glob("ckpt-*") if p.is_dir() and _step_of(p) is not None]
    return sorted(found, key=_step_of, reverse=True)


def unverifiable(ckpt: Path, run_dir: Path) -> bool:
    """A checkpoint written before checkpoints had manifests: it has none, and neither has any
    older one in the run folder (a manifest-less checkpoint newer than one with a manifest has
    lost its manifest: damaged). Accepted unverified: it was renamed into place complete, and
    refusing it would strand every run started before manifests existed."""
    if (ckpt / MANIFEST).exists() or not (ckpt / "run_state.json").exists():
        return False
    older = [p for p in _checkpoints(run_dir) if _step_of(p) < _step_of(ckpt)]
    return not any((p / MANIFEST).exists() for p in older)


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a --resume continues from: the one `latest` names if its files match its
    manifest, else the newest older one that does, with one warning line naming what was
    damaged. None when the run has no checkpoint yet; ConfigError when none is complete."""
    pointer = run_dir / "latest"
    if not pointer.exists():
        return None
    named = run_dir / pointer.read_text().strip()
    candidates = [named] + [p for p in _checkpoints(run_dir) if _step_of(named) is None or _step_of(p) < _step_of(named)]
    damaged = []
    for ckpt in candidates:
        if unverifiable(ckpt, run_dir):
            log.warning("%s has no %s (written before checkpoints had one): resuming from it unverified", ckpt.name,
                        MANIFEST)
            problem = None
        else:
            problem = damage(ckpt)
        if problem is None:
            if damaged:
                log.warning("--resume: %s; resuming from %s, the newest complete checkpoint", "; ".join(damaged), ckpt.name)
            return ckpt
        damaged.append(f"{ckpt.name} is damaged ({problem})")
    raise ConfigError(f"--resume: no complete checkpoint in {run_dir}: {'; '.join(damaged)}; "
                      "start a new run (checkpoint.dir=<new folder>)")
