"""The client's exceptions, and how a gRPC status becomes one.

A broker refuses a call with a gRPC status code and trailing metadata::

    sentinel-error             the reason: an ErrorCode name of proto/sentinel.proto
    sentinel-leader            host:port of the partition's leader (NOT_LEADER_OR_FOLLOWER)
    sentinel-log-start-offset  the valid offset range (OFFSET_OUT_OF_RANGE)
    sentinel-log-end-offset

``error_from_rpc`` maps the reason to a typed exception; a status without a reason
(the transport failed, or a proxy answered) maps by its code alone.

Every exception derives from ``SentinelClientError`` and carries ``reason`` (the
ErrorCode name, or None), ``status`` (the gRPC code, or None for client-side errors)
and the class attribute ``retriable``: whether the same call may succeed later
unchanged (the leader moved, the broker restarted, a rebalance ended). Those that say
who is wrong also derive from the project's tree: ``CallerError`` when the request
was invalid, ``StateError`` when the client was misused, ``NotLeaderError``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import grpc

from sentinel import errors as core

__all__ = [
    "BrokerUnavailableError",
    "ClientClosedError",
    "ClientConfigError",
    "ClientStateError",
    "ClientTimeoutError",
    "CoordinatorLoadInProgressError",
    "CoordinatorNotAvailableError",
    "CorruptMessageError",
    "DuplicateSequenceError",
    "FencedInstanceIdError",
    "GroupIdNotFoundError",
    "IllegalGenerationError",
    "InvalidBootstrapError",
    "InvalidConfigError",
    "InvalidFetchSizeError",
    "InvalidPartitionsError",
    "InvalidProducerEpochError",
    "InvalidRecordError",
    "InvalidReplicaAssignmentError",
    "InvalidReplicationFactorError",
    "InvalidRequestError",
    "InvalidSessionTimeoutError",
    "InvalidTopicError",
    "LeaderNotAvailableError",
    "MessageTooLargeError",
    "NonEmptyGroupError",
    "NotControllerError",
    "NotCoordinatorError",
    "NotEnoughReplicasError",
    "NotLeaderError",
    "OffsetOutOfRangeError",
    "OutOfOrderSequenceError",
    "RebalanceInProgressError",
    "RecordListTooLargeError",
    "RecordTypeError",
    "RequestTimedOutError",
    "SentinelClientError",
    "ServerError",
    "TopicAlreadyExistsError",
    "UnknownMemberIdError",
    "UnknownTopicOrPartitionError",
    "UnresolvableBrokerError",
    "error_from_rpc",
    "never_sent",
]


class SentinelClientError(core.SentinelError):
    """Base of every error the client raises on purpose."""

    retriable: ClassVar[bool] = False
    """Whether the same request may succeed later, unchanged."""

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        status: grpc.StatusCode | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.status = status


# --- refusals carrying a reason ------------------------------------------------------


class UnknownTopicOrPartitionError(SentinelClientError, core.CallerError):
    """The topic or partition does not exist (yet: metadata may be stale)."""

    retriable = True


class OffsetOutOfRangeError(SentinelClientError, core.CallerError):
    """The offset asked for is outside ``[log_start, log_end]`` (-1 when unknown)."""

    def __init__(
        self,
        message: str,
        log_start: int = -1,
        log_end: int = -1,
        *,
        reason: str | None = "OFFSET_OUT_OF_RANGE",
        status: grpc.StatusCode | None = None,
    ) -> None:
        super().__init__(message, reason=reason, status=status)
        self.log_start = log_start
        self.log_end = log_end


class CorruptMessageError(SentinelClientError, core.CallerError):
    """The broker found a batch we sent damaged (CRC, framing)."""

    retriable = True  # as Kafka: the damage may have happened in transit


class InvalidFetchSizeError(SentinelClientError, core.CallerError):
    """A fetch's byte limit is not acceptable."""


