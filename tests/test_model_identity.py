"""The base model's identity a checkpoint records (cluster/data/model_identity.py): the same
model wherever its folder lies and whichever transformers wrote its config; another model,
another config or other weights of the same shapes are another identity."""

from __future__ import annotations

import json
import shutil

from cluster.data.model_identity import SAMPLE_BYTES, base_identity, describe, same_base


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_a_copy_of_the_folder_elsewhere_is_the_same_base(tiny_model_dir, tmp_path):
    """Would catch an identity that hashes the path (a moved model refused) or the keys a
    transformers release writes into config.json (a re-converted model refused)."""
    here, there = base_identity(tiny_model_dir), base_identity(_copy(tiny_model_dir, tmp_path / "moved"))
    assert here["model"] == tiny_model_dir and there["model"] == str(tmp_path / "moved")
    assert here["id"].startswith("local-v1:sha256:") and len(here["id"]) == len("local-v1:sha256:") + 64
    assert same_base(here, there)
    config = json.loads((tmp_path / "moved" / "config.json").read_text())
    config["transformers_version"] = "9.9.9"
    (tmp_path / "moved" / "config.json").write_text(json.dumps(config, indent=4))
    assert same_base(here, base_identity(tmp_path / "moved"))


def test_another_model_config_or_weights_is_another_base(tiny_model_dir, tmp_path):
    """Would catch a fingerprint of names and shapes only: a model of the same architecture
    with other weights (another fine-tune of the same base) must differ."""
    from tiny_model import build_tiny_model

    base = base_identity(tiny_model_dir)
    assert not same_base(base, base_identity(build_tiny_model(tmp_path / "seed7", seed=7)))  # same shapes

    changed_config = _copy(tiny_model_dir, tmp_path / "config")
    config = json.loads((changed_config / "config.json").read_text())
    config["rms_norm_eps"] = config["rms_norm_eps"] * 10
    (changed_config / "config.json").write_text(json.dumps(config))
    assert not same_base(base, base_identity(changed_config))

    changed_weights = _copy(tiny_model_dir, tmp_path / "weights")
    weights = changed_weights / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-SAMPLE_BYTES // 2] ^= 0xFF  # inside the last sampled slice (the file's end)
    weights.write_bytes(bytes(data))
    assert not same_base(base, base_identity(changed_weights))


def test_describe_names_the_model_and_the_fingerprint_start():
    assert describe({"model": "/m", "id": "local-v1:sha256:0123456789abcdef"}) == "/m (fingerprint 0123456789ab)"
    assert describe({"model": "org/name", "id": "hub:org/name@5f2c"}) == "org/name (hub:org/name@5f2c)"
