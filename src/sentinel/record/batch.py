"""Kafka RecordBatch v2 (magic 2): the header, validation, splitting and stamping.

The unit of storage, replication and transfer (DESIGN.md, principle 1). This module
works on whole batches without looking at their records; ``builder`` writes batches
and ``reader`` decodes their records.

A batch, all integers big-endian::

    offset  size  field
    ------  ----  ---------------------------------------------------------------
         0     8  baseOffset            int64   stamped by the leader
         8     4  batchLength           int32   bytes after this field (size - 12)
        12     4  partitionLeaderEpoch  int32   stamped by the leader
        16     1  magic                 int8    = 2
        17     4  crc                   uint32  CRC32C of bytes 21 .. end
        21     2  attributes            int16   bits 0-2 compression (0 none,
                                                1 gzip, 2 snappy, 3 lz4, 4 zstd),
                                                bit 3 timestampType (1 = log append),
                                                bit 4 isTransactional,
                                                bit 5 isControl,
                                                bit 6 hasDeleteHorizonMs
        23     4  lastOffsetDelta       int32
        27     8  baseTimestamp         int64
        35     8  maxTimestamp          int64
        43     8  producerId            int64   -1 when not idempotent
        51     2  producerEpoch         int16
        53     4  baseSequence          int32
        57     4  recordsCount          int32
        61     -  records               the records, compressed as one block when
                                        attributes say so

    record (every varint zig-zag encoded):
        length          varint   bytes of the rest of the record
        attributes      int8     unused, 0
        timestampDelta  varlong  timestamp - baseTimestamp
        offsetDelta     varint   offset - baseOffset
        keyLength       varint   -1 for a null key
        key             bytes
        valueLength     varint   -1 for a null value
        value           bytes
        headersCount    varint
        headers         [headerKeyLength varint, headerKey utf-8,
                         headerValueLength varint (-1 = null), headerValue]

Because the CRC starts at ``attributes``, a leader stamps baseOffset and
partitionLeaderEpoch without touching it; LogAppendTime changes attributes and
maxTimestamp, so ``stamp_batch`` then recomputes it.

Errors: ``CorruptRecordError`` for damaged bytes, ``RecordBatchTooLargeError`` over the
size limit, ``UnsupportedCompressionError`` for a codec id above 4, and
``InvalidRecordError`` for an intact batch that is not acceptable. They are all
``InvalidRecordError``s, i.e. ``CallerError``s: whoever handed us the bytes is wrong.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from enum import IntEnum
from typing import NamedTuple, TypeAlias

from sentinel.codec.crc import crc32c
from sentinel.errors import (
    CorruptRecordError,
    InvalidArgumentError,
    InvalidRecordError,
    RecordBatchTooLargeError,
)
from sentinel.record.compression import Compression, compression_from_attributes

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "MIN_RECORD_SIZE",
    "BatchHeader",
    "TimestampType",
    "iter_batches",
    "parse_header",
    "stamp_batch",
    "validate_batch",
]

Buffer: TypeAlias = bytes | bytearray | memoryview

MAGIC = 2
HEADER_SIZE = 61
LOG_OVERHEAD = 12  # baseOffset + batchLength: the bytes batchLength does not count
MIN_RECORD_SIZE = 7  # length, attributes, timestampDelta, offsetDelta, key/value -1, 0 headers

BASE_OFFSET_OFFSET = 0
LEADER_EPOCH_OFFSET = 12
MAGIC_OFFSET = 16
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21
MAX_TIMESTAMP_OFFSET = 35

TIMESTAMP_TYPE_BIT = 0x08
TRANSACTIONAL_BIT = 0x10
CONTROL_BIT = 0x20
DELETE_HORIZON_BIT = 0x40

HEADER = struct.Struct(">qiibIhiqqqhii")
_INT64 = struct.Struct(">q")
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")
_INT16 = struct.Struct(">h")
BATCH_LENGTH_OFFSET = 8
#: baseOffset, batchLength, partitionLeaderEpoch: the first 16 bytes, stamped together.
_STAMP = struct.Struct(">qii")
assert HEADER.size == HEADER_SIZE


class TimestampType(IntEnum):
    """Attributes bit 3: who set the records' timestamps."""

    CREATE_TIME = 0
    LOG_APPEND_TIME = 1


