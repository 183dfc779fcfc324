"""The prompt stream: read a prompt set, validate every row, encode it as a chat (core/chat.py).

A prompt set is a JSONL file (one JSON object a line), a Parquet file, a Hugging Face
`datasets` folder written by `save_to_disk` (a split of a DatasetDict: `data.split`), or the
name of a dataset in the local Hugging Face cache (read offline with `datasets`). A row's
prompt is the column `data.prompt_column`: a string (TRL's `prompt`), or a chat, a list of
{role, content} messages (TRL's conversational `prompt`, or `messages`), which is encoded with
the chat template as it stands, any trailing assistant turn left out. Its id is `id`, else
IFEval's `key`, else its row number. A row may carry verifiable instructions in IFEval's
format (`instruction_id_list` and `kwargs`, None-valued kwargs ignored, as in IFEval's own
rows): the verifier judge and the held-out accuracy read them. Bad rows (invalid UTF-8 or
JSON, a missing/empty prompt, an unknown instruction id or bad kwargs, a chat the template
refuses — Gemma's refuses a system turn —, too many tokens) are
reported with their line (row) numbers. `on_bad_rows="error"` refuses the set; `"skip"` drops
them and says so — never silently.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from core.chat import ChatEncoder, ChatTemplateError, as_chat
from judge.verifier import Instructions, parse_instructions

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent  # the shipped JSONL files live beside this module
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
    # Held out too, but built unlike `broad`: writing tasks, instructions before the task in a
    # third of the rows (scripts/make_broad_prompts.py --tasks), a stand-in for an external set.
    "broad-tasks-eval": DATA_DIR / "broad_tasks_eval.jsonl",
    # Tasks like users' (letters, summaries of a given passage, product descriptions, ...: 18
    # genres) with instructions of every kind, and a held-out set on other tasks
    # (scripts/make_broad_prompts.py --realistic).
    "realistic": DATA_DIR / "realistic_train.jsonl",
    "realistic-eval": DATA_DIR / "realistic_eval.jsonl",
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


class PromptRow(NamedTuple):
    line: int  # the line of a JSONL file, the row number (from 1) of a table
    prompt_id: str
    text: str  # the user's request (a chat's last user turn): what judges read
    instructions: Instructions | None
    messages: list[dict] | None = None  # a chat prompt, encoded as it stands


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


def _jsonl_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line, object) per non-blank line; a BadRow for a line that is not UTF-8 JSON."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue  # blank lines are layout, not rows
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield line_no, BadRow(line_no, f"not valid UTF-8 ({err.reason} at byte {err.start})")
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as err:
                yield line_no, BadRow(line_no, f"not valid JSON ({err.msg})")


def _saved_dataset(folder: Path, split: str) -> pa.Table:
    """A `datasets` folder written by save_to_disk, read with pyarrow (its shards are Arrow
    streams listed in state.json); a DatasetDict's split is its subfolder."""
    if (folder / "dataset_dict.json").exists():
        splits = json.loads((folder / "dataset_dict.json").read_text())["splits"]
        if split not in splits:
            raise PromptFileError(f"{folder}: no split {split!r} (it has {', '.join(splits)}); set data.split")
        folder = folder / split
    files = [folder / f["filename"] for f in json.loads((folder / "state.json").read_text())["_data_files"]]
    return pa.concat_tables([pa.ipc.open_stream(pa.memory_map(str(f))).read_all() for f in files])


def _cached_dataset(name: str, split: str) -> pa.Table:
    """A dataset by name from the local Hugging Face cache (offline: HF_DATASETS_OFFLINE)."""
    try:
        import datasets  # optional (pip install osp[data]): only a dataset named by the hub needs it
    except ImportError:
        raise PromptFileError(f"prompt set {name!r} is not a file or folder; to read it as a dataset from the "
                              "local Hugging Face cache, install `datasets` (pip install -e .[data])") from None
    try:
        return datasets.load_dataset(name, split=split).data.table
    except Exception as err:  # not cached, no such split, …: say what was tried
        raise PromptFileError(f"prompt set {name!r}: not a file or folder, and not a dataset in the local Hugging "
                              f"Face cache (split {split!r}): {str(err).splitlines()[0]}") from None


