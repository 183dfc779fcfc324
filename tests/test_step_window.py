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


def test_the_window_reports_the_samples_mean_repeated_share():
    """Would catch the repeated share summed but not divided (or divided by the judge calls, not
    the responses): two calls, 3 + 1 responses whose repeated shares sum to 1.2 and 0.4."""
    window = StepWindow()
    window.judged({"judge_s": 1.0, "responses": 3.0, "truncated": 1.0, "repeated": 1.2})
    window.judged({"judge_s": 1.0, "responses": 1.0, "truncated": 0.0, "repeated": 0.4})
    out, _ = window.close()
    assert out["samples/repeated_share"] == pytest.approx(1.6 / 4)
    assert out["samples/truncated"] == pytest.approx(1 / 4)
