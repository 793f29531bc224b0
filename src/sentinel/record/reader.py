"""Reading the records of a Kafka RecordBatch v2: ``Record`` and ``decode_records``.

``decode_batch`` is the one record parser: ``decode_records`` hands it a ``Record``
builder, the client's consumer a ``ConsumerRecord`` one (``sentinel.client._decode``).
The byte layout is drawn in ``sentinel.record.batch``. Decoding is per-record Python
work, so it belongs at the edges (the client's consumer, gRPC, the CLI), never on the
broker's produce or fetch path.

Bounded against hostile input: the batch's own framing is checked first, the
decompressed records may not exceed ``max_records_bytes``, the record count may not
exceed one per 7 bytes of records, each length is checked against its record's end
before anything is sliced, and every record must use exactly the bytes it declares.
Anything wrong raises ``CorruptRecordError`` (``RecordBatchTooLargeError`` for the size
limit); no ``IndexError``, ``struct.error`` or ``UnicodeDecodeError`` escapes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

from sentinel.codec.varint import decode_varint, decode_varlong
from sentinel.errors import CorruptRecordError, DecodeError, RecordBatchTooLargeError
from sentinel.record.batch import (
    HEADER_SIZE,
    MIN_RECORD_SIZE,
    BatchHeader,
    TimestampType,
    validate_batch,
)
from sentinel.record.compression import Compression, decompress

__all__ = [
    "DEFAULT_MAX_RECORDS",
    "DEFAULT_MAX_RECORDS_BYTES",
    "Record",
    "RecordHeaders",
    "decode_batch",
    "decode_records",
]

Buffer: TypeAlias = bytes | bytearray | memoryview
RecordHeaders: TypeAlias = tuple[tuple[str, bytes | None], ...]
T = TypeVar("T")

DEFAULT_MAX_RECORDS_BYTES = 64 * 1024 * 1024
"""Default bound on a batch's records after decompression (the zip-bomb guard)."""

DEFAULT_MAX_RECORDS = 1 << 20
"""Default bound on a batch's record count. A decoded record costs ~130 bytes of Python
objects beyond its key and value, so 7-byte records would otherwise turn 64 MiB of
decompressed records into over a gigabyte."""


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded record, with its absolute offset and timestamp."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: RecordHeaders = ()


# Building a frozen dataclass runs object.__setattr__ once per field (~1 us a record);
# setting the slots through their descriptors on a bare instance builds the same value
# in half the time. Only the decoder uses this; everyone else calls Record(...).
_new = object.__new__
_set_offset = Record.__dict__["offset"].__set__
_set_timestamp = Record.__dict__["timestamp"].__set__
_set_key = Record.__dict__["key"].__set__
_set_value = Record.__dict__["value"].__set__
_set_headers = Record.__dict__["headers"].__set__

_NO_MIN_OFFSET = -(1 << 64)
"""Below every offset a batch can hold (int64 base offset plus int32 delta)."""

_KEY_VALUE = ("key", "value")


def _unzigzag_table(bits: int) -> tuple[int, ...]:
    """``table[z] == (z >> 1) ^ -(z & 1)`` for every ``z`` of ``bits`` bits."""
    table = [0] * (1 << bits)
    table[0::2] = range(1 << (bits - 1))
    table[1::2] = range(-1, -(1 << (bits - 1)) - 1, -1)
    return tuple(table)


UNZIGZAG = _unzigzag_table(14)
"""The values of the zig-zag varints of one and two bytes, by their 7 or 14 payload
bits. Looking a value up instead of computing it saves ~10 % of the record loop, for
~0.6 MB held by the table (-8192 .. 8191)."""


def decode_records(
    batch: Buffer,
    *,
    max_records_bytes: int = DEFAULT_MAX_RECORDS_BYTES,
    max_records: int = DEFAULT_MAX_RECORDS,
    verify_crc: bool = True,
) -> list[Record]:
    """The records of the single batch ``batch``, decompressed as needed.

    The batch is validated first (as read back from a log or a fetch: compacted
    batches are fine); ``verify_crc=False`` skips only the CRC, for callers that have
    just checked it. More than ``max_records`` records, or records that decompress to
    more than ``max_records_bytes``, raise ``RecordBatchTooLargeError``.
    """
    return decode_batch(
        batch,
        _make_record,
        max_records_bytes=max_records_bytes,
        max_records=max_records,
        verify_crc=verify_crc,
    )


def _make_record(
    offset: int, timestamp: int, key: bytes | None, value: bytes | None, headers: RecordHeaders
) -> Record:
    record = _new(Record)
    _set_offset(record, offset)
    _set_timestamp(record, timestamp)
    _set_key(record, key)
    _set_value(record, value)
    _set_headers(record, headers)
    return record


