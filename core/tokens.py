"""What every side does with a tokenizer the same way: encode one user turn as a chat (the
rollout's prompts, the judges' questions), and pick the padding id."""

from __future__ import annotations


def encode_chat(tokenizer, user_text: str) -> list[int]:
    """Token ids of a one-turn chat ending with the assistant's generation prompt; the plain
    text (with the tokenizer's special tokens) for a tokenizer without a chat template."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": user_text}], add_generation_prompt=True, tokenize=True
        )
        if not isinstance(ids, list):  # BatchEncoding in transformers 5
            ids = ids["input_ids"]
        return list(ids)
    return list(tokenizer(user_text, add_special_tokens=True)["input_ids"])


def encode_messages(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a chat (a list of {role, content}) ending with the assistant's generation
    prompt; a tokenizer without a chat template gets the turns' contents, one per line."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": m["role"], "content": m["content"]} for m in messages], add_generation_prompt=True,
            tokenize=True)
        return list(ids if isinstance(ids, list) else ids["input_ids"])
    return list(tokenizer("\n".join(m["content"] for m in messages), add_special_tokens=True)["input_ids"])


def pad_token_id(tokenizer) -> int:
    """The tokenizer's pad id, else its EOS id (many causal LMs define no pad token; padding is
    masked out everywhere it is used, so any id will do)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
