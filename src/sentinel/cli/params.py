"""What the command line's values mean: parsers (pure, raising ``ValueError`` with a
message for the user) and the click option callbacks built on them.

    -acks 0 | 1 | all | -1             -> 0, 1, "all"
    -config retention.ms=1000          -> ("retention.ms", "1000")
    -offset 42 | earliest | latest     -> 42, "earliest", "latest"
    -offset -10                        -> Tail(10): the last ten of each partition
    -offset @1700000000000 | @2026-01-02T03:04:05Z   -> At(ms)
    -since 5m | 2h | 1d | 2026-01-02T03:04         -> At(now - 5 min), At(that time)
    -header trace=abc                  -> ("trace", b"abc")
    -broker h1:9092,h2 | localhost     -> "h1:9092,h2:9092", "localhost:9092"

Times without a zone are UTC.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import click

__all__ = [
    "ACKS",
    "BROKER",
    "CONFIG",
    "DEFAULT_PORT",
    "HEADER",
    "OFFSET",
    "Acks",
    "At",
    "OffsetSpec",
    "Tail",
    "config_dict",
    "parse_acks",
    "parse_broker",
    "parse_config",
    "parse_header",
    "parse_offset",
    "parse_since",
    "parse_time",
]

DEFAULT_PORT = 9092


@dataclass(frozen=True, slots=True)
class Tail:
    """The last ``count`` records of each partition (``-offset -count``)."""

    count: int


@dataclass(frozen=True, slots=True)
class At:
    """The first record at or after ``timestamp_ms`` in each partition."""

    timestamp_ms: int


T = TypeVar("T")
Acks = Literal[0, 1, "all"]
OffsetSpec = int | Literal["earliest", "latest"] | Tail | At


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
    """An offset >= 0, ``-N`` (the last N), ``earliest``/``beginning``, ``latest``/``end``,
    or ``@TIME`` (epoch milliseconds or an ISO-8601 time)."""
    value = text.strip().lower()
    if value in ("earliest", "beginning"):
        return "earliest"
    if value in ("latest", "end"):
        return "latest"
    if value.startswith("@"):
        return At(parse_time(text.strip()[1:]))
    try:
        offset = int(value)
    except ValueError:
        raise ValueError(
            f"offset must be a number, -N (the last N), earliest, end or @TIME, not {text!r}"
        ) from None
    if offset < 0:
        return Tail(-offset)
    return offset


def parse_time(text: str) -> int:
    """Epoch milliseconds, or an ISO-8601 date/time (UTC unless it has a zone), as ms."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"a time is epoch milliseconds or ISO 8601 (2026-01-02T03:04:05Z), not {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_since(text: str, now_ms: int) -> At:
    """``5m``, ``90s``, ``2h``, ``1d`` ago (from ``now_ms``), or a time as ``parse_time``."""
    match = _DURATION.match(text.strip().lower())
    if match:
        return At(now_ms - int(float(match.group(1)) * _UNIT_MS[match.group(2)]))
    try:
        return At(parse_time(text))
    except ValueError:
        raise ValueError(
            f"-since takes a duration (30s, 5m, 2h, 1d) or a time (2026-01-02T03:04:05Z), "
            f"not {text!r}"
        ) from None


def parse_header(text: str) -> tuple[str, bytes]:
    """``key=value`` as a record header (the value may be empty; the key may not)."""
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise ValueError(f"a header is key=value, not {text!r}")
    return key, value.encode("utf-8")


def parse_broker(text: str) -> str:
    """``host:port`` (or several, comma-separated), checked and stripped; a host
    without a port means port 9092, as Kafka's tools."""
    addresses = [item.strip() for item in text.split(",") if item.strip()]
    if not addresses:
        raise ValueError("the broker address is empty")
    for index, address in enumerate(addresses):
        if ":" not in address:
            address = addresses[index] = f"{address}:{DEFAULT_PORT}"
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
HEADER = _callback(parse_header)
