"""Key compaction (``cleanup.policy=compact``): keep the latest record of every key.

``collect_keys`` and ``compact_batch`` are pure functions over batch bytes;
``build_offset_map`` and ``RewritePass`` drive them over a partition's engine, and the
partition log installs each chunk of rewrites in one atomic write.

A pass has two steps, as Kafka's log cleaner:

1. ``collect_keys`` over the dirty batches (those after the last compaction point and
   before the newest batch) builds the offset map: key -> offset of its latest record.
2. ``compact_batch`` over every batch before the newest one drops each record whose key
   has a later offset in the map, each record without a key (a compacted topic cannot
   serve it), and each tombstone (null value) that is the latest for its key and whose
   record timestamp is older than the delete horizon (now - ``delete_retention_ms``).
   Kafka (KIP-534) instead stamps a delete horizon into the batch when it first cleans
   it; judging by the record's own timestamp needs no extra rewrite, but a producer's
   skewed CreateTime clock shortens or stretches the retention.

A rewritten batch keeps its base offset, lastOffsetDelta, baseTimestamp, leader epoch,
producer id / epoch / base sequence and codec; the kept records are copied byte for
byte (so they keep their offset and timestamp deltas: v2 allows the gaps), recompressed
when the batch was compressed; recordsCount, batchLength and the CRC are recomputed,
and maxTimestamp too for CreateTime batches. A consumer therefore reads every kept
record at its original offset and timestamp. A batch left with no records is returned
as ``None`` (deleted); control batches are never touched.

Per-record Python work is confined here: compaction is background work of compacted
topics (changelogs), never on the produce or fetch path.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass

from sentinel.codec.crc import crc32c
from sentinel.codec.varint import decode_varint
from sentinel.log.layout import DATA_TAG, data_key, key_offset
from sentinel.log.scanning import scanning
from sentinel.record import (
    HEADER_SIZE,
    MAGIC,
    Compression,
    TimestampType,
    compress,
    decode_records,
    decompress,
    parse_header,
)
from sentinel.record.batch import LOG_OVERHEAD
from sentinel.record.reader import DEFAULT_MAX_RECORDS_BYTES
from sentinel.storage.engine import Engine

_PREFIX = struct.Struct(">qiibI")  # baseOffset .. crc
_TAIL = struct.Struct(">hiqqqhii")  # attributes .. recordsCount
assert _PREFIX.size + _TAIL.size == HEADER_SIZE


@dataclass(frozen=True, slots=True)
class Rewrite:
    """The outcome of compacting one batch that changed."""

    base_offset: int
    old_size: int
    #: The compacted batch, or None when no record is left (the batch is deleted).
    batch: bytes | None
    removed_records: int

    @property
    def new_size(self) -> int:
        return 0 if self.batch is None else len(self.batch)


def collect_keys(batch: bytes, offset_map: MutableMapping[bytes, int]) -> int:
    """Record the offset of every keyed record of ``batch`` in ``offset_map`` (a later
    batch overwrites an earlier one); return how many records it saw."""
    header = parse_header(batch)
    if header.is_control:
        return 0
    records = decode_records(batch, verify_crc=False)
    for record in records:
        if record.key is not None:
            offset_map[record.key] = record.offset
    return len(records)


def compact_batch(
    batch: bytes, offset_map: Mapping[bytes, int], tombstone_horizon_ms: int
) -> tuple[Rewrite | None, int]:
    """Compact one batch against the offset map: the rewrite (None when nothing is
    removed) and how many tombstones it keeps (a later pass may drop them)."""
    header = parse_header(batch)
    if header.is_control or header.record_count == 0:
        return None, 0
    records = decode_records(batch, verify_crc=False)
    keep: list[int] = []
    tombstones = 0
    for index, record in enumerate(records):
        key = record.key
        if key is None:
            continue
        latest = offset_map.get(key, record.offset)
        if latest > record.offset:
            continue
        if record.value is None:
            if record.timestamp < tombstone_horizon_ms:
                continue
            tombstones += 1
        keep.append(index)
    removed = len(records) - len(keep)
    if removed == 0:
        return None, tombstones
    if not keep:
        return Rewrite(header.base_offset, len(batch), None, removed), 0
    codec = header.compression
    payload = memoryview(batch)[HEADER_SIZE:]
    data = (
        bytes(payload)
        if codec == Compression.NONE
        else decompress(codec, payload, DEFAULT_MAX_RECORDS_BYTES)
    )
    spans = _record_spans(data, len(records))
    raw = b"".join(data[spans[i] : spans[i + 1]] for i in keep)
    body = raw if codec == Compression.NONE else compress(codec, raw)
    if header.timestamp_type == TimestampType.LOG_APPEND_TIME:
        max_ts = header.max_timestamp
    else:
        max_ts = max(records[i].timestamp for i in keep)
    tail = _TAIL.pack(
        header.attributes,
        header.last_offset_delta,
        header.base_timestamp,
        max_ts,
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
        len(keep),
    )
    crc = crc32c(body, crc32c(tail))
    prefix = _PREFIX.pack(
        header.base_offset,
        HEADER_SIZE - LOG_OVERHEAD + len(body),
        header.leader_epoch,
        MAGIC,
        crc,
    )
    rewritten = b"".join((prefix, tail, body))
    return Rewrite(header.base_offset, len(batch), rewritten, removed), tombstones


def _record_spans(data: bytes, count: int) -> list[int]:
    """Start positions of the ``count`` records in ``data``, plus the end (the records
    were validated by ``decode_records``: each is a length varint and that many bytes)."""
    starts = [0]
    pos = 0
    for _ in range(count):
        length, body = decode_varint(data, pos)
        pos = body + length
        starts.append(pos)
    return starts


def build_offset_map(
    engine: Engine, clean: int, end: int, max_keys: int
) -> tuple[dict[bytes, int], int]:
    """The offset map of the dirty batches [clean, end), and where it stopped: before
    the first batch that found the map full (but never before the first batch)."""
    offset_map: dict[bytes, int] = {}
    with scanning(engine.scan(data_key(clean), data_key(end))) as scan:
        for key, value in scan:
            if len(offset_map) >= max_keys and key_offset(key) > clean:
                return offset_map, key_offset(key)
            collect_keys(value, offset_map)
    return offset_map, end


class RewritePass:
    """Compact every batch below ``end`` against ``offset_map``, in chunks of about
    ``chunk_bytes`` of output; ``tombstones_kept`` counts what a later pass may drop."""

    def __init__(
        self,
        engine: Engine,
        offset_map: Mapping[bytes, int],
        end: int,
        tombstone_horizon_ms: int,
        chunk_bytes: int,
    ) -> None:
        self._engine = engine
        self._map = offset_map
        self._end = end
        self._horizon = tombstone_horizon_ms
        self._chunk_bytes = chunk_bytes
        self.tombstones_kept = 0

    def chunks(self) -> Iterator[list[Rewrite]]:
        chunk: list[Rewrite] = []
        size = 0
        with scanning(self._engine.scan(DATA_TAG, data_key(self._end))) as scan:
            for _key, value in scan:
                rewrite, tombstones = compact_batch(value, self._map, self._horizon)
                self.tombstones_kept += tombstones
                if rewrite is None:
                    continue
                chunk.append(rewrite)
                size += rewrite.new_size + 64
                if size >= self._chunk_bytes:
                    yield chunk
                    chunk, size = [], 0
        if chunk:
            yield chunk


__all__ = ["Rewrite", "RewritePass", "build_offset_map", "collect_keys", "compact_batch"]
