"""Checks of request fields that every front door shares (gRPC today, Kafka next).

The broker service calls them before it acts, so a request with a field out of range
changes nothing and gets the typed error Kafka would give.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from sentinel.broker.topics import UnknownTopicOrPartitionError
from sentinel.errors import CallerError, InvalidArgumentError
from sentinel.log.config import InvalidPartitionsError

ANY_PARTITION = -1
"""A produce to partition -1: the broker picks (by key, else round robin)."""

BROKER_DEFAULT = -1
"""CreateTopic with -1 partitions or replication factor: the broker's default (as Kafka's
CreateTopics v4+)."""

NO_OFFSET = -1
"""A committed offset of -1: "no position" (Kafka's OffsetCommit allows it)."""


class Acks(enum.Enum):
    NONE = 0
    LEADER = 1
    ALL = -1

    @classmethod
    def parse(cls, value: int) -> Acks:
        """Kafka's acks field: 0, 1 or -1 (all)."""
        try:
            return cls(value)
        except ValueError:
            raise InvalidRequiredAcksError(f"acks={value} is not one of 0, 1 or -1 (all)") from None


class InvalidRequiredAcksError(CallerError):
    """The acks of a produce is not 0, 1 or all. Kafka's INVALID_REQUIRED_ACKS."""

    kafka_code = 21
    code_name = "INVALID_REQUIRED_ACKS"


class InvalidCommitOffsetError(InvalidArgumentError):
    """A committed offset is negative and not -1 (no position). Answered INVALID_REQUEST."""


def check_produce_partition(partition: int) -> None:
    if partition < ANY_PARTITION:
        raise UnknownTopicOrPartitionError(
            f"partition {partition} does not exist (-1 lets the broker pick a partition)"
        )


def topic_shape(partitions: int, default: int) -> int:
    """The partition count a CreateTopic asks for: -1 is the broker's default."""
    if partitions == BROKER_DEFAULT:
        return default
    if partitions < 1:
        raise InvalidPartitionsError(
            f"a topic needs at least one partition, got {partitions} (-1: the broker's default)"
        )
    return partitions


def check_commit_offsets(offsets: Iterable[tuple[str, int, int]]) -> None:
    """``(topic, partition, offset)`` triples: an offset is >= 0 or exactly -1."""
    for topic, partition, offset in offsets:
        if offset < NO_OFFSET:
            raise InvalidCommitOffsetError(
                f"offset {offset} for {topic}[{partition}] is negative "
                "(only -1, no position, is allowed)"
            )