class NotLeaderError(SentinelClientError, core.NotLeaderError):
    """The broker is not the partition's leader; ``leader`` is host:port if known."""

    retriable = True

    def __init__(
        self,
        message: str,
        leader: str | None = None,
        *,
        reason: str | None = "NOT_LEADER_OR_FOLLOWER",
        status: grpc.StatusCode | None = None,
    ) -> None:
        super().__init__(message, reason=reason, status=status)
        self.leader = leader


class MessageTooLargeError(SentinelClientError, core.CallerError):
    """A record or batch exceeds the topic's (or the broker's) size limit."""


class InvalidTopicError(SentinelClientError, core.CallerError):
    """The topic name is not acceptable."""


class RecordListTooLargeError(SentinelClientError, core.CallerError):
    """The request's batches together exceed the limit."""


class NotEnoughReplicasError(SentinelClientError):
    """acks=all cannot be met now: too few in-sync replicas."""

    retriable = True


class IllegalGenerationError(SentinelClientError):
    """The group moved to a newer generation: the member must join again."""


class UnknownMemberIdError(SentinelClientError):
    """The coordinator does not know the member (it expired or left)."""


class FencedInstanceIdError(SentinelClientError):
    """A newer consumer with this one's ``group_instance_id`` took its place in the
    group (KIP-345): this one must stop (its membership has ended)."""


class InvalidSessionTimeoutError(SentinelClientError, core.CallerError):
    """The session timeout is outside the broker's allowed range."""


class RebalanceInProgressError(SentinelClientError):
    """The group is rebalancing: the member must join again."""

    retriable = True


class TopicAlreadyExistsError(SentinelClientError, core.CallerError):
    """A topic of that name exists."""


class InvalidPartitionsError(SentinelClientError, core.CallerError):
    """The partition count is not acceptable."""


class InvalidReplicationFactorError(SentinelClientError, core.CallerError):
    """The replication factor is not acceptable (more than the brokers?)."""


class InvalidReplicaAssignmentError(SentinelClientError, core.CallerError):
    """A replica move's target is not a list of distinct brokers of the cluster."""


class InvalidRequestError(SentinelClientError, core.CallerError):
    """The broker found the request malformed."""


class InvalidConfigError(SentinelClientError, core.CallerError):
    """A topic config key or value is not acceptable."""


class OutOfOrderSequenceError(SentinelClientError):
    """An idempotent batch's sequence does not follow the last one the broker has."""


class DuplicateSequenceError(SentinelClientError):
    """The broker has this idempotent batch already (offset not reported)."""


class InvalidProducerEpochError(SentinelClientError):
    """A newer epoch of this producer id has written to the partition (we are fenced)."""


class GroupIdNotFoundError(SentinelClientError, core.CallerError):
    """The group does not exist."""


class NonEmptyGroupError(SentinelClientError, core.CallerError):
    """The group has active members: it cannot be deleted nor its offsets reset."""


class InvalidRecordError(SentinelClientError, core.CallerError):
    """The broker refused a record (e.g. no key on a compacted topic)."""


class KafkaStorageError(SentinelClientError):
    """The broker's storage for the partition is offline (full disk, failed write,
    damage found); it may come back, as Kafka's KafkaStorageException."""

    retriable = True


class InvalidRequiredAcksError(SentinelClientError, core.CallerError):
    """The acks value is not 0, 1 or all."""


class PolicyViolationError(SentinelClientError, core.CallerError):
    """The request breaks a broker limit (topics, partitions, auto-creation)."""


class ThrottlingQuotaExceededError(SentinelClientError):
    """The broker is at a limit of work in flight; retry later."""

    retriable = True


# --- a cluster in motion: an election, a coordinator or controller moving -------------


class LeaderNotAvailableError(SentinelClientError):
    """The partition (or the controller) has no leader now: an election is under way."""

    retriable = True


class NotCoordinatorError(SentinelClientError):
    """This broker does not coordinate the group: find the coordinator again."""

    retriable = True


class CoordinatorLoadInProgressError(SentinelClientError):
    """The coordinator is reading the group's offsets back (it just took the group
    over): ask again shortly."""

    retriable = True


