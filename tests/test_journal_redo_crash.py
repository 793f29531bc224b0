"""A crash at every step of an open that takes entries back from the broker's journal
(entries its own WAL lost in the crash before), then an open again: every entry the
journal acknowledged is there. The redo is decided by position (an entry the WAL's
replay reached is not redone), so no new WAL segment may exist while redone entries
are only in memory."""

from __future__ import annotations

import random

import pytest

from sentinel.fs import MemFS, caused_by_crash
from sentinel.storage.engine import Engine
from sentinel.storage.journal import Journal, JournalOptions
from sentinel.storage.options import EngineOptions
from sentinel.storage.sync_scheduler import SyncScheduler
from sentinel.storage.write_batch import WriteBatch

D = "/data/p0"
ENTRIES = 12


def journal(fs: MemFS, scheduler: SyncScheduler) -> Journal:
    return Journal.open(
        fs, "/data/journal", root="/data", scheduler=scheduler,
        options=JournalOptions(skip_window_s=None),
    )  # fmt: skip


def engine(fs: MemFS, j: Journal, scheduler: SyncScheduler) -> Engine:
    options = EngineOptions(
        memtable_bytes=64 * 1024, background=False, sync_scheduler=scheduler, journal=j,
        hold_lock=False,
    )  # fmt: skip
    return Engine.open(D, options, fs=fs)


def written_through_the_journal(scheduler: SyncScheduler) -> tuple[MemFS, dict[bytes, bytes]]:
    """A directory whose engine's WAL lost every entry the journal acknowledged."""
    fs = MemFS()
    j = journal(fs, scheduler)
    e = engine(fs, j, scheduler)
    written = {}
    for i in range(ENTRIES):
        key, value = b"k%03d" % i, b"%03d" % i * 100
        e.sync_future(e.write_nowait(WriteBatch().put(key, value))).result(timeout=30)
        written[key] = value
    fs.crash()  # the engine's own WAL was never fsynced
    return fs, written


def count_open_ops() -> int:
    scheduler = SyncScheduler(1)
    fs, _written = written_through_the_journal(scheduler)
    start = fs.ops
    engine(fs, journal(fs, scheduler), scheduler)
    scheduler.shutdown()
    return fs.ops - start


@pytest.mark.parametrize("fail_at", range(count_open_ops() + 1))
def test_a_crash_at_any_step_of_a_redo_keeps_what_the_journal_acknowledged(
    fail_at: int,
) -> None:
    scheduler = SyncScheduler(1)
    fs, written = written_through_the_journal(scheduler)
    fs.fail_after(fail_at)
    try:
        engine(fs, journal(fs, scheduler), scheduler)
    except Exception as exc:
        assert caused_by_crash(exc), exc
    fs.fail_after(None)
    fs.crash(random.Random(fail_at))
    e = engine(fs, journal(fs, scheduler), scheduler)
    missing = [k for k, v in written.items() if e.get(k) != v]
    assert not missing, (fail_at, missing)
    scheduler.shutdown()
