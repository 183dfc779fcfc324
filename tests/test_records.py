"""The Arrow records that cross actor boundaries: schemas, builders, validation."""

from __future__ import annotations

import math
import pickle

import pyarrow as pa
import pytest

from core.records import (
    PAIR_SCHEMA,
    ROLLOUT_SCHEMA,
    MalformedBatchError,
    pair_batch,
    rollout_batch,
    validate_pair_batch,
    validate_rollout_batch,
)


def rollout_row(i: int = 0, k: int = 4, **override) -> dict:
    row = {
        "prompt_id": f"p{i}",
        "prompt_index": i,
        "prompt_text": f"prompt {i}",
        "prompt_tokens": [1, 2, 3 + i],
        "response_tokens": [[10 + j] * (j + 1) for j in range(k)],
        "response_texts": [f"r{j}" for j in range(k)],
        "response_logprobs": [-1.5 * (j + 1) for j in range(k)],
        "finish_reasons": ["stop"] * (k - 1) + ["length"],
        "policy_version": 3,
        "actor": "rollout-0",
    }
    row.update(override)
    return row


def pair_row(i: int = 0, **override) -> dict:
    row = {
        "prompt_id": f"p{i}",
        "prompt_index": i,
        "prompt_tokens": [1, 2, 3],
        "chosen_tokens": [7, 8],
        "rejected_tokens": [9],
        "chosen_text": "good",
        "rejected_text": "bad",
        "strength": 0.75,
        "ref_logp_chosen": -3.25,
        "ref_logp_rejected": -4.5,
        "policy_version": 2,
        "source": "ranked",
    }
    row.update(override)
    return row


def ipc_roundtrip(table: pa.Table) -> pa.Table:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return pa.ipc.open_stream(sink.getvalue()).read_all()


def replace_column(table: pa.Table, name: str, array: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, array)


# -- schemas ---------------------------------------------------------------------------


def test_schemas_have_the_documented_columns_and_types():
    assert ROLLOUT_SCHEMA.names == [
        "prompt_id", "prompt_index", "prompt_text", "prompt_tokens", "response_tokens",
        "response_texts", "response_logprobs", "finish_reasons", "policy_version", "actor",
    ]
    assert PAIR_SCHEMA.names == [
        "prompt_id", "prompt_index", "prompt_tokens", "chosen_tokens", "rejected_tokens",
        "chosen_text", "rejected_text", "strength", "ref_logp_chosen", "ref_logp_rejected",
        "policy_version", "source",
    ]
    assert ROLLOUT_SCHEMA.field("response_tokens").type == pa.list_(pa.list_(pa.int32()))
    assert ROLLOUT_SCHEMA.field("response_logprobs").type == pa.list_(pa.float64())
    assert PAIR_SCHEMA.field("strength").type == pa.float64()
    assert PAIR_SCHEMA.field("chosen_tokens").type == pa.list_(pa.int32())
    assert all(not f.nullable for f in ROLLOUT_SCHEMA)
    assert all(not f.nullable for f in PAIR_SCHEMA)


# -- good batches ------------------------------------------------------------------------


def test_rollout_batch_roundtrips_rows_and_ipc():
    rows = [rollout_row(0), rollout_row(1)]
    table = rollout_batch(rows)
    assert table.schema == ROLLOUT_SCHEMA
    assert table.num_rows == 2
    assert table.to_pylist() == rows
    assert validate_rollout_batch(table, k=4) is table

    back = ipc_roundtrip(table)
    assert back.schema == ROLLOUT_SCHEMA
    assert back.equals(table)
    assert back.to_pylist() == rows
    validate_rollout_batch(back, k=4)

    unpickled = pickle.loads(pickle.dumps(table))  # how the Ray object store ships it
    assert unpickled.equals(table)


def test_pair_batch_roundtrips_rows_and_ipc():
    rows = [pair_row(0), pair_row(1, strength=0.5, source="dno"), pair_row(2, strength=1.0)]
    table = pair_batch(rows)
    assert table.schema == PAIR_SCHEMA
    assert table.to_pylist() == rows
    assert table["strength"].to_pylist() == [0.75, 0.5, 1.0]
    assert validate_pair_batch(table) is table

    back = ipc_roundtrip(table)
    assert back.equals(table)
    assert validate_pair_batch(back).to_pylist() == rows


