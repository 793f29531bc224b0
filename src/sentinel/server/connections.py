"""``sentinel_active_connections``: the client TCP connections open to the gRPC port.

gRPC-Python reports no connection events, so the figure is read from the kernel when
Prometheus scrapes: the sockets in ``/proc/net/tcp`` and ``/proc/net/tcp6`` that are
ESTABLISHED with the broker's port as their local port. Only the broker listens on that
port (no ``SO_REUSEPORT``), so each such socket is one client connection accepted by it,
whether or not a call is running on it (a gRPC channel keeps one connection open).
Where ``/proc`` is not there (not Linux) the figure is -1: unknown.

Line format (``/proc/net/tcp``)::

    sl  local_address rem_address   st ...
    0: 0100007F:2384 0100007F:D3A2 01 ...      (hex port, st 01 = ESTABLISHED)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

ESTABLISHED = "01"
PROC_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def count_established(lines: Iterable[str], port: int) -> int:
    """ESTABLISHED sockets whose local port is ``port`` in ``/proc/net/tcp*`` lines."""
    count = 0
    for line in lines:
        parts = line.split()
        if len(parts) < 4 or not parts[0].endswith(":"):
            continue  # the header
        _address, _, local_port = parts[1].rpartition(":")
        if parts[3] == ESTABLISHED and int(local_port, 16) == port:
            count += 1
    return count


def _read_proc(path: str) -> list[str]:
    with open(path) as table:
        return table.readlines()


class ConnectionCount:
    """A callable for a gauge: the connections open to ``port`` now (-1: unknown)."""

    def __init__(
        self, port: Callable[[], int], read: Callable[[str], list[str]] = _read_proc
    ) -> None:
        self._port = port
        self._read = read

    def __call__(self) -> float:
        port = self._port()
        if port == 0:
            return 0.0
        total, seen = 0, False
        for path in PROC_TABLES:
            try:
                lines = self._read(path)
            except OSError:
                continue
            seen = True
            total += count_established(lines, port)
        return float(total) if seen else -1.0
