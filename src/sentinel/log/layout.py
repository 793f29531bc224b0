"""How a partition log lays itself out in its engine: the keys and the checkpoint.

One engine per partition. Every key starts with a one-byte tag; offsets are unsigned
64-bit big-endian so that keys sort in offset order::

    key                          value
    ---------------------------  ----------------------------------------------------
    "D"  + u64 base offset       a stamped RecordBatch v2, the bytes a fetch returns
    "MC" + u64 log end offset    a checkpoint: the log's state when its end was there
    "MT" + u64 base offset       a time-index entry: i64, the greatest maxTimestamp of
                                 every batch stored before that offset

Checkpoint value (big-endian; the CRC32C covers every byte before it)::

    +--------+---------+-----------+------------+--------------+----------+-----------+
    | "SPLC" | u16 = 1 | log start | size bytes | clean offset | max ts   | producers |
    | magic  | version | i64       | i64        | i64          | i64      | u32 count |
    +--------+---------+-----------+------------+--------------+----------+-----------+
    then per producer:
    +-------------+----------+----------------+-------------------------------------+
    | producer id | epoch    | last timestamp | u8 n, n x (first seq i32, last seq  |
    | i64         | i16      | i64            | i32, base i64, last i64, LAT i64)   |
    +-------------+----------+----------------+-------------------------------------+
    then: crc32c u32

A checkpoint under offset X describes the log when its end was X: the log start,
the bytes of all stored batches, the first offset key compaction has not cleaned,
the greatest batch timestamp below X (the time index's running maximum), and every
producer's state after the batches below X. Opening the log loads the newest
checkpoint and replays the batches from X to the end (headers only).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from sentinel.codec.crc import crc32c
from sentinel.errors import CorruptionError, UnsupportedFormatError
from sentinel.log.producer_state import MAX_CACHED_BATCHES, ProducerBatch, ProducerEntry

DATA_TAG = b"D"
CHECKPOINT_TAG = b"MC"
TIME_INDEX_TAG = b"MT"
DATA_END = b"E"  # every data key sorts below it
CHECKPOINT_END = b"MD"
TIME_INDEX_END = b"MU"

#: The engine's table families (``CompactionOptions.table_families``): a merge writes
#: data, checkpoints and the time index into tables of their own. Data keys only grow,
#: so a data table overlaps no older one and moves down the levels unrewritten; mixed
#: with the checkpoint keys, every table would span all the others and every merge out
#: of L0 would rewrite the whole of L1.
TABLE_FAMILIES = (DATA_TAG, CHECKPOINT_TAG, TIME_INDEX_TAG)

CHECKPOINT_MAGIC = b"SPLC"
CHECKPOINT_VERSION = 1

_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_U32 = struct.Struct(">I")
_CP_HEAD = struct.Struct(">4sHqqqqI")
_PRODUCER = struct.Struct(">qhqB")
_PBATCH = struct.Struct(">iiqqq")


def data_key(offset: int) -> bytes:
    return DATA_TAG + _U64.pack(offset)


def checkpoint_key(offset: int) -> bytes:
    return CHECKPOINT_TAG + _U64.pack(offset)


def time_index_key(offset: int) -> bytes:
    return TIME_INDEX_TAG + _U64.pack(offset)


def key_offset(key: bytes) -> int:
    """The offset in a data, checkpoint or time-index key."""
    return int(_U64.unpack_from(key, len(key) - 8)[0])


def encode_i64(value: int) -> bytes:
    return _I64.pack(value)


def decode_i64(value: bytes) -> int:
    return int(_I64.unpack(value)[0])


@dataclass(frozen=True, slots=True)
class Checkpoint:
    log_start_offset: int
    size_bytes: int
    clean_offset: int
    max_timestamp: int
    producers: tuple[ProducerEntry, ...]


def encode_checkpoint(cp: Checkpoint) -> bytes:
    parts = [
        _CP_HEAD.pack(
            CHECKPOINT_MAGIC,
            CHECKPOINT_VERSION,
            cp.log_start_offset,
            cp.size_bytes,
            cp.clean_offset,
            cp.max_timestamp,
            len(cp.producers),
        )
    ]
    for entry in cp.producers:
        parts.append(
            _PRODUCER.pack(entry.producer_id, entry.epoch, entry.last_timestamp, len(entry.batches))
        )
        for b in entry.batches:
            parts.append(
                _PBATCH.pack(b.first_seq, b.last_seq, b.base_offset, b.last_offset,
                             b.log_append_time_ms)
            )
    body = b"".join(parts)
    return body + _U32.pack(crc32c(body))


def decode_checkpoint(data: bytes, where: str) -> Checkpoint:
    """Parse a checkpoint; ``CorruptionError`` names ``where`` if it does not parse."""
    if len(data) < _CP_HEAD.size + _U32.size:
        raise CorruptionError(where, "checkpoint", f"{len(data)} bytes is too short")
    body, (stored,) = data[:-4], _U32.unpack_from(data, len(data) - 4)
    if crc32c(body) != stored:
        raise CorruptionError(where, "checkpoint", "CRC mismatch")
    magic, version, log_start, size, clean, max_ts, count = _CP_HEAD.unpack_from(body, 0)
    if magic != CHECKPOINT_MAGIC:
        raise CorruptionError(where, "checkpoint", f"bad magic {magic!r}")
    if version != CHECKPOINT_VERSION:
        raise UnsupportedFormatError(f"{where}: checkpoint version {version} is not supported")
    pos = _CP_HEAD.size
    producers: list[ProducerEntry] = []
    try:
        for _ in range(count):
            pid, epoch, last_ts, n = _PRODUCER.unpack_from(body, pos)
            pos += _PRODUCER.size
            if not 1 <= n <= MAX_CACHED_BATCHES:
                raise CorruptionError(where, "checkpoint", f"producer {pid} has {n} batches")
            batches = []
            for _ in range(n):
                batches.append(ProducerBatch(*_PBATCH.unpack_from(body, pos)))
                pos += _PBATCH.size
            producers.append(ProducerEntry(pid, epoch, tuple(batches), last_ts))
    except struct.error as exc:
        raise CorruptionError(where, "checkpoint", "truncated producer table") from exc
    if pos != len(body):
        raise CorruptionError(where, "checkpoint", f"{len(body) - pos} trailing bytes")
    return Checkpoint(log_start, size, clean, max_ts, tuple(producers))


def time_index_start(entries: Iterable[tuple[int, int]], timestamp_ms: int) -> int | None:
    """The greatest entry offset whose running maximum is below ``timestamp_ms``: no
    batch before it can hold a timestamp >= ``timestamp_ms`` (None: search from the start).

    ``entries`` are ``(offset, max timestamp of every batch before offset)`` in offset
    order; the maxima never decrease, so the scan stops at the first that reaches the
    timestamp."""
    start: int | None = None
    for offset, running_max in entries:
        if running_max >= timestamp_ms:
            break
        start = offset
    return start