def test_pair_batch_accepts_integer_strength_and_boundaries():
    table = pair_batch([pair_row(strength=1), pair_row(1, strength=0.0)])
    assert table["strength"].to_pylist() == [1.0, 0.0]
    assert table.schema.field("strength").type == pa.float64()


def test_rollout_batch_without_k_accepts_any_consistent_count():
    table = rollout_batch([rollout_row(0, k=2), rollout_row(1, k=6)])
    assert [len(r) for r in table["response_tokens"].to_pylist()] == [2, 6]
    with pytest.raises(MalformedBatchError, match=r"rollout row 0 has 2 responses, expected K=6"):
        validate_rollout_batch(table, k=6)
    with pytest.raises(MalformedBatchError, match=r"rollout row 1 has 6 responses, expected K=2"):
        validate_rollout_batch(table, k=2)


# -- malformed rollout batches --------------------------------------------------------------


def test_rollout_wrong_k():
    with pytest.raises(MalformedBatchError, match=r"rollout row 1 has 3 responses, expected K=4"):
        validate_rollout_batch(rollout_batch([rollout_row(0), rollout_row(1, k=3)]), k=4)


@pytest.mark.parametrize("column", ["response_texts", "response_logprobs", "finish_reasons"])
def test_rollout_per_response_lists_must_match_response_tokens(column):
    row = rollout_row(1)
    row[column] = row[column][:-1]
    with pytest.raises(MalformedBatchError, match=rf"rollout row 1: {column} has a different length"):
        rollout_batch([rollout_row(0), row])


def test_rollout_missing_and_unknown_columns():
    table = rollout_batch([rollout_row()])
    with pytest.raises(MalformedBatchError, match=r"missing columns \['actor'\]"):
        validate_rollout_batch(table.drop_columns(["actor"]))
    with pytest.raises(MalformedBatchError, match=r"unknown columns \['extra'\]"):
        validate_rollout_batch(table.append_column("extra", pa.array([1])))


def test_rollout_row_missing_a_key_is_a_null():
    row = rollout_row()
    del row["actor"]
    with pytest.raises(MalformedBatchError, match=r"column 'actor' has nulls"):
        rollout_batch([row])


def test_rollout_nulls():
    with pytest.raises(MalformedBatchError, match=r"column 'prompt_id' has nulls"):
        rollout_batch([rollout_row(prompt_id=None)])
    with pytest.raises(MalformedBatchError, match=r"column 'response_tokens' has nulls inside"):
        rollout_batch([rollout_row(k=2, response_tokens=[[3], None])])
    with pytest.raises(MalformedBatchError, match=r"column 'prompt_tokens' has nulls inside"):
        rollout_batch([rollout_row(prompt_tokens=[1, None])])
    with pytest.raises(MalformedBatchError, match=r"column 'response_logprobs' has nulls inside"):
        rollout_batch([rollout_row(k=2, response_logprobs=[-1.0, None])])


def test_rollout_wrong_types():
    with pytest.raises(MalformedBatchError, match=r"rollout batch column 'prompt_index'"):
        rollout_batch([rollout_row(prompt_index="seven")])
    with pytest.raises(MalformedBatchError, match=r"rollout batch column 'response_tokens'"):
        rollout_batch([rollout_row(k=2, response_tokens=[["a"], [1]])])
    with pytest.raises(MalformedBatchError, match=r"rollout batch column 'prompt_tokens'"):
        rollout_batch([rollout_row(prompt_tokens=[1, 2**40])])  # does not fit int32
    table = rollout_batch([rollout_row()])
    as_int64 = pa.array([[1, 2, 3]], type=pa.list_(pa.int64()))
    with pytest.raises(
        MalformedBatchError, match=r"column 'prompt_tokens' has type list<item: int64>, expected list<item: int32>"
    ):
        validate_rollout_batch(replace_column(table, "prompt_tokens", as_int64))


