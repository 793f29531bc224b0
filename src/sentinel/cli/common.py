"""What every subcommand shares: the ``-broker`` and ``-json`` options, the deadline for
reaching the broker, the admin client, and turning client errors into one line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from sentinel.cli.errors import explain
from sentinel.cli.params import BROKER
from sentinel.client import Admin

__all__ = [
    "CONNECT_TIMEOUT_S",
    "DEFAULT_BROKER",
    "admin_client",
    "broker_options",
    "reporting",
]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_BROKER = "127.0.0.1:9092"
CONNECT_TIMEOUT_S = 5.0
"""How long a call that reaches the broker may take before we say it cannot be reached.
Admin calls are one quick RPC each, so it bounds every one of them."""


def broker_options(command: F) -> F:
    """``-broker`` (env ``SENTINEL_BROKER``) and ``-json``."""
    command = click.option(
        "--json",
        "json_mode",
        is_flag=True,
        help="Print JSON (one document per line) instead of tables.",
    )(command)
    return click.option(
        "--broker",
        callback=BROKER,
        metavar="HOST:PORT",
        envvar="SENTINEL_BROKER",
        default=DEFAULT_BROKER,
        show_default=True,
        show_envvar=True,
        help="Broker address, host:port (several: comma-separated).",
    )(command)


@contextlib.contextmanager
def reporting(broker: str) -> Iterator[None]:
    """Turn the client's expected failures into ``CliError`` (one line, exit 1 or 2)."""
    try:
        yield
    except Exception as exc:
        reported = explain(exc, broker)
        if reported is None or reported is exc:
            raise
        raise reported from None


@contextlib.contextmanager
def admin_client(broker: str) -> Iterator[Admin]:
    """An ``Admin`` whose every call is bounded by ``CONNECT_TIMEOUT_S``."""
    with reporting(broker):
        admin = Admin(broker, request_timeout_ms=int(CONNECT_TIMEOUT_S * 1000))
        try:
            yield admin
        finally:
            admin.close()
