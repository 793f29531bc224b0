"""The frozen values ``BrokerService`` returns; each front door translates them.

Per-partition results carry ``error``: the refusal of that partition alone (a
``SentinelError``, whose ``kafka_code`` / ``code_name`` are its wire codes) or None.
The Kafka door answers a code per partition; the gRPC door, whose RPCs name one
partition, raises the error. Nothing here knows a front door.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sentinel.errors import SentinelError

__all__ = [
    "NOT_DESCRIBED",
    "BrokerMetadata",
    "ClusterMetadata",
    "CommitOutcome",
    "FetchOutcome",
    "FetchPosition",
    "GroupSummary",
    "OffsetDeleteOutcome",
    "PartitionLagInfo",
    "PartitionMetadata",
    "ProduceEntry",
    "ProduceOutcome",
    "TopicMetadata",
]


NOT_DESCRIBED = -1
"""An offset or size a placement-only description leaves out."""


def _code(error: SentinelError | None) -> int:
    return 0 if error is None else error.kafka_code


@dataclass(frozen=True, slots=True)
class ProduceOutcome:
    topic: str
    partition: int
    base_offset: int
    log_append_time_ms: int
    log_start_offset: int
    duplicate: bool
    records: int
    bytes: int
    error: SentinelError | None = None

    @property
    def error_code(self) -> int:
        return _code(self.error)


@dataclass(frozen=True, slots=True)
class ProduceEntry:
    """One partition of a produce request: its concatenated RecordBatch v2 bytes."""

    topic: str
    partition: int
    batches: bytes | memoryview


@dataclass(frozen=True, slots=True)
class FetchPosition:
    """One partition of a fetch: where to read and at most how many bytes (at least
    one whole batch is returned by the first partition that has one)."""

    topic: str
    partition: int
    offset: int
    max_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FetchOutcome:
    topic: str
    partition: int
    #: Whole stamped batches, in offset order: the stored bytes or views of them, not
    #: copies (the Kafka door writes them to the socket as they are).
    chunks: tuple[bytes | memoryview, ...]
    high_watermark: int
    log_start_offset: int
    next_offset: int
    error: SentinelError | None = None

    @property
    def batches(self) -> bytes:
        """The batches joined (a copy): a gRPC fetch message's ``record_batches``."""
        return b"".join(self.chunks)

    @property
    def size(self) -> int:
        """Bytes in all the batches."""
        return sum(len(c) for c in self.chunks)

    @property
    def error_code(self) -> int:
        return _code(self.error)


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    """One partition of an offset commit: committed (``error`` None) or refused."""

    topic: str
    partition: int
    error: SentinelError | None = None

    @property
    def error_code(self) -> int:
        return _code(self.error)


@dataclass(frozen=True, slots=True)
class OffsetDeleteOutcome:
    """One partition of an offset deletion: its committed offset is gone (``error``
    None; also when there was none) or kept (an unknown partition, a subscribed topic)."""

    topic: str
    partition: int
    error: SentinelError | None = None

    @property
    def error_code(self) -> int:
        return _code(self.error)


@dataclass(frozen=True, slots=True)
class PartitionLagInfo:
    topic: str
    partition: int
    committed: int
    log_end_offset: int

    @property
    def lag(self) -> int:
        if self.committed < 0:
            return self.log_end_offset
        return max(0, self.log_end_offset - self.committed)


@dataclass(frozen=True, slots=True)
class GroupSummary:
    group_id: str
    state: str
    members: int
    protocol_type: str = ""


@dataclass(frozen=True, slots=True)
class BrokerMetadata:
    node_id: int
    host: str
    port: int
    #: Where Kafka clients reach this broker (its Kafka protocol listener).
    kafka_host: str = ""
    kafka_port: int = -1


@dataclass(frozen=True, slots=True)
class PartitionMetadata:
    """Where a partition lives (leader, replicas, in-sync replicas, epoch, error) and,
    unless described for placement only (``BrokerService.metadata(offsets=False)``, what
    Kafka's Metadata answer needs), its offsets and size: -1 when not described."""

    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    log_start_offset: int = NOT_DESCRIBED
    log_end_offset: int = NOT_DESCRIBED
    high_watermark: int = NOT_DESCRIBED
    size_bytes: int = NOT_DESCRIBED
    #: The partition cannot serve (offline after damage: KAFKA_STORAGE_ERROR).
    error: SentinelError | None = None
    #: The partition leader epoch (the Raft term in a cluster; 0 for a broker alone).
    leader_epoch: int = 0

    @property
    def error_code(self) -> int:
        return _code(self.error)


@dataclass(frozen=True, slots=True)
class TopicMetadata:
    name: str
    partitions: tuple[PartitionMetadata, ...]
    configs: Mapping[str, str]
    replication_factor: int
    #: The topic could not be described (unknown, invalid name, not created).
    error: SentinelError | None = None

    @property
    def error_code(self) -> int:
        return _code(self.error)


@dataclass(frozen=True, slots=True)
class ClusterMetadata:
    brokers: tuple[BrokerMetadata, ...]
    controller_id: int
    topics: tuple[TopicMetadata, ...]
    #: The cluster's id (``cluster.json``); "sentinel" for a broker alone.
    cluster_id: str = "sentinel"
