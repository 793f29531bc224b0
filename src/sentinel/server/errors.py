"""How a broker error becomes a gRPC status: the code, the machine-readable reason
(``sentinel-error``, an ``ErrorCode`` name of proto/sentinel.proto) and extra metadata."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from sentinel.broker.group_driver import GroupError
from sentinel.broker.group_events import ErrorCode as GroupCode
from sentinel.broker.limits import PolicyViolationError
from sentinel.broker.request_budget import RequestThrottledError
from sentinel.broker.topic_config import (
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidTopicError,
)
from sentinel.broker.topics import (
    InvalidReplicationFactorError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from sentinel.broker.validation import InvalidRequiredAcksError
from sentinel.errors import (
    CallerError,
    CorruptionError,
    CorruptRecordError,
    DiskError,
    InvalidRecordError,
    NotLeaderError,
    RecordBatchTooLargeError,
)
from sentinel.log.errors import (
    InvalidProducerEpochError,
    OffsetOutOfRangeError,
    OutOfOrderSequenceError,
)

StatusCode = grpc.StatusCode


@dataclass(frozen=True, slots=True)
class Refusal:
    status: grpc.StatusCode
    reason: str
    message: str
    metadata: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def trailing(self) -> tuple[tuple[str, str], ...]:
        return (("sentinel-error", self.reason), *self.metadata)


_BY_TYPE: tuple[tuple[type[BaseException], grpc.StatusCode, str], ...] = (
    (UnknownTopicOrPartitionError, StatusCode.NOT_FOUND, "UNKNOWN_TOPIC_OR_PARTITION"),
    (InvalidTopicError, StatusCode.INVALID_ARGUMENT, "INVALID_TOPIC"),
    (InvalidConfigError, StatusCode.INVALID_ARGUMENT, "INVALID_CONFIG"),
    (InvalidPartitionsError, StatusCode.INVALID_ARGUMENT, "INVALID_PARTITIONS"),
    (InvalidReplicationFactorError, StatusCode.INVALID_ARGUMENT, "INVALID_REPLICATION_FACTOR"),
    (TopicAlreadyExistsError, StatusCode.ALREADY_EXISTS, "TOPIC_ALREADY_EXISTS"),
    (InvalidRequiredAcksError, StatusCode.INVALID_ARGUMENT, "INVALID_REQUIRED_ACKS"),
    # A broker limit (partitions, topics one request may create): not retriable as is.
    (PolicyViolationError, StatusCode.FAILED_PRECONDITION, "POLICY_VIOLATION"),
    # The in-flight request bytes stayed full until the request's deadline: retry later.
    (RequestThrottledError, StatusCode.RESOURCE_EXHAUSTED, "THROTTLING_QUOTA_EXCEEDED"),
    (RecordBatchTooLargeError, StatusCode.INVALID_ARGUMENT, "MESSAGE_TOO_LARGE"),
    (CorruptRecordError, StatusCode.INVALID_ARGUMENT, "CORRUPT_MESSAGE"),
    (InvalidRecordError, StatusCode.INVALID_ARGUMENT, "INVALID_RECORD"),
    (OutOfOrderSequenceError, StatusCode.FAILED_PRECONDITION, "OUT_OF_ORDER_SEQUENCE"),
    (InvalidProducerEpochError, StatusCode.FAILED_PRECONDITION, "INVALID_PRODUCER_EPOCH"),
    # Stored bytes that fail their checksum: never served, never INTERNAL.
    (CorruptionError, StatusCode.DATA_LOSS, "CORRUPT_MESSAGE"),
    # Full disk, failed WAL, quarantined partition, missing file: the storage is offline.
    (DiskError, StatusCode.UNAVAILABLE, "KAFKA_STORAGE_ERROR"),
)

_GROUP_STATUS = {
    GroupCode.REBALANCE_IN_PROGRESS: StatusCode.ABORTED,
    GroupCode.UNKNOWN_MEMBER_ID: StatusCode.FAILED_PRECONDITION,
    GroupCode.ILLEGAL_GENERATION: StatusCode.FAILED_PRECONDITION,
    GroupCode.GROUP_ID_NOT_FOUND: StatusCode.NOT_FOUND,
    GroupCode.NON_EMPTY_GROUP: StatusCode.FAILED_PRECONDITION,
    GroupCode.INVALID_SESSION_TIMEOUT: StatusCode.INVALID_ARGUMENT,
    GroupCode.INVALID_GROUP_ID: StatusCode.INVALID_ARGUMENT,
    GroupCode.INVALID_REQUEST: StatusCode.INVALID_ARGUMENT,
    GroupCode.UNSUPPORTED_ASSIGNOR: StatusCode.INVALID_ARGUMENT,
    GroupCode.GROUP_MAX_SIZE_REACHED: StatusCode.RESOURCE_EXHAUSTED,
    GroupCode.COORDINATOR_NOT_AVAILABLE: StatusCode.UNAVAILABLE,
}


def refusal_for(exc: BaseException) -> Refusal | None:
    """The status for a known broker error; None for a bug (answered INTERNAL)."""
    if isinstance(exc, OffsetOutOfRangeError):
        return Refusal(
            StatusCode.OUT_OF_RANGE,
            "OFFSET_OUT_OF_RANGE",
            str(exc),
            (
                ("sentinel-log-start-offset", str(exc.log_start_offset)),
                ("sentinel-log-end-offset", str(exc.log_end_offset)),
            ),
        )
    if isinstance(exc, NotLeaderError):
        extra = (("sentinel-leader", exc.leader),) if exc.leader else ()
        return Refusal(StatusCode.UNAVAILABLE, "NOT_LEADER_OR_FOLLOWER", str(exc), extra)
    if isinstance(exc, GroupError):
        status = _GROUP_STATUS.get(exc.code, StatusCode.FAILED_PRECONDITION)
        return Refusal(status, exc.code.name, str(exc))
    for kind, status, reason in _BY_TYPE:
        if isinstance(exc, kind):
            return Refusal(status, reason, str(exc))
    if isinstance(exc, CallerError):
        return Refusal(StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", str(exc))
    return None
