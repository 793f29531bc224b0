"""The framing walk of a produced batch's records: what Kafka's LogValidator checks.

``validate_batch`` checks a batch's header, length and CRC, which only prove that the
bytes arrived as the producer sent them, not that they say what the header says. A
batch with a valid CRC can still lie: count 1 / lastOffsetDelta 0 over three records
(the log would then hand out offsets that overlap the next batch's), random bytes as
records, or a compressed payload that does not inflate, or inflates to a gigabyte.
``check_records`` walks the records (inflated first when compressed) and refuses all
of these before anything is stored. The record layout is drawn in
``sentinel.record.batch``; per record it checks::

    length          varint   >= 6, and the record ends within the records
    attributes      int8     any (unused)
    timestampDelta  varlong  at most 10 bytes, within int64
    offsetDelta     varint   == the record's index (0, 1, .., count - 1)
    keyLength       varint   >= -1 (-1: null key, counted), then that many bytes
    valueLength     varint   >= -1, then that many bytes
    headersCount    varint   >= 0, each header's key length >= 0 and its key UTF-8,
                             its value length >= -1
    -> the fields end exactly at the record's declared end

and that exactly ``recordsCount`` records end exactly at the end of the records.

What it accepts, ``reader.decode_records`` decodes into exactly ``recordsCount``
records (``tests/test_record_framing.py`` checks this against mutated batches), so a
stored batch never turns into a poison batch for a consumer, a fetch that decodes, or
key compaction.

Errors: ``CorruptRecordError`` (Kafka's CORRUPT_MESSAGE) for framing that does not add
up, ``InvalidRecordError`` (INVALID_RECORD) for offset deltas out of sequence, and
``RecordBatchTooLargeError`` for records that inflate past ``max_records_bytes``.

The decompression bound defaults to ``DEFAULT_MAX_RECORDS_BYTES`` (64 MiB), the bound
every reader of a stored batch applies (``decode_records``, key compaction, the
client): a batch accepted here is one they can all read, and a legitimate batch that
compresses better than 64:1 at the 1 MiB ``max.message.bytes`` is not refused. A bomb
costs at most one bounded inflate (``compression.decompress`` stops at the bound; a
zstd frame that declares a larger size is refused before decoding), never the gigabyte:
measured, a 1 GB gzip, lz4 or undeclared-size zstd bomb is refused in 0.08-0.12 s with
at most ~130 MiB held, a size-declaring zstd one in 0.1 ms.

Cost: the walk is on the produce path for every batch, so it is one loop over local
variables, with the one- and two-byte varints (values up to 8191: every length below
8 KiB, every offset delta below 8192) decoded inline, three-byte record and value
lengths too (up to 1 MiB), and no object made per record: keys and values are skipped,
never sliced. About 0.4 us a record (64 records of 1 KiB: ~25 us a batch).
"""

from __future__ import annotations

from typing import TypeAlias

from sentinel.codec.varint import decode_varint, decode_varlong
from sentinel.errors import (
    CorruptRecordError,
    DecodeError,
    InvalidRecordError,
    RecordBatchTooLargeError,
)
from sentinel.record.batch import HEADER_SIZE, MIN_RECORD_SIZE, BatchHeader
from sentinel.record.compression import CODEC_MASK, Compression, decompress
from sentinel.record.reader import DEFAULT_MAX_RECORDS, DEFAULT_MAX_RECORDS_BYTES, UNZIGZAG

__all__ = ["check_records", "walk_records"]

Buffer: TypeAlias = bytes | bytearray | memoryview

_MIN_LENGTH = MIN_RECORD_SIZE - 1
"""The least a record's length varint may say: the six one-byte fields after it."""


def check_records(
    batch: Buffer,
    header: BatchHeader,
    *,
    max_records_bytes: int = DEFAULT_MAX_RECORDS_BYTES,
    max_records: int = DEFAULT_MAX_RECORDS,
) -> int:
    """Walk the records of ``batch`` (its ``header`` from ``validate_batch``), inflating
    them first if compressed; return how many have a null key (a compacted topic
    refuses those). Raises as the module docstring says; reads nothing beyond
    ``batch`` and inflates at most ``max_records_bytes``."""
    count = header.record_count
    if count > max_records:
        raise RecordBatchTooLargeError(
            f"batch holds {count} records, more than the limit of {max_records}"
        )
    if header.attributes & CODEC_MASK == Compression.NONE:
        return walk_records(batch, HEADER_SIZE, len(batch), count)
    records = decompress(header.compression, memoryview(batch)[HEADER_SIZE:], max_records_bytes)
    return walk_records(records, 0, len(records), count)


