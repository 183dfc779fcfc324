"""A model's identity: what a checkpoint records of the base it was trained on, so a resume (or
an evaluation of an adapter) on another base is refused instead of silently wrong.

A LoRA run's checkpoint holds the adapter only; its base weights are whatever model.path names
when it is loaded. `base_identity(folder)` describes that base as a dict:

    {"model": "<the folder, as given>", "id": "<what is compared>"}

Two bases are the same when their "id"s are equal; "model" is for messages only (a folder may
move). For a local folder the id is a fingerprint, "local-v1:sha256:<hex>": sha256 over

- config.json, parsed, without the keys that name the writer rather than the model
  (`transformers_version`, `_name_or_path`), re-serialised with sorted keys;
- for each weight file (`*.safetensors`, `pytorch_model*.bin`, sorted by name): its name, its
  size, its safetensors header (tensor names, dtypes, shapes, offsets) and SAMPLES slices of
  SAMPLE_BYTES bytes at evenly spaced offsets.

It reads about SAMPLES × SAMPLE_BYTES (1 MiB) per file: milliseconds for a 135M model, well
under a second for an 8B one. A different architecture, dtype, size or sharding changes the
header; a different fine-tune of the same architecture changes every weight, so the samples.
A change confined to bytes no sample reads (one edited tensor) is not seen: the fingerprint
guards against pointing model.path at another model, not against tampering.

A model named by hub revision (`org/name@sha`, as the driver pins every hub id:
core/models.pin_model) carries `{"model": "org/name", "id": "hub:org/name@<sha>"}`: the commit is
its identity (the driver holds only its config, not its weights, to fingerprint). Ids of different kinds never match, so a
checkpoint of a local folder resumed on a hub id (or the reverse) is refused; pass the same
kind of name.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from core.models import parse_hub_id

LOCAL = "local-v1"
SAMPLES = 16
SAMPLE_BYTES = 64 * 1024
IGNORED_CONFIG_KEYS = ("transformers_version", "_name_or_path")


def weight_files(folder: Path) -> list[Path]:
    return sorted([*folder.glob("*.safetensors"), *folder.glob("pytorch_model*.bin")], key=lambda p: p.name)


def _safetensors_header(f, size: int) -> bytes:
    """The header (JSON) of a safetensors file: 8 bytes of its length, then the JSON."""
    if size < 8:
        return b""
    (length,) = struct.unpack("<Q", f.read(8))
    return f.read(min(length, size - 8))


def _file_digest(digest, path: Path) -> None:
    size = path.stat().st_size
    digest.update(f"{path.name}\0{size}\0".encode())
    with open(path, "rb") as f:
        if path.suffix == ".safetensors":
            digest.update(_safetensors_header(f, size))
        for i in range(SAMPLES):
            f.seek(max(0, (size - SAMPLE_BYTES) * i // max(1, SAMPLES - 1)))
            digest.update(f.read(SAMPLE_BYTES))


def local_fingerprint(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    for key in IGNORED_CONFIG_KEYS:
        config.pop(key, None)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for path in weight_files(folder):
        _file_digest(digest, path)
    return f"{LOCAL}:sha256:{digest.hexdigest()}"


def base_identity(model_folder: str | Path, model_ref: str | None = None) -> dict[str, str]:
    """The identity of the model in `model_folder` (a resolved local HF folder), or of the pinned
    hub id `model_ref` names (`org/name@<commit>`)."""
    hub = parse_hub_id(model_ref) if model_ref else None
    if hub is not None and hub.revision:
        return {"model": hub.repo_id, "id": f"hub:{hub}"}
    folder = Path(model_folder)
    return {"model": str(folder), "id": local_fingerprint(folder)}


def same_base(a: dict[str, str], b: dict[str, str]) -> bool:
    return a["id"] == b["id"]


def describe(identity: dict[str, str]) -> str:
    """One short phrase for messages: the model, and the start of a local fingerprint."""
    ident = identity["id"]
    if ident.startswith(f"{LOCAL}:"):
        return f"{identity['model']} (fingerprint {ident.rpartition(':')[2][:12]})"
    return f"{identity['model']} ({ident})"
