"""The answer shape of Kafka's per-partition group APIs (OffsetCommit, OffsetDelete):
for each topic of the request, for each of its partitions, the partition's error code."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar

__all__ = ["by_topic"]

T = TypeVar("T")


class _RequestPartition(Protocol):
    @property
    def partition_index(self) -> int: ...


class _RequestTopic(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def partitions(self) -> Iterable[Any]: ...


def by_topic(
    topics: Iterable[_RequestTopic],
    codes: Mapping[tuple[str, int], int],
    topic_cls: Callable[..., T],
    partition_cls: Callable[..., Any],
) -> tuple[T, ...]:
    """One ``topic_cls(name=, partitions=)`` per requested topic, in request order, each
    holding one ``partition_cls(partition_index=, error_code=)`` per requested partition,
    its code from ``codes``."""
    return tuple(
        topic_cls(
            name=t.name,
            partitions=tuple(
                partition_cls(
                    partition_index=p.partition_index,
                    error_code=codes[(t.name, p.partition_index)],
                )
                for p in t.partitions
            ),
        )
        for t in topics
    )
