"""The throughput bench's arithmetic (bench/pairs_per_second.py, bench/invocations.py,
bench/run_watch.py): which steps count as steady, the median and range over invocations, the
ratio of the medians, the CPU window by role. Light: no engine starts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # the bench scripts import each other by name

from invocations import spread, summarise  # noqa: E402
from pairs_per_second import PAIRS_PER_STEP, steady_figures  # noqa: E402
from run_watch import window  # noqa: E402


def test_steady_window_starts_at_the_end_of_the_last_warmup_step():
    """Steps 1-2 are warm-up; the window runs from step 2's end (t=20) to step 5's end (t=42):
    3 steps of PAIRS_PER_STEP pairs in 22 s. Catches an off-by-one that counts step 2 itself
    (4 steps) or starts at step 3's end (2 steps), and a first-step figure taken from the wrong step."""
    ends = {1: 10.0, 2: 20.0, 3: 22.0, 4: 32.0, 5: 42.0}
    figures = steady_figures(ends, warmup=2)
    assert figures["steady_pairs_per_s"] == pytest.approx(3 * PAIRS_PER_STEP / 22.0)
    assert figures["steady_step_s"] == [2.0, 10.0, 10.0]
    assert figures["first_steady_step_s"] == 2.0
    assert figures["rest_mean_step_s"] == 10.0


def test_ratio_is_of_the_medians_not_the_median_of_ratios():
    """osp 0.2/0.1/0.3 against TRL 0.05/0.04/0.10 in invocations 1-3: the ratio of the medians
    is 0.2/0.05 = 4.0; the median of the per-invocation ratios (4.0, 2.5, 3.0) would be 3.0.
    Catches pairing the two sides by invocation, which their orders do not justify."""
    def row(values):
        return [{"steady_pairs_per_s": v, "total_pairs_per_s": v / 2} for v in values]

    rows = summarise({"osp-k2": row([0.2, 0.1, 0.3]), "trl": row([0.05, 0.04, 0.10])})
    assert rows["osp-k2"]["steady_pairs_per_s"] == {"values": [0.2, 0.1, 0.3], "median": 0.2, "range": [0.1, 0.3]}
    assert rows["osp-k2"]["over_trl"] == {"steady_pairs_per_s": 4.0, "total_pairs_per_s": 4.0}
    assert "over_trl" not in rows["trl"]
    assert len(rows["trl"]["invocations"]) == 3


def test_spread_of_an_even_count_is_the_middle_pair_mean():
    assert spread([0.3, 0.1, 0.4, 0.2]) == {"values": [0.3, 0.1, 0.4, 0.2], "median": 0.25, "range": [0.1, 0.4]}


def test_cpu_window_by_role():
    """Two learner ranks keep distinct names; a process that started inside the window counts
    from zero; a thread counts as busy from 5% of the wall time (0.5 s of 10 s), not below."""
    first = {10: {"role": "LearnerRank", "cpu_s": 100.0, "threads": {1: 50.0, 2: 1.0}},
             11: {"role": "LearnerRank", "cpu_s": 10.0, "threads": {3: 5.0}}}
    last = {10: {"role": "LearnerRank", "cpu_s": 108.0, "threads": {1: 57.5, 2: 1.4}},
            11: {"role": "LearnerRank", "cpu_s": 12.0, "threads": {3: 7.0}},
            12: {"role": "JudgeActor", "cpu_s": 3.0, "threads": {4: 0.5, 5: 2.5}}}
    out = window(first, last, wall_s=10.0)
    assert out["LearnerRank"] == {"cpu_s": 8.0, "cores": 0.8, "os_threads": 2, "busy_threads": 1}
    assert out["LearnerRank#2"] == {"cpu_s": 2.0, "cores": 0.2, "os_threads": 1, "busy_threads": 1}
    assert out["JudgeActor"] == {"cpu_s": 3.0, "cores": 0.3, "os_threads": 2, "busy_threads": 2}
