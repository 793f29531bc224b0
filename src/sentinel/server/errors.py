"""How a broker error becomes a gRPC status: the code, the machine-readable reason
(``sentinel-error``, an ``ErrorCode`` name of proto/sentinel.proto) and extra metadata.

The reason is the error's own (``SentinelError.code_name``, with its ``kafka_code`` for the
Kafka door); this module only knows which gRPC status each reason travels under.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from sentinel.errors import CallerError, NotLeaderError, SentinelError
from sentinel.log.errors import OffsetOutOfRangeError

StatusCode = grpc.StatusCode


@dataclass(frozen=True, slots=True)
class Refusal:
    status: grpc.StatusCode
    reason: str
    message: str
    metadata: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def trailing(self) -> tuple[tuple[str, str], ...]:
        return (("sentinel-error", self.reason), *self.metadata)


STATUS_BY_REASON: dict[str, grpc.StatusCode] = {
    "UNKNOWN_TOPIC_OR_PARTITION": StatusCode.NOT_FOUND,
    "OFFSET_OUT_OF_RANGE": StatusCode.OUT_OF_RANGE,
    "NOT_LEADER_OR_FOLLOWER": StatusCode.UNAVAILABLE,
    "INVALID_TOPIC": StatusCode.INVALID_ARGUMENT,
    "INVALID_CONFIG": StatusCode.INVALID_ARGUMENT,
    "INVALID_PARTITIONS": StatusCode.INVALID_ARGUMENT,
    "INVALID_REPLICATION_FACTOR": StatusCode.INVALID_ARGUMENT,
    "INVALID_REPLICA_ASSIGNMENT": StatusCode.INVALID_ARGUMENT,
    # A move reported done that is not the one under way (internal to a cluster).
    "NO_REASSIGNMENT_IN_PROGRESS": StatusCode.FAILED_PRECONDITION,
    "TOPIC_ALREADY_EXISTS": StatusCode.ALREADY_EXISTS,
    "INVALID_REQUIRED_ACKS": StatusCode.INVALID_ARGUMENT,
    # A broker limit (partitions, topics one request may create): not retriable as is.
    "POLICY_VIOLATION": StatusCode.FAILED_PRECONDITION,
    # The in-flight request bytes stayed full until the request's deadline: retry later.
    "THROTTLING_QUOTA_EXCEEDED": StatusCode.RESOURCE_EXHAUSTED,
    "MESSAGE_TOO_LARGE": StatusCode.INVALID_ARGUMENT,
    "INVALID_RECORD": StatusCode.INVALID_ARGUMENT,
    "OUT_OF_ORDER_SEQUENCE": StatusCode.FAILED_PRECONDITION,
    "INVALID_PRODUCER_EPOCH": StatusCode.FAILED_PRECONDITION,
    # Full disk, failed WAL, quarantined partition, missing file: the storage is offline.
    "KAFKA_STORAGE_ERROR": StatusCode.UNAVAILABLE,
    "INVALID_REQUEST": StatusCode.INVALID_ARGUMENT,
    # Groups.
    "REBALANCE_IN_PROGRESS": StatusCode.ABORTED,
    "UNKNOWN_MEMBER_ID": StatusCode.FAILED_PRECONDITION,
    # A static member's old member id, replaced by a newer instance: it must stop.
    "FENCED_INSTANCE_ID": StatusCode.FAILED_PRECONDITION,
    "ILLEGAL_GENERATION": StatusCode.FAILED_PRECONDITION,
    "GROUP_ID_NOT_FOUND": StatusCode.NOT_FOUND,
    "NON_EMPTY_GROUP": StatusCode.FAILED_PRECONDITION,
    "INVALID_SESSION_TIMEOUT": StatusCode.INVALID_ARGUMENT,
    "INVALID_GROUP_ID": StatusCode.INVALID_ARGUMENT,
    "UNSUPPORTED_ASSIGNOR": StatusCode.INVALID_ARGUMENT,
    "GROUP_MAX_SIZE_REACHED": StatusCode.RESOURCE_EXHAUSTED,
    "COORDINATOR_NOT_AVAILABLE": StatusCode.UNAVAILABLE,
    "NOT_COORDINATOR": StatusCode.UNAVAILABLE,
    "COORDINATOR_LOAD_IN_PROGRESS": StatusCode.UNAVAILABLE,
    # A cluster: an election under way, no controller reachable, a peer down.
    "LEADER_NOT_AVAILABLE": StatusCode.UNAVAILABLE,
    "NOT_CONTROLLER": StatusCode.UNAVAILABLE,
    "REQUEST_TIMED_OUT": StatusCode.UNAVAILABLE,
    "BROKER_NOT_AVAILABLE": StatusCode.UNAVAILABLE,
    "UNSUPPORTED_VERSION": StatusCode.UNIMPLEMENTED,
}
"""The gRPC status each reason travels under."""

# A corrupt batch the caller sent is its fault; stored bytes that fail their checksum
# are data loss (never served, never INTERNAL).
_CORRUPT_STORED = StatusCode.DATA_LOSS


def refusal_for(exc: BaseException) -> Refusal | None:
    """The status for a known broker error; None for a bug (answered INTERNAL)."""
    if not isinstance(exc, SentinelError):
        return None
    reason, message = exc.code_name, str(exc)
    metadata: tuple[tuple[str, str], ...] = ()
    if isinstance(exc, OffsetOutOfRangeError):
        metadata = (
            ("sentinel-log-start-offset", str(exc.log_start_offset)),
            ("sentinel-log-end-offset", str(exc.log_end_offset)),
        )
    elif isinstance(exc, NotLeaderError) and exc.leader:
        metadata = (("sentinel-leader", exc.leader),)
    if reason == "CORRUPT_MESSAGE":
        corrupt = StatusCode.INVALID_ARGUMENT if isinstance(exc, CallerError) else _CORRUPT_STORED
        return Refusal(corrupt, reason, message, metadata)
    known = STATUS_BY_REASON.get(reason)
    if known is not None:
        return Refusal(known, reason, message, metadata)
    if isinstance(exc, CallerError):  # a group code without a status of its own
        return Refusal(StatusCode.FAILED_PRECONDITION, reason, message, metadata)
    return None  # UNKNOWN_SERVER_ERROR: a bug or a closed object
