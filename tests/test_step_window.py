"""The metrics window's account of where a rollout actor's time goes: its tokens per wall second
split into the engine's speed, the share of a call spent sampling and the calls in flight
(cluster/driver/metrics.StepWindow), checked against figures computed by hand."""
from __future__ import annotations

import time

import pytest

from cluster.driver.metrics import StepWindow


def test_rollout_time_splits_into_engine_speed_call_share_and_calls_in_flight():
    """Would catch a factor computed on the wrong clock (the driver's seconds where the engine's
    belong, or the reverse) or a split whose product is not the wall rate."""
    window = StepWindow()
    # Two calls in a 10 s window: 300 + 500 tokens; 4 s + 4 s on the driver's clock, of which
    # the engine sampled 3 s + 2 s (the rest: a queued weight load, Ray's dispatch).
    window.rollout(300, 4.0, 3.0)
    window.rollout(500, 4.0, 2.0)
    window.start = time.perf_counter() - 10.0
    out, tokens = window.close()
    assert tokens == 800
    assert out["rollout_tokens_per_s"] == pytest.approx(80.0, rel=1e-3)  # 800 tokens / 10 s
    assert out["rollout/sampling_tokens_per_s"] == pytest.approx(100.0)  # 800 / (4 + 4)
    assert out["rollout/engine_tokens_per_s"] == pytest.approx(160.0)  # 800 / (3 + 2)
    assert out["rollout/sampling_share_of_call"] == pytest.approx(5 / 8)
    assert out["rollout/calls_in_flight"] == pytest.approx(0.8, rel=1e-3)  # 8 s of calls in 10 s
    product = out["rollout/engine_tokens_per_s"] * out["rollout/sampling_share_of_call"] * out["rollout/calls_in_flight"]
    assert product == pytest.approx(out["rollout_tokens_per_s"], rel=1e-9)


def test_a_window_without_rollouts_reports_no_rollout_split():
    """Would catch a division by an empty window's zero seconds showing up as a huge rate."""
    out, tokens = StepWindow().close()
    assert tokens == 0
    assert not any(key.startswith("rollout/") for key in out)