def decode_batch(
    batch: Buffer,
    make: Callable[[int, int, bytes | None, bytes | None, RecordHeaders], T],
    *,
    min_offset: int | None = None,
    max_records_bytes: int = DEFAULT_MAX_RECORDS_BYTES,
    max_records: int = DEFAULT_MAX_RECORDS,
    verify_crc: bool = True,
) -> list[T]:
    """``make(offset, timestamp, key, value, headers)`` for each record of the single
    batch ``batch`` at or after ``min_offset`` (all of them by default), in order.

    The one record parser: ``decode_records`` passes a ``Record`` builder, the client's
    consumer a ``ConsumerRecord`` one. Every record is parsed and checked, skipped or
    not. The batch is validated first (as read back from a log or a fetch: compacted
    batches are fine); ``verify_crc=False`` skips only the CRC, for callers that have
    just checked it. More than ``max_records`` records, or records that decompress to
    more than ``max_records_bytes``, raise ``RecordBatchTooLargeError``.
    """
    header = validate_batch(
        batch,
        max_batch_bytes=len(batch),
        from_producer=False,
        verify_crc=verify_crc,
    )
    if header.record_count > max_records:
        raise RecordBatchTooLargeError(
            f"batch at offset {header.base_offset} holds {header.record_count} records, "
            f"more than the limit of {max_records}"
        )
    payload = memoryview(batch)[HEADER_SIZE:]
    codec = header.compression
    data = (
        bytes(payload)
        if codec == Compression.NONE
        else decompress(codec, payload, max_records_bytes)
    )
    count = header.record_count
    if count * MIN_RECORD_SIZE > len(data):
        raise CorruptRecordError(f"{count} records cannot fit in {len(data)} bytes of records")
    try:
        return _parse_records(
            header, data, make, _NO_MIN_OFFSET if min_offset is None else min_offset
        )
    except IndexError as exc:
        raise CorruptRecordError(f"record truncated in batch at {header.base_offset}") from exc
    except DecodeError as exc:
        raise CorruptRecordError(f"bad varint in batch at {header.base_offset}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise CorruptRecordError(
            f"header key is not UTF-8 in batch at {header.base_offset}: {exc}"
        ) from exc


def _corrupt(header: BatchHeader, pos: int, what: str) -> CorruptRecordError:
    return CorruptRecordError(
        f"batch at offset {header.base_offset}: {what} at byte {pos} of its records"
    )


def _parse_records(
    header: BatchHeader,
    buf: bytes,
    make: Callable[[int, int, bytes | None, bytes | None, RecordHeaders], T],
    min_offset: int,
) -> list[T]:
    """The record loop, one long function on purpose: the varints of a record take a
    one- and two-byte fast path inline (values up to 8191, looked up in ``UNZIGZAG``),
    which halves the cost of decoding 100-byte records compared with a call per varint.
    Records before ``min_offset`` are parsed and checked like the others, then dropped.

    Reads past the end raise ``IndexError`` (translated by the caller); reads past a
    record's end are caught by the length checks and the final position check.
    """
    base_offset = header.base_offset
    base_ts = header.base_timestamp
    append_time = (
        header.max_timestamp if header.timestamp_type == TimestampType.LOG_APPEND_TIME else None
    )
    end = len(buf)
    pos = 0
    out: list[T] = []
    add = out.append
    unzigzag = UNZIGZAG
    for _ in range(header.record_count):
        b = buf[pos]
        if b < 0x80:
            length = unzigzag[b]
            pos += 1
        elif (c := buf[pos + 1]) < 0x80:
            length = unzigzag[(b & 0x7F) | (c << 7)]
            pos += 2
        else:
            length, pos = decode_varint(buf, pos)
        rec_end = pos + length
        if length < MIN_RECORD_SIZE - 1 or rec_end > end:
            raise _corrupt(header, pos, f"record length {length}")
        pos += 1  # attributes: unused
        b = buf[pos]
        if b < 0x80:
            ts_delta = unzigzag[b]
            pos += 1
        elif (c := buf[pos + 1]) < 0x80:
            ts_delta = unzigzag[(b & 0x7F) | (c << 7)]
            pos += 2
        else:
            ts_delta, pos = decode_varlong(buf, pos)
        b = buf[pos]
        if b < 0x80:
            off_delta = unzigzag[b]
            pos += 1
        elif (c := buf[pos + 1]) < 0x80:
            off_delta = unzigzag[(b & 0x7F) | (c << 7)]
            pos += 2
        else:
            off_delta, pos = decode_varint(buf, pos)
        key = value = None
        for what in _KEY_VALUE:
            b = buf[pos]
            if b < 0x80:
                n = unzigzag[b]
                pos += 1
            elif (c := buf[pos + 1]) < 0x80:
                n = unzigzag[(b & 0x7F) | (c << 7)]
                pos += 2
            else:
                n, pos = decode_varint(buf, pos)
            if n < 0:
                if n != -1:
                    raise _corrupt(header, pos, f"{what} length {n}")
                field = None
            elif pos + n > rec_end:
                raise _corrupt(header, pos, f"{what} of {n} bytes overruns its record")
            else:
                field = buf[pos : pos + n]
                pos += n
            key, value = value, field  # the key, then the value
        if buf[pos] == 0:
            headers: RecordHeaders = ()
            pos += 1
        else:
            headers, pos = _parse_headers(header, buf, pos, rec_end)
        if pos != rec_end:
            raise _corrupt(
                header, pos, f"record declared {length} bytes but used a different number"
            )
        offset = base_offset + off_delta
        if offset >= min_offset:
            add(
                make(
                    offset,
                    base_ts + ts_delta if append_time is None else append_time,
                    key,
                    value,
                    headers,
                )
            )
    if pos != end:
        raise _corrupt(
            header, pos, f"{end - pos} bytes after the last of {header.record_count} records"
        )
    return out


def _parse_headers(
    header: BatchHeader, buf: bytes, pos: int, rec_end: int
) -> tuple[RecordHeaders, int]:
    count, pos = decode_varint(buf, pos)
    if count < 0 or count * 2 > rec_end - pos:
        raise _corrupt(header, pos, f"header count {count}")
    headers: list[tuple[str, bytes | None]] = []
    for _ in range(count):
        n, pos = decode_varint(buf, pos)
        if n < 0 or pos + n > rec_end:
            raise _corrupt(header, pos, f"header key length {n}")
        name = buf[pos : pos + n].decode("utf-8")
        pos += n
        n, pos = decode_varint(buf, pos)
        if n < -1 or pos + n > rec_end:
            raise _corrupt(header, pos, f"header value length {n}")
        if n == -1:
            headers.append((name, None))
        else:
            headers.append((name, buf[pos : pos + n]))
            pos += n
    return tuple(headers), pos
