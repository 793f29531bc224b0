"""Kafka's embedded consumer protocol: what "consumer" group members put in the opaque
bytes of JoinGroup (a subscription) and SyncGroup (an assignment).

The broker never needs these bytes to work: it hands them between members verbatim. It
decodes them only to know which topics a group reads (partition changes, lag, describe)
and encodes them for members of the gRPC door, whose assignment the broker computed, so
that Kafka tools can describe those groups too. The layouts (every later version only
appends fields, so a reader of an unknown version reads the prefix it knows)::

    Subscription  version int16, topics [string], user_data bytes, (v1+) owned partitions, ...
    Assignment    version int16, partitions [(topic string, partitions [int32])], user_data bytes
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sentinel.protocol.kafka import wire

__all__ = ["decode_assignment", "decode_subscription", "encode_assignment", "encode_subscription"]


def decode_subscription(data: bytes) -> tuple[str, ...]:
    """The subscribed topics; ``DecodeError`` if ``data`` is not a subscription."""
    r = wire.Reader(data)
    r.int16()
    return tuple(_string(r) for _ in range(_count(r)))


def decode_assignment(data: bytes) -> dict[str, tuple[int, ...]]:
    """topic -> partitions; empty for empty ``data`` (a member given nothing);
    ``DecodeError`` if ``data`` is not an assignment."""
    if not data:
        return {}
    r = wire.Reader(data)
    r.int16()
    out: dict[str, tuple[int, ...]] = {}
    for _ in range(_count(r)):
        topic = _string(r)
        out[topic] = out.get(topic, ()) + tuple(r.int32() for _ in range(_count(r)))
    return out


def encode_subscription(topics: Sequence[str]) -> bytes:
    """Version 0, no user data."""
    out = bytearray(b"\x00\x00")
    wire.write_array_length(out, len(topics), False)
    for topic in topics:
        wire.write_string(out, topic, False)
    wire.write_bytes(out, None, False)
    return bytes(out)


def encode_assignment(partitions: Mapping[str, Sequence[int]]) -> bytes:
    """Version 0, no user data."""
    out = bytearray(b"\x00\x00")
    wire.write_array_length(out, len(partitions), False)
    for topic, parts in partitions.items():
        wire.write_string(out, topic, False)
        wire.write_array_length(out, len(parts), False)
        for p in parts:
            out += p.to_bytes(4, "big", signed=True)
    wire.write_bytes(out, None, False)
    return bytes(out)


def _count(r: wire.Reader) -> int:
    return max(r.array_length(False), 0)


def _string(r: wire.Reader) -> str:
    return r.string(False) or ""
