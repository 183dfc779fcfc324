"""The tiny random model the tests run on: a 2-layer Llama (head_dim 32, as vLLM-CPU needs)
with a byte-level BPE tokenizer trained here on a few sentences, built in seconds."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from core.models import CHATML_TEMPLATE

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
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
