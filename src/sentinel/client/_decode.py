"""Decoding a fetched batch straight into ``ConsumerRecord`` tuples.

``sentinel.record.decode_records`` builds a ``Record`` per record; the consumer would
then copy each into a ``ConsumerRecord`` with its topic and partition. At half a
million records a second those two objects per record are a quarter of the
consumer's time, so this module parses the records (layout in
``sentinel.record.batch``) into the tuples ``poll`` returns, in one pass.

It keeps the codec's guarantees: the batch is validated first (framing, CRC, codec)
by ``validate_batch``, decompression is bounded, every length is checked against its
record's end before slicing, and every record must use exactly the bytes it declares;
anything else raises ``CorruptRecordError``. The tests check it against
``decode_records`` on every codec, with and without keys, values and headers.
"""

from __future__ import annotations

from typing import TypeAlias

from sentinel.client.types import ConsumerRecord, Headers
from sentinel.codec.varint import decode_varint, decode_varlong
from sentinel.errors import CorruptRecordError, DecodeError, RecordBatchTooLargeError
from sentinel.record import HEADER_SIZE, Compression, TimestampType, decompress, validate_batch
from sentinel.record.batch import MIN_RECORD_SIZE, BatchHeader
from sentinel.record.reader import DEFAULT_MAX_RECORDS, DEFAULT_MAX_RECORDS_BYTES

__all__ = ["decode_consumer_records"]

Buffer: TypeAlias = bytes | bytearray | memoryview
_new = tuple.__new__


def decode_consumer_records(
    batch: Buffer, topic: str, partition: int, min_offset: int
) -> list[ConsumerRecord]:
    """The records of one batch at or after ``min_offset``, as ``ConsumerRecord``s."""
    header = validate_batch(batch, max_batch_bytes=len(batch), from_producer=False)
    if header.record_count > DEFAULT_MAX_RECORDS:
        raise RecordBatchTooLargeError(
            f"batch at offset {header.base_offset} holds {header.record_count} records"
        )
    payload = memoryview(batch)[HEADER_SIZE:]
    codec = header.compression
    data = (
        bytes(payload)
        if codec == Compression.NONE
        else decompress(codec, payload, DEFAULT_MAX_RECORDS_BYTES)
    )
    if header.record_count * MIN_RECORD_SIZE > len(data):
        raise CorruptRecordError(
            f"{header.record_count} records cannot fit in {len(data)} bytes of records"
        )
    try:
        return _parse(header, data, topic, partition, min_offset)
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


def _parse(
    header: BatchHeader, buf: bytes, topic: str, partition: int, min_offset: int
) -> list[ConsumerRecord]:
    """Varints of one or two bytes (values up to 8191) are decoded inline; longer ones
    call the codec. Reads past the end raise ``IndexError`` (translated by the caller)."""
    base_offset = header.base_offset
    base_ts = header.base_timestamp
    append_time = (
        header.max_timestamp if header.timestamp_type == TimestampType.LOG_APPEND_TIME else None
    )
    end = len(buf)
    pos = 0
    out: list[ConsumerRecord] = []
    add = out.append
    new, cls = _new, ConsumerRecord
    no_headers: Headers = ()
    for _ in range(header.record_count):
        b = buf[pos]
        if b < 0x80:
            length = (b >> 1) ^ -(b & 1)
            pos += 1
        elif (c := buf[pos + 1]) < 0x80:
            length = (b & 0x7F) | (c << 7)
            length = (length >> 1) ^ -(length & 1)
            pos += 2
        else:
            length, pos = decode_varint(buf, pos)
        rec_end = pos + length
        if length < MIN_RECORD_SIZE - 1 or rec_end > end:
            raise _corrupt(header, pos, f"record length {length}")
        pos += 1  # attributes: unused
        b = buf[pos]
        if b < 0x80:
            ts_delta = (b >> 1) ^ -(b & 1)
            pos += 1
        elif (c := buf[pos + 1]) < 0x80:
            ts_delta = (b & 0x7F) | (c << 7)
            ts_delta = (ts_delta >> 1) ^ -(ts_delta & 1)
            pos += 2
        else:
            ts_delta, pos = decode_varlong(buf, pos)
        b = buf[pos]
        if b < 0x80:
            off_delta = (b >> 1) ^ -(b & 1)
            pos += 1
        elif (c := buf[pos + 1]) < 0x80:
            off_delta = (b & 0x7F) | (c << 7)
            off_delta = (off_delta >> 1) ^ -(off_delta & 1)
            pos += 2
        else:
            off_delta, pos = decode_varint(buf, pos)
        b = buf[pos]
        if b < 0x80:
            n = (b >> 1) ^ -(b & 1)
            pos += 1
        elif (c := buf[pos + 1]) < 0x80:
            n = (b & 0x7F) | (c << 7)
            n = (n >> 1) ^ -(n & 1)
            pos += 2
        else:
            n, pos = decode_varint(buf, pos)
        if n < 0:
            if n != -1:
                raise _corrupt(header, pos, f"key length {n}")
            key = None
        elif pos + n > rec_end:
            raise _corrupt(header, pos, f"key of {n} bytes overruns its record")
        else:
            key = buf[pos : pos + n]
            pos += n
        b = buf[pos]
        if b < 0x80:
            n = (b >> 1) ^ -(b & 1)
            pos += 1
        elif (c := buf[pos + 1]) < 0x80:
            n = (b & 0x7F) | (c << 7)
            n = (n >> 1) ^ -(n & 1)
            pos += 2
        else:
            n, pos = decode_varint(buf, pos)
        if n < 0:
            if n != -1:
                raise _corrupt(header, pos, f"value length {n}")
            value = None
        elif pos + n > rec_end:
            raise _corrupt(header, pos, f"value of {n} bytes overruns its record")
        else:
            value = buf[pos : pos + n]
            pos += n
        if buf[pos] == 0:
            headers = no_headers
            pos += 1
        else:
            headers, pos = _parse_headers(header, buf, pos, rec_end)
        if pos != rec_end:
            raise _corrupt(
                header, pos, f"record declared {length} bytes but used a different number"
            )
        offset = base_offset + off_delta
        if offset >= min_offset:
            ts = base_ts + ts_delta if append_time is None else append_time
            add(new(cls, (topic, partition, offset, ts, key, value, headers)))
    if pos != end:
        raise _corrupt(
            header, pos, f"{end - pos} bytes after the last of {header.record_count} records"
        )
    return out


def _parse_headers(header: BatchHeader, buf: bytes, pos: int, rec_end: int) -> tuple[Headers, int]:
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
