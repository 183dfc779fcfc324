"""Local models: the tiny random test model, model-path resolution and the embedded default."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_model import build_tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.models import EMBEDDED_GGUF, _atomic_save, cache_dir, embedded_default_model, find_embedded_gguf, resolve_model
from judge.strength import JudgeTemplate, answer_token_ids

EMBEDDED_FOLDER = "smollm2-135m-instruct-q4_1"


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


# -- the tiny model ----------------------------------------------------------------------------


def test_tiny_model_folder_is_a_hf_model(tiny_model_dir):
    names = set(os.listdir(tiny_model_dir))
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= names
    config = json.loads(Path(tiny_model_dir, "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["head_dim"] >= 32  # vLLM-CPU needs head_dim ≥ 32
    assert config["hidden_size"] // config["num_attention_heads"] == config["head_dim"] == 32
    assert config["tie_word_embeddings"] is True
    assert config["num_hidden_layers"] == 2


def test_tiny_model_loads_with_tied_embeddings(tiny_model, tiny_tokenizer):
    model = tiny_model
    assert model.config.head_dim >= 32
    assert model.config.vocab_size == len(tiny_tokenizer)
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert head.data_ptr() == emb.data_ptr()  # one tensor, not a copy
    assert model.config.eos_token_id == tiny_tokenizer.eos_token_id
    assert model.config.pad_token_id == tiny_tokenizer.pad_token_id
    assert model.generation_config.eos_token_id == tiny_tokenizer.eos_token_id


def test_tiny_model_forward(tiny_model, tiny_tokenizer):
    ids = tiny_tokenizer("Paris is the capital of France.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = tiny_model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tiny_tokenizer))
    assert torch.isfinite(logits).all()
    # The larger-than-default init makes the next-token distribution visibly non-uniform.
    assert logits[0, -1].std() > 0.1


def test_tiny_tokenizer_chat_template_and_roundtrip(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.convert_ids_to_tokens(tokenizer.eos_token_id) == "<|im_end|>"
    # Byte-level: any text round-trips, even text the BPE never saw.
    odd = "Zürich — 東京 🙂 \t tabs"
    assert tokenizer.decode(tokenizer(odd, add_special_tokens=False)["input_ids"]) == odd
    assert answer_token_ids(tokenizer, ("A", "B")) == tuple(tokenizer.convert_tokens_to_ids(["A", "B"]))


def test_build_tiny_model_is_seeded(tmp_path, tiny_model_dir):
    same = load_file(str(build_tiny_model(tmp_path / "same", seed=0) / "model.safetensors"))
    other = load_file(str(build_tiny_model(tmp_path / "other", seed=1) / "model.safetensors"))
    ref = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    assert same.keys() == ref.keys()
    assert all(torch.equal(same[k], ref[k]) for k in ref)
    name = "model.embed_tokens.weight"
    assert not torch.equal(other[name], ref[name])
    assert ref[name].std().item() == pytest.approx(0.08, rel=0.05)


def test_build_tiny_model_layers(tmp_path):
    path = build_tiny_model(tmp_path / "one", num_layers=1)
    assert path == tmp_path / "one"
    assert json.loads((path / "config.json").read_text())["num_hidden_layers"] == 1


# -- resolve_model -------------------------------------------------------------------------


def test_resolve_model_existing_folder(tiny_model_dir):
    assert resolve_model(tiny_model_dir) == Path(tiny_model_dir)
    assert isinstance(resolve_model(tiny_model_dir), Path)


def test_resolve_model_missing(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match=r"model path '.*no-such-model' does not exist or is not a folder"):
        resolve_model(str(missing))


def test_resolve_model_file_and_folder_without_config(tmp_path):
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"\0")
    with pytest.raises(FileNotFoundError, match="does not exist or is not a folder"):
        resolve_model(str(a_file))
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        resolve_model(str(tmp_path))


def test_resolve_model_expands_user(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("HOME", str(Path(tiny_model_dir).parent))
    assert resolve_model("~/" + Path(tiny_model_dir).name) == Path(tiny_model_dir)


# -- cache location and the embedded default ----------------------------------------------------


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("OSP_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == Path(os.path.expanduser("~/.cache/osp"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "osp"
    monkeypatch.setenv("OSP_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_embedded_default_uses_an_existing_cached_copy(monkeypatch, tmp_path):
    cached = tmp_path / "models" / EMBEDDED_FOLDER
    cached.mkdir(parents=True)
    (cached / "config.json").write_text("{}")
    monkeypatch.setenv("OSP_CACHE", str(tmp_path))
    assert embedded_default_model() == cached  # returned at once: no conversion
    for spelling in (None, "", "embedded"):
        assert resolve_model(spelling) == cached


def test_atomic_save_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "models" / "m"

    def fails(folder: Path) -> None:
        (folder / "half.bin").write_bytes(b"x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        _atomic_save(target, fails)
    assert not target.exists()
    assert os.listdir(tmp_path / "models") == []


def test_atomic_save_writes_and_keeps_a_complete_rival(tmp_path):
    target = tmp_path / "m"
    assert _atomic_save(target, lambda d: (d / "config.json").write_text("mine")) == target
    assert (target / "config.json").read_text() == "mine"
    # Another process finished first: its complete copy is kept, ours discarded.
    assert _atomic_save(target, lambda d: (d / "config.json").write_text("late")) == target
    assert (target / "config.json").read_text() == "mine"
    assert os.listdir(tmp_path) == ["m"]


def test_find_embedded_gguf():
    path = find_embedded_gguf()
    assert path.name == EMBEDDED_GGUF
    assert path.is_file()


def test_embedded_default_model_real_smollm2(monkeypatch):
    """The converted SmolLM2 (cached after the first conversion, ~25 s; loading it ~3 s)."""
    monkeypatch.delenv("OSP_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    path = embedded_default_model()
    assert path == Path(os.path.expanduser("~/.cache/osp/models")) / EMBEDDED_FOLDER
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    # Dequantised weights: no leftover GGUF quantization marker (vLLM refuses the folder).
    assert "quantization_config" not in (path / "config.json").read_text()
    assert resolve_model("embedded") == path

    tokenizer = AutoTokenizer.from_pretrained(path)
    for letter in ("A", "B"):
        assert len(tokenizer(letter, add_special_tokens=False)["input_ids"]) == 1
    a, b = answer_token_ids(tokenizer, ("A", "B"))
    assert a != b and tokenizer.decode([a]) == "A" and tokenizer.decode([b]) == "B"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    assert "<|im_start|>user\nHi<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")
    ids = JudgeTemplate().render(tokenizer, "Say hi.", "Hi!", "Bye.")
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n")

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert model.config.model_type == "llama"
    assert model.config.tie_word_embeddings
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    head_dim = getattr(model.config, "head_dim", None) or model.config.hidden_size // model.config.num_attention_heads
    assert head_dim >= 32
    assert model.config.vocab_size >= max(a, b, *ids) + 1
