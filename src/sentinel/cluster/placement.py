"""Replica placement for new partitions (Kafka's rack-unaware assignment), pure.

Partition p's preferred leader (``replicas[0]``) is broker (start + p) mod n, so leaders
spread round robin; its followers continue round robin from the leader with a shift that
grows every n partitions (as Kafka's ``nextReplicaShift``), so one broker's partitions
do not all follow to the same broker. Over a partial round (a count that is not a
multiple of n) that alone can leave replica counts two or more apart, so followers (never
leaders) are then moved, last partitions first, from the most to the least loaded broker
until replica counts differ by at most one.

``InvalidReplicationFactorError`` is the broker's (``broker/topics.py``, Kafka code 38):
the cluster imports it from there (``broker.topics`` does not import the cluster).
"""

from __future__ import annotations

from collections.abc import Sequence

from sentinel.broker.topics import InvalidReplicationFactorError
from sentinel.cluster.records import PartitionAssignment
from sentinel.errors import InvalidArgumentError
from sentinel.log.config import validate_partition_count

__all__ = ["InvalidReplicationFactorError", "default_replication_factor", "place"]


def default_replication_factor(brokers: int) -> int:
    """Kafka's usual default, capped by the brokers there are."""
    return min(3, brokers)


def place(
    brokers: Sequence[int], count: int, replication_factor: int, first_group: int, start: int
) -> tuple[PartitionAssignment, ...]:
    """Replicas for ``count`` new partitions with groups ``first_group``.. on ``brokers``
    (node ids, in any order: they are sorted).

    ``start`` is the first partition's position in the round robin: for a new topic any
    number (vary it per topic, e.g. its first group id, so that topics' leaders do not all
    start on the same broker); to add partitions to a topic, the topic's start plus its
    partition count continues its pattern. Guarantees: each partition has
    ``replication_factor`` distinct replicas; preferred leaders (``replicas[0]``) are
    spread round robin, so brokers' leader counts differ by at most one; the followers are
    then evened out so that brokers' replica counts differ by at most one (the tests check
    this for 1..7 brokers and 1..50 partitions; the move stops early, never fails, if it
    finds no follower to move).
    """
    nodes = sorted(set(brokers))
    n = len(nodes)
    if not 1 <= replication_factor <= n:
        raise InvalidReplicationFactorError(
            f"replication factor {replication_factor} needs that many brokers; there are {n}"
        )
    validate_partition_count(count)
    if first_group < 1 or start < 0:
        raise InvalidArgumentError(f"first group {first_group} must be >= 1 and start {start} >= 0")
    rows: list[list[int]] = []
    for p in range(start, start + count):
        first, shift = p % n, p // n
        rows.append(
            [first]
            + [(first + 1 + (shift + j) % (n - 1)) % n for j in range(replication_factor - 1)]
        )
    _even_out(n, rows)
    return tuple(
        PartitionAssignment(first_group + i, tuple(nodes[b] for b in row))
        for i, row in enumerate(rows)
    )


def _even_out(n: int, rows: list[list[int]]) -> None:
    """Move followers (never leaders) from the most to the least loaded broker, last
    partitions first, until replica counts differ by at most one or nothing can move."""
    load = [0] * n
    for row in rows:
        for b in row:
            load[b] += 1
    while _move_one(n, rows, load):
        pass


def _move_one(n: int, rows: list[list[int]], load: list[int]) -> bool:
    for hi in sorted(range(n), key=lambda b: -load[b]):
        for lo in sorted(range(n), key=lambda b: load[b]):
            if load[hi] - load[lo] < 2:
                break
            for row in reversed(rows):
                if hi in row[1:] and lo not in row:
                    row[row.index(hi)] = lo
                    load[hi] -= 1
                    load[lo] += 1
                    return True
    return False
