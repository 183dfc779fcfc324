"""Ports and addresses: the one place that picks a free port for a TCP store."""

from __future__ import annotations

import socket


def free_port(host: str = "") -> int:
    """A TCP port free on this machine now (the OS picks it; closed again before returning, so
    another process could take it first: callers bind it at once)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def node_address_and_free_port() -> tuple[str, int]:
    """This Ray node's address and a free port on it: where a TCP store listens for its peers
    (the learner ranks' DeepSpeed group, the weight-broadcast group)."""
    import ray  # lazy: core is imported by processes that never join Ray (tests, scripts)

    return ray.util.get_node_ip_address(), free_port()
