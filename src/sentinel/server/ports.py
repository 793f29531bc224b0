"""Whether the broker can listen where it is told to, said in one line naming the setting.

The ports are tried before recovery starts (a broker that must fail should fail in
a second, not after replaying its logs) by binding a socket the way the listeners do
(``SO_REUSEADDR``, no ``SO_REUSEPORT``) and closing it. Without this, a port in use
reached the operator as a gRPC C-core log line, or as ``[Errno 98] Address already in
use`` without the port. A listener that loses a race for the port afterwards is
reported by ``unavailable`` in the same words.
"""

from __future__ import annotations

import errno
import socket

from sentinel.config import setting_of_field
from sentinel.errors import StateError


class PortUnavailableError(StateError):
    """The broker cannot listen on a configured address: in use, or not allowed."""


def unavailable(host: str, port: int, field: str, cause: str) -> PortUnavailableError:
    setting = setting_of_field(field)
    return PortUnavailableError(
        f"cannot listen on {host}:{port} ({setting.flag} / {setting.env}): {cause}"
    )


def in_use(host: str, port: int, field: str) -> PortUnavailableError:
    return unavailable(
        host, port, field, f"port {port} is in use; stop what holds it or choose another port"
    )


def check_listen(host: str, port: int, field: str) -> None:
    """Raise ``PortUnavailableError`` unless ``host:port`` can be listened on now.
    ``field``: the ``BrokerConfig`` field that gave the port (named in the error)."""
    if port == 0:
        return  # any free port: always possible
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise unavailable(host, port, field, f"unknown host ({exc.strerror})") from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
            probe.listen(1)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise in_use(host, port, field) from None
            raise unavailable(host, port, field, exc.strerror or str(exc)) from None
