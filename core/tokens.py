"""The padding id every side pads with. (Chat encoding: core/chat.py.)"""

from __future__ import annotations


def pad_token_id(tokenizer) -> int:
    """The tokenizer's pad id, else its EOS id (many causal LMs define no pad token; padding is
    masked out everywhere it is used, so any id will do)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
