"""journal.jsonl (cluster/driver/journal.py): one line per learner step naming the pairs it
trained, kept to the steps of the weights a resumed run ends with."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from cluster.driver.journal import Journal, pair_digest, pair_keys
from core.records import pair_batch


def _pairs(rows: list[tuple[int, int, list[int], list[int]]]):
    return pair_batch([{"prompt_id": f"p{i}", "prompt_index": i, "prompt_tokens": [1], "chosen_tokens": chosen,
                        "rejected_tokens": rejected, "chosen_text": "a", "rejected_text": "b", "strength": 0.75,
                        "ref_logp_chosen": -1.0, "ref_logp_rejected": -2.0, "policy_version": version,
                        "source": "round_robin"} for i, version, chosen, rejected in rows])


def test_pair_keys_name_a_pair_by_prompt_version_and_answer_tokens(tmp_path):
    """Keys of a table read back from Parquet (the spill) equal those of the table itself; two
    pairs differing only in one token of one answer differ. Would catch a digest of anything
    but the tokens (texts, a row number) or one that ignores the order of the answers."""
    table = _pairs([(3, 1, [5, 6, 7], [8]), (3, 1, [5, 6, 9], [8]), (4, 2, [8], [5, 6, 7])])
    pq.write_table(table, tmp_path / "pairs.parquet")
    keys = pair_keys(table)
    assert pair_keys(pq.read_table(tmp_path / "pairs.parquet")) == keys
    assert keys[0][:2] == [3, 1] and keys[2][:2] == [4, 2]
    assert keys[0][2] != keys[1][2] and keys[0][3] == keys[1][3]
    assert keys[2][2:] == [keys[0][3], keys[0][2]]  # answers swapped: digests swap
    assert pair_digest([5, 6, 7]) == keys[0][2] and len(keys[0][2]) == 16


def test_a_resumed_journal_drops_the_steps_it_redoes(tmp_path):
    """A run killed after step 3 with its checkpoint at step 2 resumes at 2: step 3's line goes,
    and the redone step 3 is written once. Would catch a journal that keeps a lost step's pairs
    (they would read as trained twice) or one that starts afresh (losing steps 1-2)."""
    outcomes = {"trained": [], "no_pair_kept": [], "requeued_stale": [], "requeued_failed": []}
    first = Journal(tmp_path, resume_step=0)
    for step in (1, 2, 3):
        first.log(step, step, _pairs([(step, step - 1, [step], [9])]), 0, outcomes)
    first.close()
    resumed = Journal(tmp_path, resume_step=2)
    resumed.log(3, 3, _pairs([(7, 2, [7], [9])]), 0, {**outcomes, "trained": [7]})
    resumed.close()
    lines = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    assert [line["pairs"][0][0] for line in lines] == [1, 2, 7]
    assert lines[2]["prompts"]["trained"] == [7] and lines[2]["version"] == 3 and lines[2]["replayed"] == 0
