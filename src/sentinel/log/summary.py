"""What a partition log tells about itself in its engine's clean-shutdown record.

``PartitionLog.close`` hands its figures to ``Engine.close`` (``clean_payload``); a
broker restarting after a clean stop reads them back with ``clean_marker.check``
without opening the engine, so an idle partition serves its offsets (Metadata,
DescribeTopic, ListOffsets by -1/-2) and is left out of a retention pass whose rules
cannot delete anything, until a request needs its data (``PartitionLog.deferred``).

Format (little-endian, version 1): magic ``SLOG``, u16 version, then i64 log start,
log end, size in bytes, clean offset, and the head batch's max timestamp (-1 when the
log holds at most one batch: retention never deletes the newest). The engine's record
carries the CRC.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sentinel.errors import CorruptionError

MAGIC = b"SLOG"
VERSION = 1
_FORMAT = struct.Struct("<4sHqqqqq")


@dataclass(frozen=True, slots=True)
class LogSummary:
    log_start: int
    log_end: int
    size: int
    clean_offset: int
    #: maxTimestamp of the oldest batch when a newer one exists; -1 otherwise.
    head_timestamp: int

    def encode(self) -> bytes:
        return _FORMAT.pack(
            MAGIC,
            VERSION,
            self.log_start,
            self.log_end,
            self.size,
            self.clean_offset,
            self.head_timestamp,
        )

    def retention_may_delete(self, now_ms: int, retention_ms: int, retention_bytes: int) -> bool:
        """Whether ``plan_retention`` could delete the head batch (else a pass skips it)."""
        if self.head_timestamp < 0:  # one batch: the newest is never deleted
            return False
        too_old = retention_ms >= 0 and self.head_timestamp < now_ms - retention_ms
        return too_old or 0 <= retention_bytes < self.size


def decode(data: bytes, where: str) -> LogSummary | None:
    """The summary, None if ``data`` is empty (an engine closed by something else)."""
    if not data:
        return None
    if len(data) != _FORMAT.size:
        raise CorruptionError(where, "log summary", f"{len(data)} bytes, not {_FORMAT.size}")
    magic, version, *fields = _FORMAT.unpack(data)
    if magic != MAGIC or version != VERSION:
        raise CorruptionError(where, "log summary", f"magic {magic!r} version {version}")
    summary = LogSummary(*fields)
    if not 0 <= summary.log_start <= summary.log_end or summary.size < 0:
        raise CorruptionError(where, "log summary", f"impossible offsets {summary}")
    return summary
