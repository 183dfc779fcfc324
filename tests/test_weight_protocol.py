"""Both sides of the weight-sync protocol (core/weight_protocol.py) implement it as declared:
the same methods with the same parameters, so the driver's calls match what actors accept."""

from __future__ import annotations

import inspect

import pytest

from actors.rollout import RolloutWorker
from core.weight_protocol import WeightReceiver, WeightSender
from learner.rank import LearnerRank


def _methods(protocol) -> list[str]:
    return [name for name, member in vars(protocol).items() if inspect.isfunction(member) and not name.startswith("_")]


@pytest.mark.parametrize("protocol, side", [(WeightSender, LearnerRank), (WeightReceiver, RolloutWorker)])
def test_each_side_implements_the_protocol(protocol, side):
    assert _methods(protocol), protocol
    for name in _methods(protocol):
        declared = inspect.signature(getattr(protocol, name))
        implemented = inspect.signature(getattr(side, name))
        # Ray's actor tracing adds `_ray_trace_ctx` to the class's methods once it wraps the class.
        params = [p for p in implemented.parameters if p != "_ray_trace_ctx"]
        assert params == list(declared.parameters), (side.__name__, name)
        for param, spec in declared.parameters.items():
            assert implemented.parameters[param].default == spec.default, (side.__name__, name, param)
