"""Writing Kafka RecordBatch v2: ``BatchBuilder`` for incremental appends, ``build_batch``.

The byte layout is drawn in ``sentinel.record.batch``. The producer calls ``append``
once per record, so it is kept to a few table lookups and one ``bytes.join``: small
lengths and deltas come from a precomputed varint table, and the batch is assembled
with one more join at ``build``.

The base timestamp is the first record's, as the Java client writes it; later records
carry a (possibly negative) delta. Offsets are deltas from 0 to count - 1; the leader
stamps the base offset.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import TypeAlias

from sentinel.codec.crc import crc32c
from sentinel.codec.varint import ZIGZAG_SMALL, ZIGZAG_SMALL_LIMIT, encode_varint, encode_varlong
from sentinel.errors import InvalidArgumentError, StateError, UnsupportedCompressionError
from sentinel.record.batch import (
    CONTROL_BIT,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    TIMESTAMP_TYPE_BIT,
    TRANSACTIONAL_BIT,
    TimestampType,
)
from sentinel.record.compression import Compression, compress

__all__ = ["BatchBuilder", "Header", "RecordInput", "build_batch"]

Header: TypeAlias = tuple[str, bytes | None]
"""A record header: a UTF-8 key and a nullable value."""

RecordInput: TypeAlias = tuple[bytes | None, bytes | None, Sequence[Header], int]
"""What ``build_batch`` takes per record: (key, value, headers, timestamp_ms)."""

_PREFIX = struct.Struct(">qiibI")  # baseOffset .. crc: 21 bytes outside the CRC
_TAIL = struct.Struct(">hiqqqhii")  # attributes .. recordsCount: 40 bytes
_NULL = b"\x01"  # zig-zag -1
_NO_HEADERS = b"\x00"


def _varint(n: int) -> bytes:
    return ZIGZAG_SMALL[n] if 0 <= n < ZIGZAG_SMALL_LIMIT else encode_varint(n)


def _encode_headers(headers: Sequence[Header]) -> bytes:
    parts = [_varint(len(headers))]
    for name, value in headers:
        raw = name.encode("utf-8")
        parts.append(_varint(len(raw)))
        parts.append(raw)
        if value is None:
            parts.append(_NULL)
        else:
            parts.append(_varint(len(value)))
            parts.append(value)
    return b"".join(parts)


class BatchBuilder:
    """Accumulates records and writes one batch. Not thread-safe.

    ``size_estimate`` is the exact size of the batch uncompressed; compression only
    makes it smaller (in practice). ``build`` may be called more than once.
    """

    __slots__ = (
        "_attributes",
        "_base_offset",
        "_base_sequence",
        "_base_ts",
        "_compression",
        "_count",
        "_leader_epoch",
        "_max_ts",
        "_parts",
        "_producer_epoch",
        "_producer_id",
        "_size",
    )

    def __init__(
        self,
        *,
        compression: Compression = Compression.NONE,
        base_offset: int = 0,
        producer_id: int = -1,
        producer_epoch: int = -1,
        base_sequence: int = -1,
        leader_epoch: int = -1,
        timestamp_type: TimestampType = TimestampType.CREATE_TIME,
        is_transactional: bool = False,
        is_control: bool = False,
    ) -> None:
        try:
            codec = Compression(compression)
        except ValueError as exc:
            raise UnsupportedCompressionError(f"unknown compression codec {compression!r}") from exc
        attributes = int(codec)
        if timestamp_type == TimestampType.LOG_APPEND_TIME:
            attributes |= TIMESTAMP_TYPE_BIT
        if is_transactional:
            attributes |= TRANSACTIONAL_BIT
        if is_control:
            attributes |= CONTROL_BIT
        self._attributes = attributes
        self._compression = codec
        self._base_offset = base_offset
        self._producer_id = producer_id
        self._producer_epoch = producer_epoch
        self._base_sequence = base_sequence
        self._leader_epoch = leader_epoch
        self._parts: list[bytes] = []
        self._count = 0
        self._size = HEADER_SIZE
        self._base_ts = -1
        self._max_ts = -1

    @property
    def count(self) -> int:
        """Records appended so far."""
        return self._count

    @property
    def size_estimate(self) -> int:
        """Bytes of the batch if built now without compression."""
        return self._size

    def append(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[Header],
        timestamp_ms: int,
    ) -> int:
        """Add one record; return its offset delta (0 for the first)."""
        zz = ZIGZAG_SMALL
        limit = ZIGZAG_SMALL_LIMIT
        delta = self._count
        if delta:
            ts_delta = timestamp_ms - self._base_ts
            if timestamp_ms > self._max_ts:  # noqa: PLR1730 (cheaper than max() per record)
                self._max_ts = timestamp_ms
        else:
            self._base_ts = self._max_ts = timestamp_ms
            ts_delta = 0
        ts_part = zz[ts_delta] if 0 <= ts_delta < limit else encode_varlong(ts_delta)
        off_part = zz[delta] if delta < limit else encode_varint(delta)
        if key is None:
            key_len = _NULL
            key = b""
        else:
            n = len(key)
            key_len = zz[n] if n < limit else encode_varint(n)
        if value is None:
            value_len = _NULL
            value = b""
        else:
            n = len(value)
            value_len = zz[n] if n < limit else encode_varint(n)
        header_part = _encode_headers(headers) if headers else _NO_HEADERS
        body = b"".join((b"\x00", ts_part, off_part, key_len, key, value_len, value, header_part))
        n = len(body)
        length = zz[n] if n < limit else encode_varint(n)
        parts = self._parts
        parts.append(length)
        parts.append(body)
        self._size += len(length) + n
        self._count = delta + 1
        return delta

    def build(self) -> bytes:
        """The batch: header, CRC32C, records (compressed as configured)."""
        count = self._count
        if count == 0:
            raise StateError("a record batch needs at least one record")
        records = b"".join(self._parts)
        if self._compression != Compression.NONE:
            records = compress(self._compression, records)
        try:
            tail = _TAIL.pack(
                self._attributes,
                count - 1,
                self._base_ts,
                self._max_ts,
                self._producer_id,
                self._producer_epoch,
                self._base_sequence,
                count,
            )
            crc = crc32c(records, crc32c(tail))
            prefix = _PREFIX.pack(
                self._base_offset,
                HEADER_SIZE - LOG_OVERHEAD + len(records),
                self._leader_epoch,
                MAGIC,
                crc,
            )
        except struct.error as exc:
            raise InvalidArgumentError(f"a batch header field is out of range: {exc}") from exc
        return b"".join((prefix, tail, records))


def build_batch(
    records: Iterable[RecordInput],
    *,
    compression: Compression = Compression.NONE,
    base_offset: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    leader_epoch: int = -1,
    timestamp_type: TimestampType = TimestampType.CREATE_TIME,
    is_transactional: bool = False,
    is_control: bool = False,
) -> bytes:
    """One batch of ``records``, each ``(key, value, headers, timestamp_ms)``."""
    builder = BatchBuilder(
        compression=compression,
        base_offset=base_offset,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        leader_epoch=leader_epoch,
        timestamp_type=timestamp_type,
        is_transactional=is_transactional,
        is_control=is_control,
    )
    append = builder.append
    for key, value, headers, timestamp_ms in records:
        append(key, value, headers, timestamp_ms)
    return builder.build()
