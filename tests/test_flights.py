"""The stall watch: silent while results arrive; after `after_s` without one it says what the
driver waits on and which resources the actors need, then again every `after_s`."""

from __future__ import annotations

import logging

from cluster.driver.flights import JudgeFlight, RolloutFlight
from cluster.driver.progress import StallWatch
from core.config import Config


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_stall_watch_names_what_is_waited_for_and_the_resources(caplog):
    cfg = Config()
    cfg.rollout.resources = {"rollout": 1.0}
    clock = Clock()
    watch = StallWatch(cfg.actor_resources(), after_s=60, clock=clock)
    flights = [RolloutFlight(None, [0], None), RolloutFlight(None, [1], None), JudgeFlight([2], 0)]
    inflight = [f.what for f in flights]
    clock.now = 59
    assert watch.tick(False, inflight) is None
    clock.now = 30 + 59
    assert watch.tick(True, inflight) is None  # something arrived: the wait starts again
    clock.now = 89 + 61
    with caplog.at_level(logging.WARNING, logger="osp"):
        message = watch.tick(False, inflight)
    assert message.startswith("nothing has come back for 61s; waiting on 1 judge, 2 rollout.")
    assert "rollout {'CPU': 1.0, 'rollout': 1.0}" in message and "learner {'CPU': 1.0}" in message
    assert message in caplog.text
    clock.now += 30
    assert watch.tick(False, inflight) is None  # not again before another after_s
    clock.now += 31
    assert watch.tick(False, inflight).startswith("nothing has come back for 122s")