def walk_records(buf: Buffer, pos: int, end: int, count: int) -> int:
    """Check that ``buf[pos:end]`` is exactly ``count`` well-framed records with offset
    deltas 0 .. count - 1; return how many have a null key.

    One long loop on purpose (see the module docstring). Reads past ``end`` cannot
    happen unnoticed: ``buf`` ends at ``end`` or a record's end is checked against it
    before its fields are read, and a field that runs past its record's end leaves the
    position past that end (every step moves forward), which the end check refuses.
    """
    if end > len(buf):
        raise CorruptRecordError(f"records end {end} is past the buffer's {len(buf)} bytes")
    start = pos
    unzigzag = UNZIGZAG
    null_keys = 0
    index = 0
    rec_end = pos
    try:
        for index in range(count):
            b = buf[pos]
            if b < 0x80:
                length = unzigzag[b]
                pos += 1
            elif (c := buf[pos + 1]) < 0x80:
                length = unzigzag[(b & 0x7F) | (c << 7)]
                pos += 2
            elif (d := buf[pos + 2]) < 0x80:  # records of 8 KiB .. 1 MiB
                z = (b & 0x7F) | (c & 0x7F) << 7 | d << 14
                length = (z >> 1) ^ -(z & 1)
                pos += 3
            else:
                length, pos = decode_varint(buf, pos)
            rec_end = pos + length
            if length < _MIN_LENGTH or rec_end > end:
                raise CorruptRecordError(
                    f"record {index} declares length {length} at byte {pos - start} "
                    f"of {end - start} bytes of records"
                )
            # attributes (unused), then timestampDelta: only its framing matters.
            if buf[pos + 1] < 0x80:
                pos += 2
            elif buf[pos + 2] < 0x80:
                pos += 3
            else:
                _, pos = decode_varlong(buf, pos + 1)
            b = buf[pos]
            if b < 0x80:
                delta = unzigzag[b]
                pos += 1
            elif (c := buf[pos + 1]) < 0x80:
                delta = unzigzag[(b & 0x7F) | (c << 7)]
                pos += 2
            else:
                delta, pos = decode_varint(buf, pos)
            # key, then value: a length >= -1, then that many bytes, skipped.
            b = buf[pos]
            if b < 0x80:
                n = unzigzag[b]
                pos += 1
            elif (c := buf[pos + 1]) < 0x80:
                n = unzigzag[(b & 0x7F) | (c << 7)]
                pos += 2
            else:
                n, pos = decode_varint(buf, pos)
            if n >= 0:
                pos += n
            elif n == -1:
                null_keys += 1
            else:
                raise CorruptRecordError(f"record {index} has key length {n}")
            b = buf[pos]
            if b < 0x80:
                n = unzigzag[b]
                pos += 1
            elif (c := buf[pos + 1]) < 0x80:
                n = unzigzag[(b & 0x7F) | (c << 7)]
                pos += 2
            elif (d := buf[pos + 2]) < 0x80:
                z = (b & 0x7F) | (c & 0x7F) << 7 | d << 14
                n = (z >> 1) ^ -(z & 1)
                pos += 3
            else:
                n, pos = decode_varint(buf, pos)
            if n >= 0:
                pos += n
            elif n != -1:
                raise CorruptRecordError(f"record {index} has value length {n}")
            if buf[pos] == 0:  # no headers: the usual case
                pos += 1
            else:
                pos = _walk_headers(buf, pos, rec_end, index)
            if pos != rec_end:
                raise CorruptRecordError(
                    f"record {index} declares {length} bytes but its fields take "
                    f"{length + pos - rec_end}"
                )
            if delta != index:  # after the framing: garbage is corrupt, not out of order
                raise _out_of_sequence(index, delta, count)
    except IndexError as exc:
        raise CorruptRecordError(
            f"record {index} of {count} runs past the end of {end - start} bytes of records"
        ) from exc
    except DecodeError as exc:
        raise CorruptRecordError(f"record {index} has a bad varint: {exc}") from exc
    if pos != end:
        raise CorruptRecordError(
            f"{end - pos} bytes follow the {count} records the batch header declares"
        )
    return null_keys


def _out_of_sequence(index: int, delta: int, count: int) -> InvalidRecordError:
    return InvalidRecordError(
        f"record {index} has offset delta {delta}: a produced batch's offset deltas "
        f"must run 0 .. {count - 1} in order"
    )


def _walk_headers(buf: Buffer, pos: int, rec_end: int, index: int) -> int:
    """The position after a record's headers (count, then each key and value), checked
    as ``reader`` checks them; the rare path, so plain calls."""
    count, pos = decode_varint(buf, pos)
    if count < 0 or count * 2 > rec_end - pos:
        raise CorruptRecordError(f"record {index} has header count {count}")
    for _ in range(count):
        n, pos = decode_varint(buf, pos)
        if n < 0 or pos + n > rec_end:
            raise CorruptRecordError(f"record {index} has header key length {n}")
        try:
            str(buf[pos : pos + n], "utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptRecordError(f"record {index} has a header key not UTF-8") from exc
        pos += n
        n, pos = decode_varint(buf, pos)
        if n < -1 or pos + n > rec_end:
            raise CorruptRecordError(f"record {index} has header value length {n}")
        if n > 0:
            pos += n
    return pos
