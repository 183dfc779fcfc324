"""Both sides of the weight-sync protocol (core/weights.py) implement it as declared:
the same methods with the same parameters, so the driver's calls match what actors accept."""

from __future__ import annotations

import inspect

import pytest

from actors.rollout import RolloutActor
from core.weights import WeightReceiver, WeightSender
from learner.rank import LearnerRank


def _methods(protocol) -> list[str]:
    return [name for name, member in vars(protocol).items() if inspect.isfunction(member) and not name.startswith("_")]


@pytest.mark.parametrize("protocol, side", [(WeightSender, LearnerRank), (WeightReceiver, RolloutActor)])
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


def _remote_calls(source: str, handles: tuple[str, ...]) -> set[str]:
    """Method names called as `<handle>.<method>.remote(` on the named handle variables."""
    import ast

    calls = set()
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "remote"
                and isinstance(node.func.value, ast.Attribute)):
            owner = node.func.value.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", None)
            if isinstance(owner, ast.Subscript):  # self.ranks[0].free_port.remote()
                name = getattr(owner.value, "attr", None)
            if name in handles:
                calls.add(node.func.value.attr)
    return calls


def test_the_driver_calls_nothing_on_either_side_that_the_protocol_does_not_declare():
    """The push code (cluster/driver/weight_sync.py: the two syncs and check_push) reaches the
    ranks and the engines only through WeightSender and WeightReceiver. Would catch a driver call
    added to a sync (or an actor method renamed) without the contract that both sides are held to."""
    import cluster.driver.weight_sync as weights

    source = inspect.getsource(weights)
    sender_calls = _remote_calls(source, ("ranks", "r"))
    receiver_calls = _remote_calls(source, ("engines", "members", "e"))
    assert sender_calls and receiver_calls
    assert sender_calls <= set(_methods(WeightSender)), sender_calls - set(_methods(WeightSender))
    assert receiver_calls <= set(_methods(WeightReceiver)), receiver_calls - set(_methods(WeightReceiver))
    assert {"export_weights", "broadcast_weights", "logprobs_of"} <= sender_calls
    assert {"update_weights", "receive_broadcast", "logprobs_of"} <= receiver_calls
