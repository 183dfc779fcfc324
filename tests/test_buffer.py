"""The pair buffer: exact takes oldest first across batches, staleness drops that hand back
prompt indices, and the Parquet spill."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster.driver.scheduler import PairBuffer
from core.records import PAIR_SCHEMA, pair_batch, validate_pair_batch


def _free(buf: PairBuffer) -> int:
    return buf.max_pairs - len(buf)


def _pending(buf: PairBuffer) -> list[int]:
    """Prompts with pairs waiting, each once."""
    return sorted({i for t in buf.tables for i in t["prompt_index"].to_pylist()})


def _snapshot(buf: PairBuffer) -> pa.Table:
    """Every buffered pair, in order, without taking any."""
    return pa.concat_tables(list(buf.tables)) if buf.tables else PAIR_SCHEMA.empty_table()


def _pairs(prompt_indices: list[int], version: int, tag: str) -> pa.Table:
    """One judged pair per entry; `chosen_text` names the pair (tag:position) for tracking."""
    rows = []
    for j, index in enumerate(prompt_indices):
        rows.append({
            "prompt_id": f"p{index}",
            "prompt_index": index,
            "prompt_tokens": [1, 2, index + 3],
            "chosen_tokens": [10 + j, 11],
            "rejected_tokens": [20 + j],
            "chosen_text": f"{tag}:{j}",
            "rejected_text": f"{tag}:{j}-rejected",
            "strength": 0.5 + 0.05 * j,
            "ref_logp_chosen": -1.5 - j,
            "ref_logp_rejected": -2.25 - j,
            "policy_version": version,
            "source": "ranked",
        })
    return pair_batch(rows)


def _names(table: pa.Table) -> list[str]:
    return table["chosen_text"].to_pylist()


def test_put_take_exact_counts_oldest_first_across_batches():
    buf = PairBuffer(max_pairs=16)
    buf.put(_pairs([0, 0, 1], version=0, tag="a"))
    buf.put(_pairs([2, 2], version=0, tag="b"))
    buf.put(_pairs([3, 4, 4, 5], version=1, tag="c"))
    assert len(buf) == 9
    assert _free(buf) == 7

    first = buf.take(2)  # a slice of the first batch
    assert _names(first) == ["a:0", "a:1"]
    assert len(buf) == 7
    second = buf.take(4)  # the rest of a, all of b, the head of c
    assert _names(second) == ["a:2", "b:0", "b:1", "c:0"]
    assert second["prompt_index"].to_pylist() == [1, 2, 2, 3]
    assert second["policy_version"].to_pylist() == [0, 0, 0, 1]
    assert second.schema == PAIR_SCHEMA
    assert second.column("chosen_tokens").num_chunks == 1  # combined for the learner
    validate_pair_batch(second)
    assert len(buf) == 3
    assert buf.take(4) is None  # short: nothing taken
    assert len(buf) == 3
    third = buf.take(3)
    assert _names(third) == ["c:1", "c:2", "c:3"]
    assert third["strength"].to_pylist() == pytest.approx([0.55, 0.6, 0.65])
    assert third["chosen_tokens"].to_pylist() == [[11, 11], [12, 11], [13, 11]]
    assert len(buf) == 0 and _free(buf) == 16
    assert buf.take(1) is None


def test_take_of_one_whole_batch_returns_it_unchanged():
    buf = PairBuffer(max_pairs=8)
    table = _pairs([7, 8], version=3, tag="x")
    buf.put(table)
    assert buf.take(2).equals(table)


def test_take_zero_is_an_empty_pair_batch_and_negative_is_refused():
    buf = PairBuffer(max_pairs=8)
    empty = buf.take(0)
    assert empty.num_rows == 0 and empty.schema == PAIR_SCHEMA
    buf.put(_pairs([1], version=0, tag="a"))
    assert buf.take(0).num_rows == 0
    assert len(buf) == 1
    with pytest.raises(ValueError):
        buf.take(-1)


def test_empty_and_none_puts_are_ignored():
    buf = PairBuffer(max_pairs=4)
    buf.put(None)
    buf.put(PAIR_SCHEMA.empty_table())
    assert len(buf) == 0 and len(buf.tables) == 0


def test_a_put_past_max_pairs_is_accepted():
    buf = PairBuffer(max_pairs=3)
    buf.put(_pairs([0, 1], version=0, tag="a"))
    buf.put(_pairs([2, 3], version=0, tag="b"))  # back-pressure is the driver's job: accepted
    assert len(buf) == 4


def test_drop_older_than_returns_one_prompt_index_per_dropped_pair():
    buf = PairBuffer(max_pairs=32)
    buf.put(_pairs([0, 0, 1, 1], version=0, tag="a"))
    buf.put(_pairs([2, 2], version=2, tag="b"))
    buf.put(_pairs([3, 3, 4], version=1, tag="c"))
    mixed = pa.concat_tables([_pairs([5, 5], version=0, tag="d"), _pairs([6], version=3, tag="e")])
    buf.put(mixed)  # one batch with old and fresh pairs (two chunks)
    assert len(buf) == 12

    dropped = buf.drop_older_than(2)
    assert dropped == [0, 0, 1, 1, 3, 3, 4, 5, 5]  # in buffer order, once per pair
    assert len(buf) == 3
    assert _pending(buf) == [2, 6]
    assert _names(_snapshot(buf)) == ["b:0", "b:1", "e:0"]
    assert buf.drop_older_than(2) == []  # nothing left to drop
    assert _names(buf.take(3)) == ["b:0", "b:1", "e:0"]


def test_drop_keeps_fresh_pairs_of_a_partially_taken_batch():
    buf = PairBuffer(max_pairs=32)
    old_then_new = pa.concat_tables([_pairs([0, 1, 2], version=0, tag="a"), _pairs([3, 4], version=1, tag="b")])
    buf.put(old_then_new)
    buf.put(_pairs([5], version=0, tag="c"))
    assert _names(buf.take(2)) == ["a:0", "a:1"]  # the head is now a slice: a:2, b:0, b:1

    assert buf.drop_older_than(1) == [2, 5]
    assert len(buf) == 2
    assert _pending(buf) == [3, 4]
    assert buf.take(3) is None
    rest = buf.take(2)
    assert _names(rest) == ["b:0", "b:1"]
    assert rest["policy_version"].to_pylist() == [1, 1]
    assert len(buf) == 0


def test_drop_everything_empties_the_buffer():
    buf = PairBuffer(max_pairs=8)
    buf.put(_pairs([1, 2], version=0, tag="a"))
    assert buf.drop_older_than(5) == [1, 2]
    assert len(buf) == 0 and len(buf.tables) == 0 and _free(buf) == 8
    assert buf.take(1) is None
    assert _snapshot(buf).num_rows == 0


def test_spill_writes_every_put_once_and_reads_back_equal(tmp_path):
    spill = tmp_path / "spill" / "pairs"  # created, parents included
    buf = PairBuffer(max_pairs=4, spill_dir=str(spill))
    tables = [_pairs([0, 1], version=0, tag="a"), _pairs([2], version=1, tag="b"), _pairs([3, 3, 4], version=1, tag="c")]
    buf.put(tables[0])
    buf.put(None)  # nothing to spill
    buf.put(PAIR_SCHEMA.empty_table())
    buf.put(tables[1])
    buf.take(3)  # taking and dropping do not touch the spill
    buf.put(tables[2])
    buf.drop_older_than(5)

    files = sorted(p.name for p in spill.iterdir())
    assert files == ["pairs-000000.parquet", "pairs-000001.parquet", "pairs-000002.parquet"]
    assert buf.spilled == 3
    for name, table in zip(files, tables):
        back = pq.read_table(spill / name)
        assert back.schema == PAIR_SCHEMA
        assert back.equals(table)
        validate_pair_batch(back)
    assert _names(pq.read_table(spill).sort_by("chosen_text")) == ["a:0", "a:1", "b:0", "c:0", "c:1", "c:2"]


def test_no_spill_dir_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    buf = PairBuffer(max_pairs=4)
    buf.put(_pairs([0], version=0, tag="a"))
    assert buf.spill_dir is None and buf.spilled == 0
    assert list(tmp_path.iterdir()) == []


def test_a_resumed_runs_spill_continues_the_numbering_and_keeps_the_earlier_pairs(tmp_path):
    """A resumed run makes a new PairBuffer on the same spill folder. Would catch the numbering
    restarting at 0: the resumed run then overwrote the first attempt's pairs-000000.parquet…,
    and the spill no longer held every pair the run made."""
    spill = tmp_path / "pairs"
    first = PairBuffer(max_pairs=8, spill_dir=str(spill))
    first.put(_pairs([0], version=0, tag="a"))
    first.put(_pairs([1], version=0, tag="b"))
    (spill / "notes.txt").write_text("not a spill file")  # ignored by the numbering
    resumed = PairBuffer(max_pairs=8, spill_dir=str(spill))
    assert resumed.spilled == 2
    resumed.put(_pairs([2], version=3, tag="c"))
    files = sorted(p.name for p in spill.glob("*.parquet"))
    assert files == ["pairs-000000.parquet", "pairs-000001.parquet", "pairs-000002.parquet"]
    assert _names(pq.read_table(spill / "pairs-000000.parquet")) == ["a:0"]
    assert _names(pq.read_table(spill / "pairs-000002.parquet")) == ["c:0"]
