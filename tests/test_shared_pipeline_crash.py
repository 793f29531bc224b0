"""Crash at every filesystem step while several partitions append through the shared
sync pipeline (one wave of fsyncs for all), flush, and release and reopen their files
under an open-files limit: after recovery every acknowledged append of every partition
is there, and nothing else but whole appended batches (a prefix of each partition's
appends) is served."""

from __future__ import annotations

import random

import pytest

from crash_workload import append_rounds, stored
from inline_jobs import run_now
from sentinel.broker.topic_config import TopicConfig
from sentinel.clock import ManualClock
from sentinel.fs import MemFS, caused_by_crash
from sentinel.log.open_files import OpenLogLimit
from sentinel.log.partition_log import PartitionLog
from sentinel.storage.options import EngineOptions
from sentinel.storage.sync_scheduler import SyncScheduler

PARTITIONS = 3
ROUNDS = 6
CONFIG = TopicConfig(retention_ms=-1)


def open_logs(fs: MemFS, scheduler: SyncScheduler) -> list[PartitionLog]:
    options = EngineOptions(memtable_bytes=1024, background=False, sync_scheduler=scheduler)
    limit = OpenLogLimit(2, run_now)  # three partitions, two open: releases all along
    return [
        PartitionLog.open(fs, f"/p{i}", CONFIG, ManualClock(), options, open_limit=limit)
        for i in range(PARTITIONS)
    ]


def value(partition: int, n: int) -> bytes:
    return b"p%d-%03d" % (partition, n) * 8


def workload(logs: list[PartitionLog], acked: list[list[bytes]]) -> None:
    append_rounds(logs, acked, ROUNDS, value, flush_every=2)


def count_ops() -> int:
    fs = MemFS()
    scheduler = SyncScheduler(2)
    logs = open_logs(fs, scheduler)
    start = fs.ops
    workload(logs, [[] for _ in logs])
    total = fs.ops - start
    # The workload does what it claims: files released and reopened, every ack through
    # the shared pipeline.
    assert logs[0]._open_limit is not None and logs[0]._open_limit.releases > 0
    assert scheduler.wal_syncs >= ROUNDS
    for log in logs:
        log.close()
    scheduler.shutdown()
    return total


TOTAL_OPS = count_ops()


def crash_during_workload(fs: MemFS, fail_at: int) -> list[list[bytes]]:
    """The workload on ``fs``, crashed at step ``fail_at``: what each log acknowledged."""
    scheduler = SyncScheduler(2)
    logs = open_logs(fs, scheduler)
    acked: list[list[bytes]] = [[] for _ in logs]
    fs.fail_after(fail_at)
    try:
        workload(logs, acked)
    except Exception as exc:  # the WAL wraps the crash in WalFailedError
        assert caused_by_crash(exc), exc
    fs.fail_after(None)
    fs.crash(random.Random(fail_at))  # and a random part of each unsynced tail kept
    scheduler.shutdown()
    return acked


@pytest.mark.parametrize("fail_at", range(0, TOTAL_OPS + 1))
def test_a_crash_at_every_step_keeps_every_acknowledged_append(fail_at: int) -> None:
    fs = MemFS()
    acked = crash_during_workload(fs, fail_at)
    scheduler = SyncScheduler(1)
    for i, log in enumerate(open_logs(fs, scheduler)):
        got = stored(log)
        appended = [value(i, n) for n in range(ROUNDS)]
        assert got == appended[: len(got)], (fail_at, i, got)  # whole batches, in order
        assert len(got) >= len(acked[i]), (fail_at, i, got, acked[i])
        log.close()
    scheduler.shutdown()
