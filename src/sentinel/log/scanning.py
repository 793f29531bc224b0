"""Reading stored batches out of a partition's engine: the helpers every read uses."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sentinel.log.layout import DATA_TAG, data_key
from sentinel.log.retention import BatchInfo
from sentinel.record import decode_records, parse_header
from sentinel.storage.engine import Engine

T = TypeVar("T")
_BASE = struct.Struct(">q")
_LAST_DELTA = struct.Struct(">i")
_LAST_DELTA_AT = 23


def next_offset(batch: bytes | memoryview) -> int:
    """The offset after a stored batch (base offset + lastOffsetDelta + 1)."""
    base = _BASE.unpack_from(batch, 0)[0]
    return int(base + _LAST_DELTA.unpack_from(batch, _LAST_DELTA_AT)[0] + 1)


@contextmanager
def scanning(entries: Iterator[T]) -> Iterator[Iterator[T]]:
    """Close an engine scan (a generator holding a read guard) when the block ends."""
    try:
        yield entries
    finally:
        close = getattr(entries, "close", None)
        if close is not None:
            close()


def batches_from(
    engine: Engine, offset: int, limit: int
) -> Iterator[tuple[bytes, bytes | memoryview]]:
    """Stored batches from the one holding ``offset`` (or the next, in a gap) up to
    the base offset ``limit``. One scan when ``offset`` is a base offset (a consumer
    reading on), plus one floor seek otherwise. No batch is copied: a batch is the
    stored ``bytes`` or a view of a large value's WAL entry."""
    start = data_key(offset)
    with scanning(engine.scan_views(start, data_key(limit))) as scan:
        first = next(scan, None)
        if first is None or first[0] != start:
            floor = engine.seek_floor(start)
            holds_offset = (
                floor is not None
                and floor[0].startswith(DATA_TAG)
                and next_offset(floor[1]) > offset
            )
            if floor is not None and holds_offset:
                yield floor
        if first is not None:
            yield first
        yield from scan


def batch_infos(entries: Iterable[tuple[bytes, bytes]]) -> Iterator[BatchInfo]:
    for _key, value in entries:
        header = parse_header(value)
        yield BatchInfo(header.base_offset, header.next_offset, header.max_timestamp, len(value))


def find_timestamp(
    engine: Engine, start: int, limit: int, log_start: int, timestamp_ms: int
) -> tuple[int, int] | None:
    """(offset, timestamp) of the first record at or after ``start`` (and the log
    start) with a timestamp >= ``timestamp_ms``, in batches below ``limit``."""
    with scanning(batches_from(engine, start, limit)) as found:
        for _key, value in found:
            if parse_header(value).max_timestamp < timestamp_ms:
                continue
            for record in decode_records(value, verify_crc=False):
                if record.offset >= log_start and record.timestamp >= timestamp_ms:
                    return record.offset, record.timestamp
    return None
