"""What the command line's values mean: parsers (pure, raising ``ValueError`` with a
message for the user) and the click option callbacks built on them.

    -acks 0 | 1 | all | -1             -> 0, 1, "all"
    -config retention.ms=1000          -> ("retention.ms", "1000")
    -offset 42 | earliest | latest     -> 42, "earliest", "latest"
    -broker h1:9092,h2:9092            -> "h1:9092,h2:9092" (checked)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar

import click

__all__ = [
    "ACKS",
    "BROKER",
    "CONFIG",
    "OFFSET",
    "Acks",
    "OffsetSpec",
    "config_dict",
    "parse_acks",
    "parse_broker",
    "parse_config",
    "parse_offset",
]

T = TypeVar("T")
Acks = Literal[0, 1, "all"]
OffsetSpec = int | Literal["earliest", "latest"]


def parse_acks(text: str) -> Acks:
    """``0``, ``1``, ``all`` (``-1`` is Kafka's spelling of ``all``)."""
    value = text.strip().lower()
    if value == "0":
        return 0
    if value == "1":
        return 1
    if value in ("all", "-1"):
        return "all"
    raise ValueError(f"acks must be 0, 1 or all, not {text!r}")


def parse_config(text: str) -> tuple[str, str]:
    """``key=value`` (the value may hold ``=`` and be empty; the key may not)."""
    key, eq, value = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise ValueError(f"a topic config is key=value, not {text!r}")
    return key, value.strip()


def config_dict(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The pairs as a dict; a key given twice is an error, not a silent override."""
    out: dict[str, str] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"topic config {key!r} is given twice")
        out[key] = value
    return out


def parse_offset(text: str) -> OffsetSpec:
    """An offset >= 0, ``earliest`` or ``latest``."""
    value = text.strip().lower()
    if value in ("earliest", "beginning"):
        return "earliest"
    if value in ("latest", "end"):
        return "latest"
    try:
        offset = int(value)
    except ValueError:
        raise ValueError(
            f"offset must be a number >= 0, earliest or latest, not {text!r}"
        ) from None
    if offset < 0:
        raise ValueError(f"offset must be >= 0, not {offset}")
    return offset


def parse_broker(text: str) -> str:
    """``host:port`` (or several, comma-separated), checked and stripped."""
    addresses = [item.strip() for item in text.split(",") if item.strip()]
    if not addresses:
        raise ValueError("the broker address is empty")
    for address in addresses:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"broker address {address!r} is not host:port")
    return ",".join(addresses)


def _callback(parser: Callable[[str], T]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click option callback running ``parser`` on the value (each value of a
    ``multiple`` option); its ``ValueError`` becomes a usage error naming the option."""

    def convert(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        try:
            if isinstance(value, tuple):
                return tuple(parser(v) if isinstance(v, str) else v for v in value)
            return parser(value) if isinstance(value, str) else value
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None

    return convert


ACKS = _callback(parse_acks)
CONFIG = _callback(parse_config)
OFFSET = _callback(parse_offset)
BROKER = _callback(parse_broker)
