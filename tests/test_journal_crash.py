"""Crash at every filesystem step while several partitions append through the broker's
journal (one fsync wave for all, their own WALs synced only by flushes, checkpoints
and closes), flush, roll and checkpoint the journal, and release and reopen their
files under an open-files limit: after recovery (the journal replayed into the
partitions whose WALs lost entries) every acknowledged append of every partition is
there, and nothing else but whole appended batches (a prefix of each partition's
appends) is served."""

from __future__ import annotations

import random

import pytest

from crash_workload import T0, append_rounds, stored
from inline_jobs import run_now
from sentinel.broker.topic_config import TopicConfig
from sentinel.clock import ManualClock
from sentinel.fs import MemFS, caused_by_crash
from sentinel.log.open_files import OpenLogLimit
from sentinel.log.partition_log import PartitionLog
from sentinel.record import build_batch
from sentinel.storage.journal import Journal, JournalOptions
from sentinel.storage.options import EngineOptions
from sentinel.storage.sync_scheduler import SyncScheduler

PARTITIONS = 3
ROUNDS = 8
CONFIG = TopicConfig(retention_ms=-1)
# Small segments, one closed kept: the workload rolls the journal and its checkpoints
# sync the partitions that pin old segments (suspended ones too) and delete them.
JOURNAL = JournalOptions(segment_bytes=4096, retain_segments=1)


def open_journal(fs: MemFS, scheduler: SyncScheduler) -> Journal:
    return Journal.open(fs, "/journal", root="/", scheduler=scheduler, options=JOURNAL)


def open_logs(fs: MemFS, scheduler: SyncScheduler, journal: Journal) -> list[PartitionLog]:
    options = EngineOptions(
        memtable_bytes=4096, background=False, sync_scheduler=scheduler, journal=journal
    )
    limit = OpenLogLimit(2, run_now)  # three partitions, two open: releases all along
    return [
        PartitionLog.open(fs, f"/p{i}", CONFIG, ManualClock(), options, open_limit=limit)
        for i in range(PARTITIONS)
    ]


def value(partition: int, n: int) -> bytes:
    return b"p%d-%03d" % (partition, n) * (8 + 40 * (n % 3))  # some values separated


def workload(logs: list[PartitionLog], acked: list[list[bytes]]) -> None:
    append_rounds(logs, acked, ROUNDS, value, flush_every=3)


def count_ops() -> int:
    fs = MemFS()
    scheduler = SyncScheduler(2)
    journal = open_journal(fs, scheduler)
    logs = open_logs(fs, scheduler, journal)
    start = fs.ops
    workload(logs, [[] for _ in logs])
    total = fs.ops - start
    # The workload does what it claims: files released and reopened, journal segments
    # rolled and deleted by checkpoints, and no partition WAL synced for an ack.
    assert logs[0]._open_limit is not None and logs[0]._open_limit.releases > 0
    assert journal.wal.current_segment >= 3 and journal.segments[0] > 1
    for log in logs:
        log.close()
    journal.close()
    assert journal.segments == []  # a clean stop leaves nothing to redo
    scheduler.shutdown()
    return total


TOTAL_OPS = count_ops()


@pytest.mark.parametrize("fail_at", range(0, TOTAL_OPS + 1))
def test_a_crash_at_every_step_keeps_every_acknowledged_append(fail_at: int) -> None:
    fs = MemFS()
    scheduler = SyncScheduler(2)
    journal = open_journal(fs, scheduler)
    logs = open_logs(fs, scheduler, journal)
    acked: list[list[bytes]] = [[] for _ in logs]
    fs.fail_after(fail_at)
    try:
        workload(logs, acked)
    except Exception as exc:  # the WAL wraps the crash in WalFailedError
        assert caused_by_crash(exc), exc
    fs.fail_after(None)
    fs.crash(random.Random(fail_at))  # and a random part of each unsynced tail kept
    scheduler.shutdown()
    scheduler = SyncScheduler(1)
    journal = open_journal(fs, scheduler)
    logs = open_logs(fs, scheduler, journal)
    journal.finish_recovery()
    for i, log in enumerate(logs):
        got = stored(log)
        appended = [value(i, n) for n in range(ROUNDS)]
        assert got == appended[: len(got)], (fail_at, i, got)  # whole batches, in order
        assert len(got) >= len(acked[i]), (fail_at, i, got, acked[i])
    # The recovered broker appends and acknowledges again, through the journal.
    result = logs[0].append_many([build_batch([(None, b"after", (), T0)])], wait=False)[0]
    logs[0].sync_future(result.lsn).result(timeout=30)
    for log in logs:
        log.close()
    journal.close()
    scheduler.shutdown()
