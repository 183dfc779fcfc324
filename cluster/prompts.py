"""The prompt stream: read a JSONL prompt file, validate every row, encode with the chat template.

A row may carry verifiable instructions in IFEval's format (`instruction_id_list` and
`kwargs`): the verifier judge and the held-out accuracy read them. Bad rows (invalid UTF-8,
invalid JSON, a missing/empty prompt, an unknown instruction id or bad kwargs, too many
tokens) are reported with their line numbers. `on_bad_rows="error"` refuses the file;
`"skip"` drops them and says so — never silently.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from judge.verifier import Instructions, parse_instructions

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
SHIPPED_TRAIN = DATA_DIR / "prompts_train.jsonl"
SHIPPED_EVAL = DATA_DIR / "prompts_eval.jsonl"
# Shipped sets by name (`data.prompts`, `eval.prompts`, `--prompts`): everyday questions; the
# same questions with verifiable instructions of 8 kinds (scripts/make_instruction_prompts.py);
# and with instructions of every checkable IFEval kind, as IFEval draws them (scripts/make_broad_prompts.py).
SHIPPED = {
    "questions": SHIPPED_TRAIN,
    "questions-eval": SHIPPED_EVAL,
    "instructions": DATA_DIR / "instructions_train.jsonl",
    "instructions-eval": DATA_DIR / "instructions_eval.jsonl",
    "broad": DATA_DIR / "broad_train.jsonl",
    "broad-eval": DATA_DIR / "broad_eval.jsonl",
}


class PromptFileError(ValueError):
    """A prompt file with rows that cannot be used; the message lists them by line number."""


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    text: str
    tokens: tuple[int, ...]
    instructions: Instructions | None = None

    def request(self, index: int) -> dict:
        """What a rollout actor is sent for this prompt (`index`: its place in the prompt set)."""
        return {"prompt_id": self.prompt_id, "prompt_index": index, "prompt_text": self.text,
                "prompt_tokens": self.tokens}


def resolve_prompt_file(name: str | Path | None) -> Path:
    """A shipped set's name (see SHIPPED), a path, or None (the shipped training questions)."""
    if name is None:
        return SHIPPED_TRAIN
    return SHIPPED.get(str(name), Path(name))


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


def encode_chat(tokenizer, user_text: str) -> list[int]:
    """Token ids of a one-turn chat ending with the assistant's generation prompt."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": user_text}], add_generation_prompt=True, tokenize=True
        )
        if not isinstance(ids, list):  # BatchEncoding in transformers 5
            ids = ids["input_ids"]
        return list(ids)
    return list(tokenizer(user_text, add_special_tokens=True)["input_ids"])


def read_prompt_rows(path: Path) -> tuple[list[tuple[int, str, str, Instructions | None]], list[BadRow]]:
    """(line, id, text, instructions or None) for every usable row, and the bad rows with reasons."""
    rows, bad = [], []
    seen: dict[str, int] = {}
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue  # blank lines are layout, not rows
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                bad.append(BadRow(line_no, f"not valid UTF-8 ({err.reason} at byte {err.start})"))
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                bad.append(BadRow(line_no, f"not valid JSON ({err.msg})"))
                continue
            if not isinstance(obj, dict):
                bad.append(BadRow(line_no, "row is not a JSON object"))
                continue
            text = obj.get("prompt")
            if not isinstance(text, str):
                bad.append(BadRow(line_no, "missing string field 'prompt'"))
                continue
            if not text.strip():
                bad.append(BadRow(line_no, "empty prompt"))
                continue
            prompt_id = str(obj.get("id", f"line-{line_no}"))
            if prompt_id in seen:
                bad.append(BadRow(line_no, f"duplicate id {prompt_id!r} (first on line {seen[prompt_id]})"))
                continue
            instructions = None
            if "instruction_id_list" in obj or "kwargs" in obj:
                try:
                    instructions = parse_instructions(obj.get("instruction_id_list"), obj.get("kwargs"))
                except ValueError as err:
                    bad.append(BadRow(line_no, str(err)))
                    continue
            seen[prompt_id] = line_no
            rows.append((line_no, prompt_id, text, instructions))
    return rows, bad


def load_prompts(
    path: str | Path | None,
    tokenizer,
    max_prompt_tokens: int,
    on_bad_rows: str = "error",
    limit: int | None = None,
) -> list[Prompt]:
    """Read, validate and encode a prompt file (a path or a shipped set's name; None: the
    shipped training questions)."""
    path = resolve_prompt_file(path)
    if not path.is_file():
        raise PromptFileError(f"prompt file {str(path)!r} does not exist")
    rows, bad = read_prompt_rows(path)
    prompts = []
    for line_no, prompt_id, text, instructions in rows:
        tokens = encode_chat(tokenizer, text)
        if len(tokens) > max_prompt_tokens:
            bad.append(BadRow(line_no, f"prompt is {len(tokens)} tokens, over model.max_prompt_tokens={max_prompt_tokens}"))
            continue
        prompts.append(Prompt(prompt_id, text, tuple(tokens), instructions))
    bad.sort(key=lambda b: b.line)
    if bad:
        listing = "; ".join(f"line {b.line}: {b.reason}" for b in bad[:20])
        more = f" (and {len(bad) - 20} more)" if len(bad) > 20 else ""
        if on_bad_rows == "error":
            raise PromptFileError(
                f"{path}: {len(bad)} bad row(s): {listing}{more}. Fix them or set data.on_bad_rows=skip"
            )
        log.warning("%s: skipping %d bad row(s): %s%s", path, len(bad), listing, more)
    if not prompts:
        raise PromptFileError(f"{path}: no usable prompts")
    return prompts[:limit] if limit else prompts
