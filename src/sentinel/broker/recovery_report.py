"""The log line that says what recovering one partition did.

    recovered partition orders-2 in 41 ms: replayed 1200 WAL entries (183406 bytes
    flushed to tables), offsets 0..5000, cut a torn tail of 87 bytes from 00000000000000000007.wal

or, when the replay was small enough to stay in memory (``Engine.replay_kept_bytes``),
``(2048 bytes kept in memory, their WAL segments synced)``, or, on a full disk
(``Engine.replay_unflushed_bytes``), ``(183406 bytes in memory: the disk is full, their
flush is retried)``.

Read from the opened log (its engine's replay report and the flush that replay caused),
so opening a partition is not changed by being reported.
"""

from __future__ import annotations

from sentinel.log.partition_log import PartitionLog
from sentinel.storage.files import wal_name


def recovery_line(name: str, plog: PartitionLog, seconds: float) -> str:
    report = plog.engine.replay_report
    entries = report.entries if report is not None else 0
    kept, unflushed = plog.engine.replay_kept_bytes, plog.engine.replay_unflushed_bytes
    if kept:
        where = f"{kept} bytes kept in memory, their WAL segments synced"
    elif unflushed:
        where = f"{unflushed} bytes in memory: the disk is full, their flush is retried"
    else:
        where = f"{plog.engine_stats().flush_bytes_written} bytes flushed to tables"
    line = (
        f"recovered partition {name} in {seconds * 1000:.0f} ms: replayed {entries} WAL"
        f" entries ({where}), offsets"
        f" {plog.log_start_offset}..{plog.log_end_offset}"
    )
    if report is not None and report.truncated_segment is not None:
        return (
            f"{line}, cut a torn tail of {report.dropped_bytes} bytes from"
            f" {wal_name(report.truncated_segment)}"
        )
    return f"{line}, no torn tail"
