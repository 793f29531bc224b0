"""Errors of the partition log. All of them are the caller's: retrying the same call
fails the same way, and the broker maps each to one Kafka error code.

Errors about the batch bytes themselves come from ``sentinel.record`` and pass through
unchanged: ``CorruptRecordError`` (CORRUPT_MESSAGE), ``RecordBatchTooLargeError``
(MESSAGE_TOO_LARGE), ``UnsupportedCompressionError`` (UNSUPPORTED_COMPRESSION_TYPE) and
``InvalidRecordError`` (INVALID_RECORD).
"""

from __future__ import annotations

from sentinel.errors import CallerError, CorruptionError, DiskError, StorageUnavailableError


class OffsetOutOfRangeError(CallerError):
    """An offset outside ``[log_start_offset, log_end_offset]``. Kafka's OFFSET_OUT_OF_RANGE."""

    kafka_code = 1
    code_name = "OFFSET_OUT_OF_RANGE"

    def __init__(self, offset: int, log_start_offset: int, log_end_offset: int) -> None:
        super().__init__(
            f"offset {offset} is outside the log's range "
            f"[{log_start_offset}, {log_end_offset}]"
        )
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset


class OutOfOrderSequenceError(CallerError):
    """An idempotent producer's batch does not follow its last sequence number.

    Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER."""

    kafka_code = 45
    code_name = "OUT_OF_ORDER_SEQUENCE"

    def __init__(self, producer_id: int, expected: int, got: int) -> None:
        super().__init__(
            f"producer {producer_id}: expected sequence {expected}, got {got}"
        )
        self.producer_id = producer_id
        self.expected = expected
        self.got = got


class InvalidProducerEpochError(CallerError):
    """A batch from an older epoch of a producer than one already seen (a zombie).

    Kafka's INVALID_PRODUCER_EPOCH."""

    kafka_code = 47
    code_name = "INVALID_PRODUCER_EPOCH"

    def __init__(self, producer_id: int, current_epoch: int, got: int) -> None:
        super().__init__(
            f"producer {producer_id}: epoch {got} is older than the current epoch {current_epoch}"
        )
        self.producer_id = producer_id
        self.current_epoch = current_epoch
        self.got = got


def naming_partition(exc: Exception, partition: str) -> DiskError:
    """A storage error met while reading ``partition``, reworded to name it: damaged
    bytes stay a ``CorruptionError`` (CORRUPT_MESSAGE), anything else (a missing file,
    an IO error) becomes ``StorageUnavailableError`` (KAFKA_STORAGE_ERROR)."""
    if isinstance(exc, CorruptionError):
        named = CorruptionError(exc.path, exc.where, exc.detail)
        named.args = (f"partition {partition}: {exc}",)
        return named
    if isinstance(exc, FileNotFoundError):
        return StorageUnavailableError(
            f"partition {partition}: {exc.filename} is missing", partition
        )
    return StorageUnavailableError(f"partition {partition}: {exc}", partition)