def test_rollout_not_a_table_and_empty():
    with pytest.raises(MalformedBatchError, match="must be a pyarrow.Table, got list"):
        validate_rollout_batch([rollout_row()])
    with pytest.raises(MalformedBatchError, match="rollout batch is empty"):
        validate_rollout_batch(ROLLOUT_SCHEMA.empty_table())
    with pytest.raises(MalformedBatchError, match="rollout batch is empty"):
        rollout_batch([])


def test_rollout_empty_prompt_and_non_finite_logprobs():
    with pytest.raises(MalformedBatchError, match=r"rollout row 1 has no prompt tokens"):
        rollout_batch([rollout_row(0), rollout_row(1, prompt_tokens=[])])
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(MalformedBatchError, match="non-finite response_logprobs"):
            rollout_batch([rollout_row(k=2, response_logprobs=[-1.0, bad])])


def test_validation_error_is_a_value_error():
    assert issubclass(MalformedBatchError, ValueError)


# -- malformed pair batches -------------------------------------------------------------------


@pytest.mark.parametrize("strength", [-0.01, 1.0000001, 2.0, math.inf, -math.inf])
def test_pair_strength_outside_unit_interval(strength):
    with pytest.raises(MalformedBatchError, match=r"pair row 1: strength .* is not a probability in \[0, 1\]"):
        pair_batch([pair_row(0), pair_row(1, strength=strength)])


def test_pair_strength_nan_or_not_a_number():
    with pytest.raises(MalformedBatchError, match=r"pair row 0: strength nan is not a number"):
        pair_batch([pair_row(strength=math.nan)])
    with pytest.raises(MalformedBatchError, match=r"pair row 1: strength '0.7' is not a number"):
        pair_batch([pair_row(0), pair_row(1, strength="0.7")])
    with pytest.raises(MalformedBatchError, match=r"pair row 0: strength None is not a number"):
        pair_batch([pair_row(strength=None)])
    # A NaN that reaches validation by another route (a table built elsewhere).
    table = pair_batch([pair_row()])
    nan = replace_column(table, "strength", pa.array([math.nan], type=pa.float64()))
    with pytest.raises(MalformedBatchError, match=r"pair row 0: strength nan is not a probability"):
        validate_pair_batch(nan)


@pytest.mark.parametrize("column", ["ref_logp_chosen", "ref_logp_rejected"])
def test_pair_non_finite_reference_logprobs(column):
    with pytest.raises(MalformedBatchError, match=rf"pair row 1: {column} is not finite"):
        pair_batch([pair_row(0), pair_row(1, **{column: -math.inf})])


@pytest.mark.parametrize("column", ["prompt_tokens", "chosen_tokens", "rejected_tokens"])
def test_pair_empty_token_lists(column):
    with pytest.raises(MalformedBatchError, match=rf"pair row 2: {column} is empty"):
        pair_batch([pair_row(0), pair_row(1), pair_row(2, **{column: []})])


def test_pair_missing_column_nulls_and_types():
    table = pair_batch([pair_row()])
    with pytest.raises(MalformedBatchError, match=r"pair batch is missing columns \['strength', 'source'\]"):
        validate_pair_batch(table.drop_columns(["strength", "source"]))
    with pytest.raises(MalformedBatchError, match=r"pair batch column 'chosen_text' has nulls"):
        pair_batch([pair_row(chosen_text=None)])
    with pytest.raises(MalformedBatchError, match=r"column 'chosen_tokens' has nulls inside"):
        pair_batch([pair_row(chosen_tokens=[5, None])])
    with pytest.raises(MalformedBatchError, match=r"pair batch column 'policy_version'"):
        pair_batch([pair_row(policy_version="v2")])
    as_float32 = pa.array([0.75], type=pa.float32())
    with pytest.raises(MalformedBatchError, match=r"column 'strength' has type float, expected double"):
        validate_pair_batch(replace_column(table, "strength", as_float32))
    # A rollout batch is not a pair batch.
    with pytest.raises(MalformedBatchError, match="pair batch is missing columns"):
        validate_pair_batch(rollout_batch([rollout_row()]))
