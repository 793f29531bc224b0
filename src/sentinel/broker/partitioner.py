"""Moved to ``sentinel.partitioning`` (shared by the client and the broker); this name
stays for existing imports."""

from sentinel.partitioning import (
    Partitioner,
    RoundRobinPartitioner,
    StickyPartitioner,
    default_partition,
    murmur2,
    to_positive,
)

__all__ = [
    "Partitioner",
    "RoundRobinPartitioner",
    "StickyPartitioner",
    "default_partition",
    "murmur2",
    "to_positive",
]
