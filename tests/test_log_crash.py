"""Crash at every filesystem step of a partition log's life: after recovery the log is
exactly what it was before the operation in flight, or after it (sync ``always``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sentinel.broker.topic_config import TopicConfig
from sentinel.clock import ManualClock
from sentinel.fs import MemFS, caused_by_crash
from sentinel.log.partition_log import PartitionLog
from sentinel.log.types import LogOptions
from sentinel.record import build_batch
from sentinel.storage.compaction import CompactionOptions
from sentinel.storage.options import EngineOptions

T0 = 1_700_000_000_000
ENGINE = EngineOptions(
    memtable_bytes=1500,
    background=False,
    compaction=CompactionOptions(target_file_bytes=4096),
)
OPTIONS = LogOptions(checkpoint_interval_bytes=600, time_index_interval_bytes=300)
CONFIG = TopicConfig(cleanup_compact=True, cleanup_delete=True, retention_ms=-1)

Snapshot = tuple[int, int, int, tuple[bytes, ...], tuple[object, ...]]


def keyed(i: int, n: int, pid: int = -1, seq: int = -1) -> bytes:
    records = [(b"k%d" % ((i + j) % 4), b"v%d-%d" % (i, j), (), T0 + i) for j in range(n)]
    return build_batch(records, producer_id=pid, producer_epoch=0 if pid >= 0 else -1,
                       base_sequence=seq)


def workload() -> list[Callable[[PartitionLog], object]]:
    ops: list[Callable[[PartitionLog], object]] = []
    for i in range(12):
        ops.append(lambda log, i=i: log.append(keyed(i, 3, pid=1, seq=3 * i)))
    ops.append(lambda log: log.compact_keys())
    ops.append(lambda log: log.delete_records(7))
    ops.append(lambda log: log.truncate_suffix(30))
    for i in range(12, 16):
        ops.append(lambda log, i=i: log.append(keyed(i, 2)))
    ops.append(lambda log: log.update_config(TopicConfig(retention_ms=-1, retention_bytes=400)))
    ops.append(lambda log: log.apply_retention())
    # The truncation to 30 rolled the producer back to sequence 29.
    ops.append(lambda log: log.append(keyed(99, 1, pid=1, seq=30)))
    # A follower behind its leader's log start starts over, empty, past its end.
    ops.append(lambda log: log.restart_at(log.log_end_offset + 5))
    ops.append(lambda log: log.append(keyed(100, 2)))
    ops.append(lambda log: log.close())
    return ops


def snapshot(log: PartitionLog) -> Snapshot:
    batches: list[bytes] = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        result = log.read(offset, 1 << 20)
        if not result.batches:
            break  # a gap compaction left at the end of the log
        batches.extend(result.batches)
        offset = result.next_offset
    assert log.size_bytes == sum(len(b) for b in batches)
    entry = log.producer_state(1)
    producer = () if entry is None else (entry.epoch, entry.batches)
    return (log.log_start_offset, log.log_end_offset, log.size_bytes, tuple(batches), producer)


def open_log(fs: MemFS) -> PartitionLog:
    return PartitionLog.open(fs, "/p", CONFIG, ManualClock(), ENGINE, options=OPTIONS)


def reference() -> tuple[list[Snapshot], int]:
    """Snapshots before op 0 and after every op, and the filesystem ops it took."""
    fs = MemFS()
    log = open_log(fs)
    snaps = [snapshot(log)]
    start = fs.ops
    for op in workload():
        op(log)
        snaps.append(snaps[-1] if _closed(log) else snapshot(log))
    return snaps, fs.ops - start


def _closed(log: PartitionLog) -> bool:
    try:
        log.read(log.log_start_offset, 1)
    except Exception:
        return True
    return False


SNAPSHOTS, TOTAL_OPS = reference()


@pytest.mark.parametrize("fail_at", range(TOTAL_OPS + 1))
def test_crash_at_every_step_recovers_before_or_after(fail_at: int) -> None:
    fs = MemFS()
    log = open_log(fs)
    fs.fail_after(fail_at)
    in_flight = len(SNAPSHOTS) - 1
    for index, op in enumerate(workload()):
        try:
            op(log)
        except Exception as exc:  # the WAL wraps the crash in WalFailedError
            assert caused_by_crash(exc), exc
            in_flight = index
            break
    fs.fail_after(None)
    fs.crash()
    with open_log(fs) as recovered:
        got = snapshot(recovered)
    allowed = {SNAPSHOTS[in_flight], SNAPSHOTS[min(in_flight + 1, len(SNAPSHOTS) - 1)]}
    assert got in allowed, (fail_at, in_flight)
