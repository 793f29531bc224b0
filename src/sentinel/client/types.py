"""The values the client hands out and takes.

The per-record ones (``ConsumerRecord``, ``RecordMetadata``, ``TopicPartition``) are
``NamedTuple``s rather than frozen dataclasses: a consumer builds half a million of
them a second, and a tuple costs about half as much to make. They are immutable,
typed and compare by value like the dataclasses used everywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "BrokerInfo",
    "ClusterMetadata",
    "ConsumerRecord",
    "GroupDescription",
    "GroupSummary",
    "MemberDescription",
    "OffsetAndTimestamp",
    "PartitionDescription",
    "PartitionLag",
    "RecordMetadata",
    "TopicDescription",
    "TopicPartition",
]

Headers = tuple[tuple[str, bytes | None], ...]


class TopicPartition(NamedTuple):
    """One partition of a topic. A plain ``(topic, partition)`` tuple works too."""

    topic: str
    partition: int


class RecordMetadata(NamedTuple):
    """Where a produced record was stored.

    ``offset`` is -1 with acks=0 (the producer does not wait for the broker), and
    when the broker reported a duplicate without its offset. ``timestamp`` is the
    record's create time, or the broker's append time on a LogAppendTime topic.
    """

    topic: str
    partition: int
    offset: int
    timestamp: int


class ConsumerRecord(NamedTuple):
    """One record returned by ``poll``."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()


class OffsetAndTimestamp(NamedTuple):
    """What ``Admin.list_offsets`` answers (offset -1: none) and what a consumer's
    ``offsets_for_times`` finds: an offset and its record's timestamp."""

    offset: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """A broker of the cluster."""

    node_id: int
    host: str
    port: int
    kafka_host: str = ""
    kafka_port: int = -1  # -1: no Kafka listener (or a broker that does not say)

    @property
    def address(self) -> str:
        """``host:port`` (gRPC)."""
        return f"{self.host}:{self.port}"

    @property
    def kafka_address(self) -> str | None:
        """The Kafka listener's ``host:port``, or None."""
        if self.kafka_port <= 0:
            return None
        return f"{self.kafka_host or self.host}:{self.kafka_port}"


@dataclass(frozen=True, slots=True)
class PartitionDescription:
    """A partition's replicas and offsets."""

    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    log_start_offset: int
    log_end_offset: int
    high_watermark: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class TopicDescription:
    """A topic: its partitions (in partition order) and configs."""

    name: str
    partitions: tuple[PartitionDescription, ...]
    configs: Mapping[str, str] = field(default_factory=dict)
    replication_factor: int = 1


@dataclass(frozen=True, slots=True)
class ClusterMetadata:
    """Brokers, the controller and the topics asked for."""

    brokers: tuple[BrokerInfo, ...]
    controller_id: int
    topics: Mapping[str, TopicDescription]


@dataclass(frozen=True, slots=True)
class GroupSummary:
    """A consumer group as ``list_groups`` reports it."""

    group_id: str
    state: str
    members: int


@dataclass(frozen=True, slots=True)
class MemberDescription:
    """A group member and the partitions it owns."""

    member_id: str
    client_id: str
    assignment: tuple[TopicPartition, ...]
    group_instance_id: str | None = None  # a static member's (KIP-345)


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """How far a group's committed offset is behind a partition's end."""

    topic: str
    partition: int
    committed_offset: int  # -1: nothing committed
    log_end_offset: int
    lag: int


@dataclass(frozen=True, slots=True)
class GroupDescription:
    """A consumer group: its state, members and lag per committed partition."""

    group_id: str
    state: str
    protocol: str
    generation: int
    members: tuple[MemberDescription, ...]
    lag: tuple[PartitionLag, ...]