class CoordinatorNotAvailableError(SentinelClientError):
    """No broker coordinates the groups now (no controller leader yet)."""

    retriable = True


class NotControllerError(SentinelClientError):
    """The broker could not reach the controller's leader to carry out the request."""

    retriable = True


# --- transport and server-side failures without a reason ----------------------------


class BrokerUnavailableError(SentinelClientError):
    """The broker cannot be reached (or is shutting down)."""

    retriable = True


class UnresolvableBrokerError(BrokerUnavailableError, ValueError):
    """A broker's host name does not resolve: the address is wrong (not retried); a
    ``ValueError`` too."""

    retriable = False


class InvalidBootstrapError(SentinelClientError, core.InvalidArgumentError, ValueError):
    """A broker address is not ``host:port`` with a port in 1..65535 (a ``ValueError``
    too, as Kafka's Python clients raise for a bad address)."""


class RequestTimedOutError(SentinelClientError):
    """The request's deadline passed before the broker answered."""

    retriable = True


class ServerError(SentinelClientError):
    """The broker failed in a way it did not explain (INTERNAL, UNKNOWN, ...)."""


# --- client-side errors -------------------------------------------------------------


class ClientClosedError(SentinelClientError, core.ClosedError):
    """The client was closed."""


class ClientConfigError(SentinelClientError, core.InvalidArgumentError, ValueError):
    """A client option is unknown, unsupported, malformed or given twice (a config
    dict's key, a keyword option); the message names every one that is wrong."""


class RecordTypeError(SentinelClientError, core.InvalidArgumentError, TypeError):
    """A record's key, value or header is not bytes (and no serializer makes it so)."""


class ClientStateError(SentinelClientError, core.StateError):
    """The call is not allowed now (e.g. commit without a group id)."""


class ClientTimeoutError(SentinelClientError, TimeoutError):
    """A client-side wait (flush, metadata, buffer space, a blocking call) timed out."""


_BY_REASON: dict[str, type[SentinelClientError]] = {
    "UNKNOWN_TOPIC_OR_PARTITION": UnknownTopicOrPartitionError,
    "OFFSET_OUT_OF_RANGE": OffsetOutOfRangeError,
    "CORRUPT_MESSAGE": CorruptMessageError,
    "INVALID_FETCH_SIZE": InvalidFetchSizeError,
    "NOT_LEADER_OR_FOLLOWER": NotLeaderError,
    "MESSAGE_TOO_LARGE": MessageTooLargeError,
    "INVALID_TOPIC": InvalidTopicError,
    "RECORD_LIST_TOO_LARGE": RecordListTooLargeError,
    "NOT_ENOUGH_REPLICAS": NotEnoughReplicasError,
    "ILLEGAL_GENERATION": IllegalGenerationError,
    "UNKNOWN_MEMBER_ID": UnknownMemberIdError,
    "FENCED_INSTANCE_ID": FencedInstanceIdError,
    "INVALID_SESSION_TIMEOUT": InvalidSessionTimeoutError,
    "REBALANCE_IN_PROGRESS": RebalanceInProgressError,
    "TOPIC_ALREADY_EXISTS": TopicAlreadyExistsError,
    "INVALID_PARTITIONS": InvalidPartitionsError,
    "INVALID_REPLICATION_FACTOR": InvalidReplicationFactorError,
    "INVALID_REPLICA_ASSIGNMENT": InvalidReplicaAssignmentError,
    "INVALID_REQUEST": InvalidRequestError,
    "INVALID_CONFIG": InvalidConfigError,
    "OUT_OF_ORDER_SEQUENCE": OutOfOrderSequenceError,
    "DUPLICATE_SEQUENCE": DuplicateSequenceError,
    "INVALID_PRODUCER_EPOCH": InvalidProducerEpochError,
    "GROUP_ID_NOT_FOUND": GroupIdNotFoundError,
    "NON_EMPTY_GROUP": NonEmptyGroupError,
    "INVALID_RECORD": InvalidRecordError,
    "KAFKA_STORAGE_ERROR": KafkaStorageError,
    "INVALID_REQUIRED_ACKS": InvalidRequiredAcksError,
    "POLICY_VIOLATION": PolicyViolationError,
    "THROTTLING_QUOTA_EXCEEDED": ThrottlingQuotaExceededError,
    "LEADER_NOT_AVAILABLE": LeaderNotAvailableError,
    "NOT_COORDINATOR": NotCoordinatorError,
    "COORDINATOR_NOT_AVAILABLE": CoordinatorNotAvailableError,
    "COORDINATOR_LOAD_IN_PROGRESS": CoordinatorLoadInProgressError,
    "NOT_CONTROLLER": NotControllerError,
    "REQUEST_TIMED_OUT": RequestTimedOutError,
    "BROKER_NOT_AVAILABLE": BrokerUnavailableError,
}

