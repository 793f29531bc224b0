"""Crash at every filesystem step while several partitions append through the broker's
journal (one fsync wave for all, their own WALs synced only by flushes, checkpoints
and closes), flush, roll and checkpoint the journal, and release and reopen their
files under an open-files limit: after recovery (the journal replayed into the
partitions whose WALs lost entries) every acknowledged append of every partition is
there, and nothing else but whole appended batches (a prefix of each partition's
appends) is served. Twice: every entry through the journal, and with partitions that
append alone for a while (their entries then skip the journal and wait for their own
WAL's fsync, ``Journal.alone``), switching between the two. And with the memtable
budget's requests between rounds (``Engine._relieve_memory``): most values are large,
and each partition syncs its WAL up to them and lets them go from its memtable, read
back from the WAL from then on."""

from __future__ import annotations

import concurrent.futures
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
# The few mode journals less of the same rounds: more of them, so that its journal
# rolls and a checkpoint deletes a segment too.
ROUNDS = {"journal": 8, "alone": 8, "few": 14, "release": 8}
CONFIG = TopicConfig(retention_ms=-1)
# Small segments, one closed kept: the workload rolls the journal and its checkpoints
# sync the partitions that pin old segments (suspended ones too) and delete them.
JOURNAL = JournalOptions(segment_bytes=4096, retain_segments=1, skip_window_s=None)
# An engine that appends twice in a row skips the journal from its second append.
ALONE = JournalOptions(segment_bytes=4096, retain_segments=1, skip_window_s=0.0, skip_up_to=1)
# Two engines skip together; a third makes them too many (the clock stands still: no
# one falls silent).
FEW = JournalOptions(segment_bytes=4096, retain_segments=1, skip_window_s=0.0, skip_up_to=2)
MODES = {"journal": JOURNAL, "alone": ALONE, "few": FEW, "release": JOURNAL}


def open_journal(fs: MemFS, scheduler: SyncScheduler, mode: str) -> Journal:
    return Journal.open(
        fs, "/journal", root="/", scheduler=scheduler, options=MODES[mode], clock=ManualClock()
    )


def open_logs(
    fs: MemFS, scheduler: SyncScheduler, journal: Journal, mode: str
) -> list[PartitionLog]:
    options = EngineOptions(
        memtable_bytes=16384 if mode == "release" else 4096,
        background=False,
        sync_scheduler=scheduler,
        journal=journal,
        # The release mode's values are large (a batch of 256 bytes or more): held in
        # the memtable, and in its WAL entry, until let go.
        value_separation_bytes=256 if mode == "release" else 4096,
    )
    limit = OpenLogLimit(2, run_now)  # three partitions, two open: releases all along
    return [
        PartitionLog.open(fs, f"/p{i}", CONFIG, ManualClock(), options, open_limit=limit)
        for i in range(PARTITIONS)
    ]


def value(partition: int, n: int) -> bytes:
    return b"p%d-%03d" % (partition, n) * (8 + 40 * (n % 3))  # some values separated


def large_value(partition: int, n: int) -> bytes:
    """The release mode's: past a memtable entry's overhead, so that large values are
    most of a memtable (what the budget lets go)."""
    return value(partition, n) * 5