def _records(source: str | Path, split: str) -> Iterator[tuple[int, Any]]:
    path = Path(source)
    if path.is_dir():
        table = _saved_dataset(path, split)
    elif path.suffix == ".parquet" and path.is_file():
        table = pq.read_table(path)
    elif path.is_file():
        yield from _jsonl_records(path)
        return
    elif "/" in str(source) and not str(source).startswith((".", "/")) and not path.suffix:
        table = _cached_dataset(str(source), split)  # "org/name": a dataset id, not a path
    else:
        raise PromptFileError(f"prompt file {str(source)!r} does not exist")
    yield from enumerate(table.to_pylist(), start=1)


def _prompt_of(obj: dict, column: str) -> tuple[str | None, list[dict] | None, str | None]:
    """(text, messages or None, why not) of a row's prompt column."""
    value = obj.get(column)
    if isinstance(value, str):
        return (value, None, None) if value.strip() else (None, None, "empty prompt")
    if isinstance(value, list) and value and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                 and m.get("role") for m in value):
        messages = list(value)
        while messages and messages[-1]["role"] == "assistant":
            messages.pop()  # the answer is the policy's to write
        users = [m["content"] for m in messages if m["role"] == "user"]
        if not users or not users[-1].strip():
            return None, None, f"chat in {column!r} has no user turn"
        return users[-1], messages, None
    return None, None, f"missing string field {column!r}" if column == "prompt" or value is None else (
        f"field {column!r} is neither a string nor a list of {{role, content}} messages")


def read_prompt_rows(source: str | Path, prompt_column: str = "prompt",
                     split: str = "train") -> tuple[list[PromptRow], list[BadRow]]:
    """Every usable row, and the bad rows with their reasons."""
    rows, bad = [], []
    seen: dict[str, int] = {}
    for line_no, obj in _records(source, split):
        if isinstance(obj, BadRow):
            bad.append(obj)
            continue
        if not isinstance(obj, dict):
            bad.append(BadRow(line_no, "row is not a JSON object"))
            continue
        text, messages, why = _prompt_of(obj, prompt_column)
        if why:
            bad.append(BadRow(line_no, why))
            continue
        prompt_id = str(obj.get("id", obj.get("key", f"line-{line_no}")))
        if prompt_id in seen:
            bad.append(BadRow(line_no, f"duplicate id {prompt_id!r} (first on line {seen[prompt_id]})"))
            continue
        instructions = None
        if obj.get("instruction_id_list") is not None or obj.get("kwargs") is not None:
            try:
                instructions = parse_instructions(obj.get("instruction_id_list"), obj.get("kwargs"))
            except ValueError as err:
                bad.append(BadRow(line_no, str(err)))
                continue
        seen[prompt_id] = line_no
        rows.append(PromptRow(line_no, prompt_id, text, instructions, messages))
    return rows, bad


def load_prompts(
    path: str | Path | None,
    chat: ChatEncoder,
    max_prompt_tokens: int,
    on_bad_rows: str = "error",
    limit: int | None = None,
    prompt_column: str = "prompt",
    split: str = "train",
) -> list[Prompt]:
    """Read, validate and encode a prompt set (a path, a shipped set's name, or a dataset in the
    local Hugging Face cache; None: the shipped training questions). `chat`: how every side
    encodes a chat (core/chat.py, model.chat_template); a bare tokenizer: its own template."""
    chat = as_chat(chat)
    path = resolve_prompt_file(path)
    rows, bad = read_prompt_rows(path, prompt_column, split)
    prompts = []
    for line_no, prompt_id, text, instructions, messages in rows:
        try:
            tokens = chat.prompt(messages) if messages else chat.user_prompt(text)
        except ChatTemplateError as err:
            bad.append(BadRow(line_no, f"prompt {prompt_id!r}: {err}"))
            continue
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
