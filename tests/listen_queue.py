"""A burst of connects against a listening port, and the kernel's count of connections
it dropped because a listen queue was full (``TcpExt: ListenOverflows``, all sockets of
the machine): what a listener whose queue is too short loses."""

from __future__ import annotations

import socket

BURST = 600
"""Connections opened back to back, faster than a loop accepts them one wake-up at a time:
with asyncio's default listen queue (100) about 1 in 100 was dropped, and its client
waited for a SYN retransmit (1 s)."""


def listen_overflows() -> int:
    with open("/proc/net/netstat") as netstat:
        lines = [line.split() for line in netstat if line.startswith("TcpExt:")]
    names, values = lines[0], lines[1]
    return int(values[names.index("ListenOverflows")])


def burst_overflows(port: int, count: int = BURST) -> int:
    """Open ``count`` connections to 127.0.0.1:``port`` back to back, then close them;
    the listen queue overflows meanwhile."""
    before = listen_overflows()
    sockets = []
    try:
        for _ in range(count):
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=30))
    finally:
        for sock in sockets:
            sock.close()
    return listen_overflows() - before
