"""The one chat encoding every side uses: the rollout's prompts (tokenized on the driver), the
judges' questions (in the judge actor), a reward model's conversations.

`model.chat_template` picks how a chat becomes text:
- null: the tokenizer's own chat template. A tokenizer without one is refused (ChatTemplateError,
  naming the key): falling back to plain text silently would sample an instruct model on prompts
  in a format it was never trained on;
- "plain": no template: the turns' contents joined by newlines, encoded with the tokenizer's own
  special tokens (its BOS, where it adds one): for a base model;
- a path to a .jinja file: that template, for a tokenizer that lacks one or carries a wrong one.

A template writes every special token it wants (Llama 3's and Gemma's write their BOS), so its
text is tokenized with add_special_tokens=False, as transformers' apply_chat_template(tokenize=True)
does: the tokenizer's own BOS on top would be a second one (the double-BOS trap of
`tokenizer(apply_chat_template(..., tokenize=False))`).

The response is everything after the encoded prompt: the rollout engine samples from there, and
the judge's reference and the learner score exactly the sampled tokens (docs/chat_templates.md).
"""

from __future__ import annotations

from pathlib import Path

KEY = "model.chat_template"
PLAIN = "plain"
# A chat every usable template encodes: rendered once when an encoder is built, so a template
# that does not parse or cannot encode a user turn fails at start-up, not inside an actor.
_PROBE = [{"role": "user", "content": "Hi."}]


class ChatTemplateError(ValueError):
    """A chat template that cannot be used, or a chat it refuses (the template's own message)."""


def check_choice(choice: str | None) -> None:
    """Refuse a `model.chat_template` value that is none of null, plain or a .jinja path."""
    if choice is not None and choice != PLAIN and not str(choice).endswith(".jinja"):
        raise ChatTemplateError(f"{KEY}: must be null (the tokenizer's own template), {PLAIN!r} (plain text) "
                                f"or a path to a .jinja file, got {choice!r}")


def _template_of(tokenizer, choice: str | None) -> tuple[str | None, str]:
    """(the template text, or None for plain text; where it comes from, for messages)."""
    check_choice(choice)
    if choice == PLAIN:
        return None, "plain text"
    if choice is None:
        own = getattr(tokenizer, "chat_template", None)
        if not own:
            raise ChatTemplateError(
                f"{KEY}: the tokenizer of {getattr(tokenizer, 'name_or_path', '') or 'this model'} has no chat template; "
                f"set {KEY} to a .jinja file with the model's template, or to {PLAIN!r} to encode prompts as plain text "
                "(a base model)")
        if isinstance(own, dict):  # several named templates: the default one, as transformers picks it
            own = own.get("default") or next(iter(own.values()))
        return own, "the tokenizer's chat template"
    path = Path(choice).expanduser()
    try:
        return path.read_text(encoding="utf-8"), f"chat template {str(path)!r}"
    except OSError as err:
        raise ChatTemplateError(f"{KEY}: cannot read {str(path)!r}: {err.strerror or err}") from None


class ChatEncoder:
    """A tokenizer and the chat template every side encodes its chats with (`model.chat_template`)."""

    def __init__(self, tokenizer, choice: str | None = None):
        self.tokenizer, self.choice = tokenizer, choice
        self.template, self.source = _template_of(tokenizer, choice)
        if self.template is not None:
            try:
                self.prompt(_PROBE)
            except ChatTemplateError as err:
                raise ChatTemplateError(f"{KEY}: {err} (a one-turn user chat)") from None

    def with_tokenizer(self, tokenizer) -> ChatEncoder:
        """The same choice for another model's tokenizer (an lm: or reward: judge)."""
        return ChatEncoder(tokenizer, self.choice)

    def prompt(self, messages: list[dict]) -> list[int]:
        """Token ids of a chat ending with the assistant's generation prompt: the response starts
        right after the last id."""
        return self._encode(messages, generation_prompt=True)

    def user_prompt(self, text: str) -> list[int]:
        """`prompt` of a one-turn chat: the user's `text`."""
        return self.prompt([{"role": "user", "content": text}])

    def conversation(self, messages: list[dict]) -> list[int]:
        """Token ids of a whole chat, its last turn included, without a generation prompt (what a
        reward model scores)."""
        return self._encode(messages, generation_prompt=False)

    def plain(self, text: str) -> list[int]:
        """`text` as is, with the tokenizer's own special tokens (its BOS, where it adds one)."""
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def _encode(self, messages: list[dict], generation_prompt: bool) -> list[int]:
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        if self.template is None:
            return self.plain("\n".join(m["content"] for m in messages))
        import jinja2  # with transformers: the driver and every actor have it

        try:
            text = self.tokenizer.apply_chat_template(messages, chat_template=self.template, tokenize=False,
                                                      add_generation_prompt=generation_prompt)
        except jinja2.TemplateError as err:  # raise_exception(...) in the template, or a broken template
            raise ChatTemplateError(f"{self.source} refuses this chat: {err}") from None
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def as_chat(tokenizer_or_encoder) -> ChatEncoder:
    """A ChatEncoder as is; a bare tokenizer with its own template (null `model.chat_template`)."""
    if isinstance(tokenizer_or_encoder, ChatEncoder):
        return tokenizer_or_encoder
    return ChatEncoder(tokenizer_or_encoder)
