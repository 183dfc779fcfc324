"""Ports and addresses: the one place that picks a free port, and where a process group's
TCP store and gloo sockets listen.

torch's TCPStore listens on every interface (`*:<port>`) and gloo on the interface of the
host's name unless told otherwise. Here the store's server socket is bound by us to the node's
own address and handed to TCPStore (`master_listen_fd`), and gloo is pointed at the interface
that carries that address (GLOO_SOCKET_IFNAME): 127.0.0.1 and `lo` on a local cluster, the
node's IP and its interface on a real one. Nothing listens beyond what the group needs.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta


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


def interface_of(address: str) -> str | None:
    """The network interface that carries `address` (an IPv4 address of this machine), or None."""
    import psutil  # a named dependency; only processes that form a group need it

    for name, addresses in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == address for a in addresses):
            return name
    return None


def bind_gloo_to(address: str) -> None:
    """gloo listens and connects on the interface carrying `address` (this node's address)."""
    interface = interface_of(address)
    if interface is not None:
        os.environ["GLOO_SOCKET_IFNAME"] = interface


def tcp_store(host: str, port: int, rank: int, world_size: int, timeout: timedelta):
    """A TCPStore for a process group: rank 0 serves it on `host`:`port` only (a socket bound
    here, not torch's wildcard listener); the others connect to it."""
    import torch.distributed as dist  # lazy: core is imported by processes that never form a group

    if rank != 0:
        return dist.TCPStore(host, port, world_size, False, timeout)
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, port))
    server.listen(128)
    # detach(): the store owns the socket from here and closes it when it goes.
    return dist.TCPStore(host, port, world_size, True, timeout, master_listen_fd=server.detach(),
                         wait_for_workers=False)
