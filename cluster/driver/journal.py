"""journal.jsonl: what each learner step trained and what became of the prompts since the step
before, one line per step, written by the driver after the step's push.

    {"step": 12, "version": 12,
     "pairs": [[prompt_index, policy_version, chosen digest, rejected digest], ...],
     "replayed": 0,
     "prompts": {"trained": [...], "no_pair_kept": [...], "requeued_stale": [...], "requeued_failed": [...]}}

`pairs` lists every pair the step trained, in the batch's order (a method's replayed pairs
last, `replayed` of them); a pair is named by its prompt, the policy version that sampled it
and a digest of each answer's tokens (`pair_digest`), so it can be matched with the spilled
pairs (pipeline.spill_dir). `version` is the policy version the engines hold after the step.
`prompts` is the ledger's outcomes (cluster/driver/ledger.py): prompts done, because their
last pair trained or judging kept none, and prompts sent back to be sampled again.

Like metrics.jsonl, a resumed run drops the lines after its checkpoint's step (those steps are
redone), so the file is the history of the weights the run ends with: each step once. With the
final checkpoint's run state it accounts for every prompt (bench/chaos_soak.py checks it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa

from cluster.driver.metrics import truncate_after


def pair_digest(tokens: list[int]) -> str:
    """A short digest of one answer's token ids (16 hex digits)."""
    return hashlib.blake2b(",".join(map(str, tokens)).encode(), digest_size=8).hexdigest()


def pair_keys(pairs: pa.Table) -> list[list]:
    """[prompt_index, policy_version, chosen digest, rejected digest] of each pair."""
    return [[index, version, pair_digest(chosen), pair_digest(rejected)] for index, version, chosen, rejected in zip(
        pairs["prompt_index"].to_pylist(), pairs["policy_version"].to_pylist(), pairs["chosen_tokens"].to_pylist(),
        pairs["rejected_tokens"].to_pylist())]


class Journal:
    def __init__(self, run_dir: Path, resume_step: int):
        """`resume_step`: the step the run continues from (lines after it are dropped)."""
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "journal.jsonl"
        truncate_after(self.path, resume_step)
        self.file = open(self.path, "a", buffering=1)

    def log(self, step: int, version: int, pairs: pa.Table, replayed: int, prompts: dict[str, list[int]]) -> None:
        record = {"step": step, "version": version, "pairs": pair_keys(pairs), "replayed": replayed, "prompts": prompts}
        self.file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self.file.close()
