"""The pair buffer: Arrow pair batches waiting for the learner, bounded, with staleness rules.

Batches stay as the `pa.Table`s the judges produced (their buffers live in the Ray object
store; slicing and concatenating never copies). The driver asks for exactly one learner
step's worth of pairs at a time. Pairs too stale to train (made by a policy older than the
driver's staleness bound) are not dropped silently: `drop_older_than` returns their prompt
indices so the driver can sample those prompts again.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.records import PAIR_SCHEMA


class PairBuffer:
    def __init__(self, max_pairs: int, spill_dir: str | None = None):
        self.max_pairs = max_pairs
        self.tables: deque[pa.Table] = deque()
        self.size = 0
        self.spill_dir = Path(spill_dir) if spill_dir else None
        self.spilled = 0
        if self.spill_dir:
            self.spill_dir.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        return self.size

    def put(self, table: pa.Table) -> None:
        if table is None or table.num_rows == 0:
            return
        self.tables.append(table)
        self.size += table.num_rows
        if self.spill_dir:  # every pair, once, for inspection and offline replay
            pq.write_table(table, self.spill_dir / f"pairs-{self.spilled:06d}.parquet")
            self.spilled += 1

    def drop_older_than(self, oldest_ok: int) -> list[int]:
        """Remove pairs made by a policy version below `oldest_ok`; return their prompt
        indices (once per dropped pair)."""
        kept: deque[pa.Table] = deque()
        dropped: list[int] = []
        for table in self.tables:
            fresh = pc.greater_equal(table["policy_version"], oldest_ok)
            if pc.all(fresh).as_py():
                kept.append(table)
                continue
            dropped += table.filter(pc.invert(fresh))["prompt_index"].to_pylist()
            table = table.filter(fresh)
            if table.num_rows:
                kept.append(table)
        self.tables = kept
        self.size = sum(t.num_rows for t in kept)
        return dropped

    def take(self, n: int) -> pa.Table | None:
        """Exactly n pairs (oldest first), or None if fewer are buffered."""
        if n < 0:
            raise ValueError(f"cannot take {n} pairs")
        if self.size < n:
            return None
        if n == 0:
            return PAIR_SCHEMA.empty_table()
        out, need = [], n
        while need:
            head = self.tables[0]
            if head.num_rows <= need:
                out.append(self.tables.popleft())
                need -= head.num_rows
            else:
                out.append(head.slice(0, need))
                self.tables[0] = head.slice(need)
                need = 0
        self.size -= n
        return pa.concat_tables(out).combine_chunks() if len(out) > 1 else out[0]