_BY_STATUS: dict[grpc.StatusCode, type[SentinelClientError]] = {
    grpc.StatusCode.UNAVAILABLE: BrokerUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: RequestTimedOutError,
    grpc.StatusCode.NOT_FOUND: UnknownTopicOrPartitionError,
    grpc.StatusCode.ALREADY_EXISTS: TopicAlreadyExistsError,
    grpc.StatusCode.OUT_OF_RANGE: OffsetOutOfRangeError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.ABORTED: RebalanceInProgressError,
    # A message over the channel's size limit is refused by gRPC itself.
    grpc.StatusCode.RESOURCE_EXHAUSTED: MessageTooLargeError,
}


NOT_CONNECTED = "failed to connect to all addresses"
"""gRPC's words for a call that failed because no connection could be made: none of
its bytes were sent."""


def never_sent(error: BaseException) -> bool:
    """Whether ``error`` says the call never left the client (no connection)."""
    return isinstance(error, BrokerUnavailableError) and NOT_CONNECTED in str(error)


# gRPC's words for a host name that does not resolve (c-ares, and the native resolver)
_UNRESOLVED = ("DNS resolution failed", "errors resolving", "address lookup failed")


def _int(value: str | None) -> int:
    try:
        return int(value) if value is not None else -1
    except ValueError:
        return -1


def error_from_status(
    status: grpc.StatusCode,
    details: str,
    metadata: Iterable[tuple[str, str | bytes]],
) -> SentinelClientError:
    """The exception for a refusal: its reason first, else its status code."""
    meta: dict[str, str] = {}
    for key, value in metadata:
        meta[key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    reason = meta.get("sentinel-error")
    message = details or status.name
    kind = _BY_REASON.get(reason) if reason else None
    if kind is None:
        kind = _BY_STATUS.get(status, ServerError)
        if status is grpc.StatusCode.CANCELLED:
            kind = BrokerUnavailableError
        elif status is grpc.StatusCode.UNAVAILABLE and any(
            marker in message for marker in _UNRESOLVED
        ):
            return UnresolvableBrokerError(
                f"cannot resolve the broker address: {message}", reason=reason, status=status
            )
    if kind is OffsetOutOfRangeError:
        return OffsetOutOfRangeError(
            message,
            _int(meta.get("sentinel-log-start-offset")),
            _int(meta.get("sentinel-log-end-offset")),
            reason=reason,
            status=status,
        )
    if kind is NotLeaderError:
        return NotLeaderError(
            message, meta.get("sentinel-leader") or None, reason=reason, status=status
        )
    return kind(message, reason=reason, status=status)


def error_from_rpc(exc: grpc.RpcError) -> SentinelClientError:
    """The exception for a failed call (``grpc.aio.AioRpcError`` or a sync ``grpc.Call``)."""
    code = getattr(exc, "code", None)
    status = code() if callable(code) else grpc.StatusCode.UNKNOWN
    details_fn = getattr(exc, "details", None)
    details = (details_fn() if callable(details_fn) else None) or ""
    trailing_fn = getattr(exc, "trailing_metadata", None)
    trailing = trailing_fn() if callable(trailing_fn) else None
    return error_from_status(status, details, tuple(trailing or ()))
