"""Loopback ports for test servers that are restarted on the ports they had.

A port the kernel picks (bind to port 0) lies in its ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``, 32768-60999 by default on Linux), the range
it also draws every outgoing connection's source port from. A broker killed and started
again on such a port can find it taken meanwhile by some connection's source port
("port 46317 is in use"). The ports picked here lie outside that range, below its low
end (``[FLOOR, low)``), where the kernel never hands one out by itself::

    1024      FLOOR (10000)            low (32768)           high (60999)   65535
      |  ...  |==== picked from here ====|---- kernel's ephemeral ----|  ...  |

If the range leaves nothing below it, the ports above its high end are used, then
those from 1024. Without ``/proc`` (not Linux) the range assumed spans Linux's and the
IANA default (49152-65535) alike: 32768-65535.

Each candidate is checked free by binding ``127.0.0.1`` the way the broker's
listeners do (``SO_REUSEADDR``, then ``listen``) and also without ``SO_REUSEADDR``
(which a connection lingering in TIME_WAIT also refuses), then released. A
:class:`PortPicker` never hands out one port twice: a stopped broker's ports stay its
own until it starts again.
"""

from __future__ import annotations

import functools
import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: Assumed when the range cannot be read: Linux's default low end to the top.
FALLBACK_EPHEMERAL = (32768, 65535)
FLOOR = 10000
LOWEST = 1024  # below: privileged ports
HIGHEST = 65535
HOST = "127.0.0.1"
#: Candidates tried per port asked for before giving up.
TRIES_PER_PORT = 200


class NoFreePortError(RuntimeError):
    """This machine has no free port left outside its ephemeral range (or too few)."""


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's ephemeral port range ``(low, high)``, both included; the fallback
    when ``path`` is missing or does not hold two ports in order."""
    try:
        low, high = (int(field) for field in path.read_text().split())
    except (OSError, ValueError):
        return FALLBACK_EPHEMERAL
    if not LOWEST <= low <= high <= HIGHEST:
        return FALLBACK_EPHEMERAL
    return low, high


def candidates(ephemeral: tuple[int, int]) -> range:
    """Where ports are picked from, given the ephemeral range: below it from ``FLOOR``;
    failing that, above it; failing that, below it from ``LOWEST``."""
    low, high = ephemeral
    for span in (range(FLOOR, low), range(high + 1, HIGHEST + 1)):
        if span:
            return span
    return range(LOWEST, low)


def bindable(port: int, host: str = HOST) -> bool:
    """Whether a listener could bind ``host:port`` now, with ``SO_REUSEADDR`` as the
    broker binds and without it."""
    for reuse in (True, False):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            if reuse:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
                probe.listen(1)
            except OSError:
                return False
    return True


class PortPicker:
    """Picks free loopback ports from ``span`` (default: :func:`candidates` of the
    ephemeral range read from ``/proc``) at random (``rng``), never one it has handed
    out before."""

    def __init__(
        self,
        rng: random.Random | None = None,
        span: range | None = None,
        host: str = HOST,
    ) -> None:
        self.rng = rng if rng is not None else random.Random()
        self.span = span if span is not None else candidates(ephemeral_range())
        self.host = host
        self.handed_out: set[int] = set()

    def pick(self, count: int = 1) -> list[int]:
        """``count`` distinct ports, each free right now and never returned before.
        Raises :class:`NoFreePortError` when too few are found."""
        ports: list[int] = []
        for _ in range(TRIES_PER_PORT * count if self.span else 0):
            if len(ports) == count:
                break
            port = self.rng.choice(self.span)
            if port in self.handed_out or not bindable(port, self.host):
                continue
            self.handed_out.add(port)
            ports.append(port)
        if len(ports) < count:
            raise NoFreePortError(
                f"found {len(ports)} of {count} free ports on {self.host} in "
                f"{self.span.start}-{self.span.stop - 1} (the ports outside the "
                f"ephemeral range not handed out yet)"
            )
        return ports


@functools.cache
def default_picker() -> PortPicker:
    """This process's picker: one, so that no port is handed out twice."""
    return PortPicker()


def pick_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports outside the ephemeral range, for servers
    that are restarted on them; none is returned twice in this process."""
    return default_picker().pick(count)


def pick_port() -> int:
    """One port, as :func:`pick_ports`."""
    (port,) = pick_ports(1)
    return port