def workload(mode: str, logs: list[PartitionLog], acked: list[list[bytes]]) -> None:
    if mode == "journal":
        append_rounds(logs, acked, ROUNDS[mode], value, flush_every=3)
        return
    if mode == "release":

        def relieve(round_: int) -> None:
            if round_ % 2 == 1:  # the budget asks each partition for memory
                for log in logs:
                    log.engine._relieve_memory()

        append_rounds(logs, acked, ROUNDS[mode], large_value, flush_every=3, after_round=relieve)
        return
    # Each round one partition appends twice in a row (the second skips the journal),
    # another appends, then the first again: it is not alone any more, but its
    # previous entry waits for its own WAL's fsync, so this one must too; then the
    # last partition appends.
    counts = [0] * len(logs)
    for round_ in range(ROUNDS[mode]):
        first = round_ % len(logs)
        second, third = (first + 1) % len(logs), (first + 2) % len(logs)
        order = [first, first, second, first, third]
        waits: list[tuple[int, bytes, concurrent.futures.Future[None]]] = []
        for i in order:
            v = value(i, counts[i])
            counts[i] += 1
            result = logs[i].append_many([build_batch([(None, v, (), T0)])], wait=False)[0]
            waits.append((i, v, logs[i].sync_future(result.lsn)))
        for i, v, future in waits:
            future.result(timeout=30)
            acked[i].append(v)
        if round_ % 3 == 2:
            logs[round_ % len(logs)].engine.flush()


def appended(mode: str, partition: int) -> list[bytes]:
    """Every value ``workload`` appends to ``partition``, in order."""
    rounds = ROUNDS[mode]
    if mode == "release":
        return [large_value(partition, n) for n in range(rounds)]
    if mode == "journal":
        return [value(partition, n) for n in range(rounds)]
    count = rounds + 2 * len(range(partition, rounds, PARTITIONS))
    return [value(partition, n) for n in range(count)]


def count_ops(mode: str) -> int:
    fs = MemFS()
    scheduler = SyncScheduler(2)
    journal = open_journal(fs, scheduler, mode)
    logs = open_logs(fs, scheduler, journal, mode)
    start = fs.ops
    acked: list[list[bytes]] = [[] for _ in logs]
    workload(mode, logs, acked)
    total = fs.ops - start
    assert acked == [appended(mode, i) for i in range(PARTITIONS)]
    # The workload does what it claims: files released and reopened, journal segments
    # rolled and deleted by checkpoints, and no partition WAL synced for an ack.
    assert logs[0]._open_limit is not None and logs[0]._open_limit.releases > 0
    assert journal.wal.current_segment >= 3 and journal.segments[0] > 1
    assert (journal.skipped_appends > 0) == (mode in ("alone", "few"))
    if mode == "release":
        assert all(log.engine.values_released > 0 for log in logs)
    for log in logs:
        log.close()
    journal.close()
    assert journal.segments == []  # a clean stop leaves nothing to redo
    scheduler.shutdown()
    return total


CASES = [(mode, step) for mode in MODES for step in range(count_ops(mode) + 1)]


@pytest.mark.parametrize(("mode", "fail_at"), CASES)
def test_a_crash_at_every_step_keeps_every_acknowledged_append(mode: str, fail_at: int) -> None:
    fs = MemFS()
    scheduler = SyncScheduler(2)
    journal = open_journal(fs, scheduler, mode)
    logs = open_logs(fs, scheduler, journal, mode)
    acked: list[list[bytes]] = [[] for _ in logs]
    fs.fail_after(fail_at)
    try:
        workload(mode, logs, acked)
    except Exception as exc:  # the WAL wraps the crash in WalFailedError
        assert caused_by_crash(exc), exc
    fs.fail_after(None)
    fs.crash(random.Random(fail_at))  # and a random part of each unsynced tail kept
    scheduler.shutdown()
    scheduler = SyncScheduler(1)
    journal = open_journal(fs, scheduler, mode)
    logs = open_logs(fs, scheduler, journal, mode)
    journal.finish_recovery()
    for i, log in enumerate(logs):
        got = stored(log)
        assert got == appended(mode, i)[: len(got)], (fail_at, i, got)  # whole, in order
        assert len(got) >= len(acked[i]), (fail_at, i, got, acked[i])
    # The recovered broker appends and acknowledges again, through the journal.
    result = logs[0].append_many([build_batch([(None, b"after", (), T0)])], wait=False)[0]
    logs[0].sync_future(result.lsn).result(timeout=30)
    for log in logs:
        log.close()
    journal.close()
    scheduler.shutdown()
