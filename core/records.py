"""Arrow schemas of the two records that cross actor boundaries, with their validation.

A *rollout batch* has one row per prompt carrying its K sampled responses; a *pair batch*
has one row per judged pair. Both travel through the Ray object store as `pa.Table`s
(zero-copy), so every consumer validates what it receives: a malformed batch is refused
with an error naming the row and field instead of corrupting a training step.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc

TOKENS = pa.list_(pa.int32())

ROLLOUT_SCHEMA = pa.schema(
    [
        pa.field("prompt_id", pa.string(), nullable=False),
        # Position of the prompt in the run's data stream: the unit of exactly-once accounting.
        pa.field("prompt_index", pa.int64(), nullable=False),
        pa.field("prompt_text", pa.string(), nullable=False),
        pa.field("prompt_tokens", TOKENS, nullable=False),
        pa.field("response_tokens", pa.list_(TOKENS), nullable=False),
        pa.field("response_texts", pa.list_(pa.string()), nullable=False),
        # Summed log-prob of each response under the sampling policy (raw, before temperature):
        # the reference for DNO, whose reference is the policy that generated the iteration.
        pa.field("response_logprobs", pa.list_(pa.float64()), nullable=False),
        pa.field("finish_reasons", pa.list_(pa.string()), nullable=False),
        pa.field("policy_version", pa.int64(), nullable=False),
        pa.field("actor", pa.string(), nullable=False),
    ]
)

PAIR_SCHEMA = pa.schema(
    [
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt_index", pa.int64(), nullable=False),
        pa.field("prompt_tokens", TOKENS, nullable=False),
        pa.field("chosen_tokens", TOKENS, nullable=False),
        pa.field("rejected_tokens", TOKENS, nullable=False),
        pa.field("chosen_text", pa.string(), nullable=False),
        pa.field("rejected_text", pa.string(), nullable=False),
        # P(chosen ≻ rejected) from the judge, swap-averaged; pairs are oriented so it is ≥ 0.5.
        pa.field("strength", pa.float64(), nullable=False),
        # Summed log-probs of each response under the reference (π_SFT, or the previous iterate).
        pa.field("ref_logp_chosen", pa.float64(), nullable=False),
        pa.field("ref_logp_rejected", pa.float64(), nullable=False),
        pa.field("policy_version", pa.int64(), nullable=False),
        # Who made the pair: the judge's anchor ("round_robin", "sample0", "sft_greedy", "dno"), or
        # "replay" for a DNO pair of the previous iteration trained again.
        pa.field("source", pa.string(), nullable=False),
    ]
)


class MalformedBatchError(ValueError):
    """A rollout or pair batch that does not satisfy its schema or invariants."""


def _check_schema(table: pa.Table, schema: pa.Schema, kind: str) -> None:
    if not isinstance(table, pa.Table):
        raise MalformedBatchError(f"{kind} batch must be a pyarrow.Table, got {type(table).__name__}")
    missing = [n for n in schema.names if n not in table.schema.names]
    if missing:
        raise MalformedBatchError(f"{kind} batch is missing columns {missing}")
    extra = [n for n in table.schema.names if n not in schema.names]
    if extra:
        raise MalformedBatchError(f"{kind} batch has unknown columns {extra}")
    for field in schema:
        got = table.schema.field(field.name).type
        if got != field.type:
            raise MalformedBatchError(
                f"{kind} batch column {field.name!r} has type {got}, expected {field.type}"
            )
        if table.column(field.name).null_count:
            raise MalformedBatchError(f"{kind} batch column {field.name!r} has nulls")
        values = table.column(field.name)
        while pa.types.is_list(values.type):  # nulls inside lists: a null response, a null token
            values = pc.list_flatten(values)
            if values.null_count:
                raise MalformedBatchError(f"{kind} batch column {field.name!r} has nulls inside its lists")


def _first_bad_row(mask: pa.ChunkedArray) -> int:
    return int(pc.index(mask, True).as_py())


def validate_rollout_batch(table: pa.Table, k: int | None = None) -> pa.Table:
    """Return `table` unchanged if it is a well-formed rollout batch, else raise."""
    _check_schema(table, ROLLOUT_SCHEMA, "rollout")
    if table.num_rows == 0:
        raise MalformedBatchError("rollout batch is empty")
    n_resp = pc.list_value_length(table["response_tokens"])
    for col in ("response_texts", "response_logprobs", "finish_reasons"):
        if not pc.all(pc.equal(pc.list_value_length(table[col]), n_resp)).as_py():
            row = _first_bad_row(pc.not_equal(pc.list_value_length(table[col]), n_resp))
            raise MalformedBatchError(
                f"rollout row {row}: {col} has a different length than response_tokens"
            )
    if k is not None and not pc.all(pc.equal(n_resp, k)).as_py():
        row = _first_bad_row(pc.not_equal(n_resp, k))
        raise MalformedBatchError(
            f"rollout row {row} has {n_resp[row].as_py()} responses, expected K={k}"
        )
    empty_prompt = pc.equal(pc.list_value_length(table["prompt_tokens"]), 0)
    if pc.any(empty_prompt).as_py():
        raise MalformedBatchError(f"rollout row {_first_bad_row(empty_prompt)} has no prompt tokens")
    logps = pc.list_flatten(table["response_logprobs"])
    if len(logps) and not pc.all(pc.is_finite(logps)).as_py():
        raise MalformedBatchError("rollout batch has non-finite response_logprobs")
    return table


def validate_pair_batch(table: pa.Table) -> pa.Table:
    """Return `table` unchanged if it is a well-formed pair batch, else raise."""
    _check_schema(table, PAIR_SCHEMA, "pair")
    if table.num_rows == 0:
        raise MalformedBatchError("pair batch is empty")
    strength = table["strength"]
    bad = pc.or_(pc.invert(pc.is_finite(strength)), pc.or_(pc.less(strength, 0.0), pc.greater(strength, 1.0)))
    if pc.any(bad).as_py():
        row = _first_bad_row(bad)
        raise MalformedBatchError(
            f"pair row {row}: strength {strength[row].as_py()!r} is not a probability in [0, 1]"
        )
    for col in ("ref_logp_chosen", "ref_logp_rejected"):
        bad = pc.invert(pc.is_finite(table[col]))
        if pc.any(bad).as_py():
            raise MalformedBatchError(f"pair row {_first_bad_row(bad)}: {col} is not finite")
    for col in ("prompt_tokens", "chosen_tokens", "rejected_tokens"):
        bad = pc.equal(pc.list_value_length(table[col]), 0)
        if pc.any(bad).as_py():
            raise MalformedBatchError(f"pair row {_first_bad_row(bad)}: {col} is empty")
    return table


def _from_rows(rows: list[dict[str, Any]], schema: pa.Schema, kind: str) -> pa.Table:
    """Rows → table; a value Arrow cannot convert is a MalformedBatchError naming its column."""
    try:
        return pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        for field in schema:  # find the column for the message
            try:
                pa.array([row.get(field.name) for row in rows], type=field.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as col_err:
                raise MalformedBatchError(f"{kind} batch column {field.name!r}: {col_err}") from err
        raise MalformedBatchError(f"{kind} batch: {err}") from err


def rollout_batch(rows: Iterable[dict[str, Any]]) -> pa.Table:
    return validate_rollout_batch(_from_rows(list(rows), ROLLOUT_SCHEMA, "rollout"))


def pair_batch(rows: Iterable[dict[str, Any]]) -> pa.Table:
    rows = list(rows)
    for i, row in enumerate(rows):  # clearer than Arrow's cast error for the common mistake
        s = row.get("strength")
        if not isinstance(s, (int, float)) or math.isnan(s):
            raise MalformedBatchError(f"pair row {i}: strength {s!r} is not a number")
    return validate_pair_batch(_from_rows(rows, PAIR_SCHEMA, "pair"))
