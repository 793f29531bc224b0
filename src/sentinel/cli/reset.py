"""``groups -reset-offsets``: where a group's committed offsets go, as
kafka-consumer-groups computes it.

    -to-earliest      each partition's log start offset
    -to-latest        each partition's end (the high watermark)
    -to-offset N      N, brought into the partition's range
    -to-datetime T    the first offset at or after time T (none: the end)
    -shift-by N       the committed offset plus N (may be negative), brought into range;
                      a partition without a committed offset is an error, as in Kafka

``plan_reset`` is pure: it takes each partition's range, the committed offsets and (for
``-to-datetime``) the offsets found by time, and returns one ``Move`` per partition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from sentinel.cli.errors import CliError
from sentinel.client.types import PartitionDescription

__all__ = ["Move", "ResetTarget", "moves_dict", "moves_view", "plan_reset"]


@dataclass(frozen=True, slots=True)
class ResetTarget:
    """One of the -to-* / -shift-by scopes: ``kind`` and its number (offset, ms, shift)."""

    kind: str  # earliest | latest | offset | datetime | shift
    value: int = 0


@dataclass(frozen=True, slots=True)
class Move:
    """One partition's committed offset before (-1: none) and after the reset."""

    topic: str
    partition: int
    current: int
    new: int


def _clamp(offset: int, p: PartitionDescription) -> int:
    return min(max(offset, p.log_start_offset), p.high_watermark)


def plan_reset(
    topic: str,
    partitions: Sequence[PartitionDescription],
    committed: Mapping[int, int],
    target: ResetTarget,
    by_time: Mapping[int, int] | None = None,
) -> list[Move]:
    """The move of each partition; ``by_time[p]``: the offset found for the datetime
    (-1: none after it)."""
    moves = []
    for p in partitions:
        current = committed.get(p.partition, -1)
        if target.kind == "earliest":
            new = p.log_start_offset
        elif target.kind == "latest":
            new = p.high_watermark
        elif target.kind == "offset":
            new = _clamp(target.value, p)
        elif target.kind == "datetime":
            found = (by_time or {}).get(p.partition, -1)
            new = p.high_watermark if found < 0 else _clamp(found, p)
        elif target.kind == "shift":
            if current < 0:
                raise CliError(
                    f"cannot shift the offset of {topic}/{p.partition}: "
                    "the group has no committed offset there"
                )
            new = _clamp(current + target.value, p)
        else:
            raise ValueError(f"unknown reset target {target.kind!r}")
        moves.append(Move(topic, p.partition, current, new))
    return moves


def moves_dict(group: str, moves: Sequence[Move], executed: bool) -> dict[str, Any]:
    return {
        "group_id": group,
        "executed": executed,
        "partitions": [
            {
                "topic": m.topic,
                "partition": m.partition,
                "current_offset": None if m.current < 0 else m.current,
                "new_offset": m.new,
            }
            for m in moves
        ],
    }


def moves_view(moves: Sequence[Move]) -> Table:
    table = Table(box=None, pad_edge=False)
    for name in ("TOPIC", "PARTITION", "CURRENT OFFSET", "NEW OFFSET"):
        table.add_column(name, justify="left" if name == "TOPIC" else "right")
    for m in moves:
        current = "-" if m.current < 0 else str(m.current)
        table.add_row(m.topic, str(m.partition), current, str(m.new))
    return table
