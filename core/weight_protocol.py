"""The weight-sync protocol: what the driver (cluster/weight_sync.py) calls on each side.

Two transports share it. The object store: rank 0 exports a `core.weight_payload` dict and
every engine loads it (`export_weights` → `update_weights`). A broadcast group (NCCL on GPU,
gloo on CPU; core/weight_group.py): rank 0 is the root, engine i joins as rank i + 1, and a
push is one broadcast per dtype (`join_weight_group`, `weight_spec`, `broadcast_weights` →
`receive_broadcast`). tests/test_weight_protocol.py checks both sides against these.
"""

from __future__ import annotations

from typing import Any, Protocol

from core.weight_group import Spec


class WeightSender(Protocol):
    """The learner side: every rank (learner/rank.LearnerRank); only rank 0 returns values."""

    def export_weights(self, payload: str = "full") -> dict[str, Any] | None:
        """{"ref": [ref of the payload], "bytes": …, "export_s": …} on rank 0."""

    def free_port(self) -> tuple[str, int]:
        """The address and a free port of rank 0's node: the broadcast group's TCP store."""

    def join_weight_group(self, host: str, port: int, world_size: int, backend: str) -> bool:
        """Join as the group's root (rank 0)."""

    def weight_spec(self) -> Spec | None:
        """(name, dtype, shape) of every tensor, in broadcast order."""

    def broadcast_weights(self) -> dict[str, float] | None:
        """Broadcast the merged weights; returns once every member has them."""


class WeightReceiver(Protocol):
    """The engine side: a rollout actor (actors/rollout.RolloutWorker)."""

    def update_weights(self, payload: bytes | dict | list, version: int) -> dict[str, float]:
        """Load a payload (passed as [ref]) and stamp `version`."""

    def join_weight_group(self, host: str, port: int, rank: int, world_size: int, backend: str) -> bool:
        """Join the broadcast group as `rank` (≥ 1)."""

    def receive_broadcast(self, spec: Spec, version: int) -> dict[str, float]:
        """Receive one push (every tensor of `spec`) and stamp `version`."""
