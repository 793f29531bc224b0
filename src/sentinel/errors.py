"""The error tree. Every error names who is wrong.

- ``CallerError``: the caller asked for something invalid (bad argument, key too large,
  unknown topic). Retrying the same call will fail the same way.
- ``PeerError``: a remote peer sent something that violates the protocol.
- ``DiskError``: what is on disk is not what we wrote (``CorruptionError``) or is not
  ours (``NotAnEngineDirectoryError``, ``UnsupportedFormatError``).
- ``NotLeaderError``: the request reached a replica that cannot serve it now.
- ``StateError``: the object is in a state where the call is not allowed (closed).
"""

from __future__ import annotations


class SentinelError(Exception):
    """Base of every error Sentinel raises on purpose."""


class CallerError(SentinelError):
    """The caller is wrong: invalid argument or request."""


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


class CorruptionError(DiskError):
    """A checksum, magic or length check failed: the bytes are not what was written.

    ``path`` names the file and ``where`` the region (a block, the footer, an entry).
    """

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

    ``quarantinable`` is False for data the broker cannot run without (the meta store);
    otherwise the operator may start with the damaged partition offline.
    """

    def __init__(self, message: str, *, quarantinable: bool) -> None:
        super().__init__(message)
        self.quarantinable = quarantinable


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

    def __init__(self, message: str, leader: str | None = None) -> None:
        super().__init__(message)
        self.leader = leader


class DecodeError(PeerError):
    """Bytes from a peer do not decode: a varint too long or truncated, a length past the end."""


class InvalidRecordError(CallerError):
    """A record batch is not acceptable: wrong magic, inconsistent offsets or counts, bad flags.

    Kafka's INVALID_RECORD. The subclasses narrow it; catch this one to catch them all.
    """


class CorruptRecordError(InvalidRecordError):
    """A record batch's bytes are damaged: CRC mismatch, truncation, malformed fields.

    Kafka's CORRUPT_MESSAGE.
    """


class RecordBatchTooLargeError(InvalidRecordError):
    """A record batch, or what it decompresses to, exceeds the configured limit.

    Kafka's MESSAGE_TOO_LARGE.
    """


class UnsupportedCompressionError(InvalidRecordError):
    """A record batch names a compression codec this build does not know.

    Kafka's UNSUPPORTED_COMPRESSION_TYPE.
    """
