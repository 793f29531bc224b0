"""The error tree. Every error names who is wrong.

- ``CallerError``: the caller asked for something invalid (bad argument, key too large,
  unknown topic). Retrying the same call will fail the same way.
- ``PeerError``: a remote peer sent something that violates the protocol.
- ``DiskError``: what is on disk is not what we wrote (``CorruptionError``) or is not
  ours (``NotAnEngineDirectoryError``, ``UnsupportedFormatError``).
- ``NotLeaderError``: the request reached a replica that cannot serve it now.
- ``StateError``: the object is in a state where the call is not allowed (closed).

Every class carries the error it is on the wire: ``kafka_code`` (Kafka's error code
number, the Kafka door's answer) and ``code_name`` (its name in ``proto/sentinel.proto``'s
``ErrorCode``, the gRPC door's ``sentinel-error`` reason). A subclass overrides both; an
error whose ``code_name`` is UNKNOWN_SERVER_ERROR is a bug or a state the doors answer as internal.
Both doors map by these attributes, never by a table of classes of their own.
"""

from __future__ import annotations


class SentinelError(Exception):
    """Base of every error Sentinel raises on purpose."""

    kafka_code: int = -1
    code_name: str = "UNKNOWN_SERVER_ERROR"


class CallerError(SentinelError):
    """The caller is wrong: invalid argument or request."""

    kafka_code = 42
    code_name = "INVALID_REQUEST"


class InvalidArgumentError(CallerError):
    """An argument is outside what the call accepts."""


class KeyTooLargeError(InvalidArgumentError):
    """A key is larger than the configured maximum."""


class ValueTooLargeError(InvalidArgumentError):
    """A value is larger than the configured maximum."""


class PeerError(SentinelError):
    """A remote peer violated the protocol."""


class StateError(SentinelError):
    """The call is not allowed in the object's current state."""


class ClosedError(StateError):
    """The object was closed."""


class DiskError(SentinelError):
    """What is on disk is unusable."""

    kafka_code = 56
    code_name = "KAFKA_STORAGE_ERROR"


class CorruptionError(DiskError):
    """A checksum, magic or length check failed: the bytes are not what was written.

    ``path`` names the file and ``where`` the region (a block, the footer, an entry).
    """

    kafka_code = 2
    code_name = "CORRUPT_MESSAGE"

    def __init__(self, path: str, where: str, detail: str) -> None:
        super().__init__(f"corruption in {path} at {where}: {detail}")
        self.path = path
        self.where = where
        self.detail = detail


class MissingFileError(DiskError):
    """A file the stored data needs (a WAL segment, a table, a partition's directory) is
    gone. ``path`` names it."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path} is missing: {detail}")
        self.path = path
        self.detail = detail


class DamagedDataError(DiskError):
    """Start refused: stored data is damaged or missing (``cause`` says which file).

    ``quarantinable`` is False for data the broker cannot run without (the meta store,
    a cluster broker's Raft state); otherwise the operator may start with the damaged
    partition offline. ``advice``: what the operator should do, when the default
    advice of the refusal line (``cli/server.refusal_line``) does not fit.
    """

    def __init__(self, message: str, *, quarantinable: bool, advice: str = "") -> None:
        super().__init__(message)
        self.quarantinable = quarantinable
        self.advice = advice


class StorageUnavailableError(DiskError):
    """A partition's storage cannot serve now: the disk is full, a write or fsync failed,
    or the partition is quarantined after damage was found. Kafka's KAFKA_STORAGE_ERROR.

    ``partition`` names it (``topic-N``) when known.
    """

    def __init__(self, message: str, partition: str | None = None) -> None:
        super().__init__(message)
        self.partition = partition


class NotAnEngineDirectoryError(DiskError):
    """The directory exists, is not empty, and does not hold a Sentinel engine."""


class UnsupportedFormatError(DiskError):
    """A file carries a format version this build does not understand."""


class LockedError(StateError):
    """Another process holds the lock on the data directory."""


class NotLeaderError(SentinelError):
    """This replica is not the leader; ``leader`` names the current one if known."""

    kafka_code = 6
    code_name = "NOT_LEADER_OR_FOLLOWER"

    def __init__(self, message: str, leader: str | None = None) -> None:
        super().__init__(message)
        self.leader = leader


class FencedLeaderEpochError(NotLeaderError):
    """The request names a leader epoch older than the partition's: the caller's
    metadata is stale (KIP-320)."""

    kafka_code = 74


class UnknownLeaderEpochError(NotLeaderError):
    """The request names a leader epoch newer than this replica knows (KIP-320)."""

    kafka_code = 75


class DecodeError(PeerError):
    """Bytes from a peer do not decode: a varint too long or truncated, a length past the end."""


class InvalidRecordError(CallerError):
    """A record batch is not acceptable: wrong magic, inconsistent offsets or counts, bad flags.

    Kafka's INVALID_RECORD. The subclasses narrow it; catch this one to catch them all.
    """

    kafka_code = 87
    code_name = "INVALID_RECORD"


class CorruptRecordError(InvalidRecordError):
    """A record batch's bytes are damaged: CRC mismatch, truncation, malformed fields.

    Kafka's CORRUPT_MESSAGE.
    """

    kafka_code = 2
    code_name = "CORRUPT_MESSAGE"


class RecordBatchTooLargeError(InvalidRecordError):
    """A record batch, or what it decompresses to, exceeds the configured limit.

    Kafka's MESSAGE_TOO_LARGE.
    """

    kafka_code = 10
    code_name = "MESSAGE_TOO_LARGE"


class UnsupportedCompressionError(InvalidRecordError):
    """A record batch names a compression codec this build does not know.

    Kafka's UNSUPPORTED_COMPRESSION_TYPE (the gRPC door has no such code: INVALID_RECORD).
    """

    kafka_code = 76


class TransactionalIdAuthorizationFailedError(InvalidRecordError):
    """A produced batch carries the transactional attribute, but the produce names no
    transactional id (Sentinel serves no transactions, so none ever does).

    Kafka's TRANSACTIONAL_ID_AUTHORIZATION_FAILED (the gRPC door has no such code:
    INVALID_RECORD).
    """

    kafka_code = 53


def kafka_code_of(exc: BaseException) -> int:
    """Kafka's error code for ``exc``: its class's, or UNKNOWN_SERVER_ERROR (-1)."""
    return exc.kafka_code if isinstance(exc, SentinelError) else -1