class BatchHeader(NamedTuple):
    """The 61 fixed bytes in front of a batch's records.

    A named tuple, not a dataclass: one is built for every batch a producer sends, and
    ``tuple.__new__`` over the unpacked fields costs a sixth of a frozen dataclass's
    thirteen guarded assignments (0.3 against 1.8 us)."""

    base_offset: int
    batch_length: int
    leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def compression(self) -> Compression:
        """The codec of the records; ``UnsupportedCompressionError`` if unknown."""
        return compression_from_attributes(self.attributes)

    @property
    def timestamp_type(self) -> TimestampType:
        """Create time or log-append time (attributes bit 3)."""
        if self.attributes & TIMESTAMP_TYPE_BIT:
            return TimestampType.LOG_APPEND_TIME
        return TimestampType.CREATE_TIME

    @property
    def is_transactional(self) -> bool:
        """Attributes bit 4."""
        return bool(self.attributes & TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        """Attributes bit 5: the records are transaction markers."""
        return bool(self.attributes & CONTROL_BIT)

    @property
    def has_delete_horizon(self) -> bool:
        """Attributes bit 6: baseTimestamp is the compaction delete horizon."""
        return bool(self.attributes & DELETE_HORIZON_BIT)

    @property
    def has_producer_id(self) -> bool:
        """The batch comes from an idempotent or transactional producer."""
        return self.producer_id >= 0

    @property
    def last_offset(self) -> int:
        """Offset of the batch's last record (compaction may have removed it)."""
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        """The offset after the batch."""
        return self.base_offset + self.last_offset_delta + 1

    @property
    def size(self) -> int:
        """Bytes of the whole batch, header included."""
        return self.batch_length + LOG_OVERHEAD


_make_header = BatchHeader._make


def parse_header(data: Buffer) -> BatchHeader:
    """The header of the batch at the start of ``data``, checking only length and magic.

    ``data`` may hold just the first 61 bytes; nothing beyond them is checked.
    """
    size = len(data)
    if size > MAGIC_OFFSET and data[MAGIC_OFFSET] != MAGIC:
        raise InvalidRecordError(
            f"record batch magic {data[MAGIC_OFFSET]} is not supported (only v2, magic 2)"
        )
    if size < HEADER_SIZE:
        raise CorruptRecordError(
            f"record batch of {size} bytes is shorter than its {HEADER_SIZE}-byte header"
        )
    return _make_header(HEADER.unpack_from(data))


def validate_batch(
    data: Buffer,
    *,
    max_batch_bytes: int,
    from_producer: bool = True,
    verify_crc: bool = True,
) -> BatchHeader:
    """Check that ``data`` is exactly one sound v2 batch; return its header.

    Checks magic, that batchLength matches ``len(data)``, the size limit, the CRC, the
    codec id, and that the record count is plausible: non-negative, at most
    lastOffsetDelta + 1, and (uncompressed) at most one per 7 bytes of records.

    ``from_producer`` adds the checks Kafka's broker applies to a client's batch: at
    least one record, lastOffsetDelta == count - 1, not a control batch, and a base
    sequence when there is a producer id. Leave it off for batches read back from a
    log, a fetch or a replica, where compaction may have removed records.

    Records are not looked at: ``framing.check_records`` walks a produced batch's,
    ``reader.decode_records`` decodes them. Reads nothing beyond ``data`` and
    allocates nothing in proportion to what the header claims.
    """
    header = parse_header(data)
    size = len(data)
    # The fields as locals: this runs once per produced batch (attribute reads of the
    # named tuple and its properties are the bulk of its cost besides the CRC).
    (base_offset, batch_length, _epoch, _magic, crc, attributes, last_offset_delta,
     _base_ts, _max_ts, _producer_id, _producer_epoch, _base_sequence, count) = header  # fmt: skip
    if batch_length < HEADER_SIZE - LOG_OVERHEAD or batch_length + LOG_OVERHEAD != size:
        raise CorruptRecordError(
            f"record batch length field says {batch_length + LOG_OVERHEAD} bytes but the "
            f"batch has {size}"
        )
    if size > max_batch_bytes:
        raise RecordBatchTooLargeError(
            f"record batch of {size} bytes exceeds the limit of {max_batch_bytes}"
        )
    if verify_crc:
        actual = crc32c(memoryview(data)[ATTRIBUTES_OFFSET:])
        if actual != crc:
            raise CorruptRecordError(
                f"record batch at offset {base_offset} fails its CRC: "
                f"stored {crc:#010x}, computed {actual:#010x}"
            )
    codec = compression_from_attributes(attributes)
    if count < 0 or count > last_offset_delta + 1:
        raise CorruptRecordError(
            f"record count {count} does not fit lastOffsetDelta {last_offset_delta}"
        )
    if codec is Compression.NONE and count * MIN_RECORD_SIZE > size - HEADER_SIZE:
        raise CorruptRecordError(
            f"{count} records cannot fit in {size - HEADER_SIZE} uncompressed bytes"
        )
    if from_producer:
        _check_producer_batch(header)
    return header


def _check_producer_batch(header: BatchHeader) -> None:
    if header.record_count == 0:
        raise InvalidRecordError("a produced record batch must hold at least one record")
    if header.last_offset_delta != header.record_count - 1:
        raise InvalidRecordError(
            f"lastOffsetDelta {header.last_offset_delta} does not match "
            f"{header.record_count} records"
        )
    if header.is_control:
        raise InvalidRecordError("clients may not produce control batches")
    if header.has_producer_id and header.base_sequence < 0:
        raise InvalidRecordError(
            f"producer id {header.producer_id} with invalid base sequence {header.base_sequence}"
        )


def iter_batches(buffer: Buffer, *, allow_partial_tail: bool = False) -> Iterator[memoryview]:
    """Split concatenated batches (a produce request's or fetch response's records).

    Yields a zero-copy view of each batch, framed by its batchLength; does not validate
    the batches. A trailing partial batch (a fetch response may cut the last one) is
    skipped when ``allow_partial_tail``, else raises ``CorruptRecordError``. A
    batchLength below the v2 minimum is always corruption.
    """
    view = memoryview(buffer).cast("B") if isinstance(buffer, memoryview) else memoryview(buffer)
    end = len(view)
    pos = 0
    min_length = HEADER_SIZE - LOG_OVERHEAD
    while pos < end:
        if end - pos < LOG_OVERHEAD:
            if allow_partial_tail:
                return
            raise CorruptRecordError(f"partial record batch header at byte {pos} of {end}")
        (length,) = _INT32.unpack_from(view, pos + 8)
        if length < min_length:
            raise CorruptRecordError(
                f"record batch at byte {pos} has length {length}, below the minimum {min_length}"
            )
        stop = pos + LOG_OVERHEAD + length
        if stop > end:
            if allow_partial_tail:
                return
            raise CorruptRecordError(
                f"record batch at byte {pos} of {stop - pos} bytes overruns the {end}-byte buffer"
            )
        yield view[pos:stop]
        pos = stop


def stamped(
    batch: Buffer,
    base_offset: int,
    leader_epoch: int,
    log_append_time_ms: int | None = None,
) -> bytes:
    """A stamped copy of ``batch`` (what ``stamp_batch`` does in place), made with one
    copy of its bytes: only the 61-byte header is edited before the one join. Without
    ``log_append_time_ms`` the CRC is kept (the stamped fields lie before the CRC'd
    region); with it the CRC is recomputed in one pass over the header's edited part and
    the records (over bytes that were validated first: call this after
    ``validate_batch``)."""
    if len(batch) < HEADER_SIZE:
        raise InvalidArgumentError(f"a record batch has at least {HEADER_SIZE} bytes")
    view = memoryview(batch).cast("B") if isinstance(batch, memoryview) else memoryview(batch)
    if log_append_time_ms is None:  # the hot path: 16 stamped bytes, then the rest
        (length,) = _INT32.unpack_from(view, BATCH_LENGTH_OFFSET)
        return b"".join((_STAMP.pack(base_offset, length, leader_epoch), view[_STAMP.size :]))
    head = bytearray(view[:HEADER_SIZE])
    body = view[HEADER_SIZE:]
    stamp_batch(head, base_offset, leader_epoch)
    (attributes,) = _INT16.unpack_from(head, ATTRIBUTES_OFFSET)
    _INT16.pack_into(head, ATTRIBUTES_OFFSET, attributes | TIMESTAMP_TYPE_BIT)
    _INT64.pack_into(head, MAX_TIMESTAMP_OFFSET, log_append_time_ms)
    crc = crc32c(body, crc32c(memoryview(head)[ATTRIBUTES_OFFSET:]))
    _UINT32.pack_into(head, CRC_OFFSET, crc)
    return b"".join((head, body))


def stamp_batch(
    batch: bytearray | memoryview,
    base_offset: int,
    leader_epoch: int,
    log_append_time_ms: int | None = None,
) -> None:
    """Write the leader's base offset and epoch into ``batch`` in place.

    Both fields lie before the CRC'd region, so the CRC stays valid. With
    ``log_append_time_ms`` the batch becomes LogAppendTime: attributes bit 3 is set,
    maxTimestamp is the append time, and the CRC is recomputed (over bytes that were
    validated first: call this after ``validate_batch``).
    """
    if isinstance(batch, memoryview) and batch.readonly:
        raise InvalidArgumentError("stamp_batch needs a writable buffer")
    if len(batch) < HEADER_SIZE:
        raise InvalidArgumentError(f"a record batch has at least {HEADER_SIZE} bytes")
    _INT64.pack_into(batch, BASE_OFFSET_OFFSET, base_offset)
    _INT32.pack_into(batch, LEADER_EPOCH_OFFSET, leader_epoch)
    if log_append_time_ms is None:
        return
    (attributes,) = _INT16.unpack_from(batch, ATTRIBUTES_OFFSET)
    _INT16.pack_into(batch, ATTRIBUTES_OFFSET, attributes | TIMESTAMP_TYPE_BIT)
    _INT64.pack_into(batch, MAX_TIMESTAMP_OFFSET, log_append_time_ms)
    _UINT32.pack_into(batch, CRC_OFFSET, crc32c(memoryview(batch)[ATTRIBUTES_OFFSET:]))
