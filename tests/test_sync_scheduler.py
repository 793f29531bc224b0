"""The broker-wide sync pipeline: one wave of fsyncs serves waiters of many engines."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest

from sentinel.errors import StorageUnavailableError
from sentinel.fs import MemFS
from sentinel.storage.engine import Engine
from sentinel.storage.options import EngineOptions
from sentinel.storage.sync_scheduler import SyncScheduler
from sentinel.storage.wal import SyncMode, WalOptions
from sentinel.storage.write_batch import WriteBatch


def test_waiters_of_many_engines_are_resolved_and_durable() -> None:
    fs = MemFS()
    scheduler = SyncScheduler(4)
    options = EngineOptions(sync_scheduler=scheduler, background=False)
    engines = [Engine.open(f"/e{i}", options, fs=fs) for i in range(20)]
    futures: list[concurrent.futures.Future[None]] = []
    for round_ in range(5):
        for i, engine in enumerate(engines):
            lsn = engine.write_nowait(WriteBatch().put(b"k%d" % round_, b"v%d" % i))
            futures.append(engine.sync_future(lsn))
    for future in futures:
        future.result(timeout=30)
    # Fewer waves than waiters: waiters share waves.
    assert scheduler.waves < len(futures)
    fs.crash()
    for i in range(20):
        reopened = Engine.open(f"/e{i}", EngineOptions(background=False), fs=fs)
        assert reopened.get(b"k4") == b"v%d" % i
        reopened.close()
    scheduler.shutdown()


def test_a_failed_wal_fails_only_its_own_waiters() -> None:
    fs = MemFS()
    scheduler = SyncScheduler(2)
    options = EngineOptions(sync_scheduler=scheduler, background=False)
    good = Engine.open("/good", options, fs=fs)
    bad = Engine.open("/bad", options, fs=fs)
    lsn_bad = bad.write_nowait(WriteBatch().put(b"k", b"v"))
    bad.wal._fail(OSError(28, "No space left on device"))
    lsn_good = good.write_nowait(WriteBatch().put(b"k", b"v"))
    failed, fine = bad.sync_future(lsn_bad), good.sync_future(lsn_good)
    fine.result(timeout=30)
    with pytest.raises(StorageUnavailableError):
        failed.result(timeout=30)
    good.close()
    bad.close()
    scheduler.shutdown()


def test_sync_interval_is_ticked_by_the_scheduler_not_a_thread_per_wal() -> None:
    fs = MemFS()
    scheduler = SyncScheduler(2)
    options = EngineOptions(
        sync_scheduler=scheduler,
        background=False,
        wal=WalOptions(sync_mode=SyncMode.INTERVAL, sync_interval_ms=5),
    )
    before = threading.active_count()
    engines = [Engine.open(f"/e{i}", options, fs=fs) for i in range(30)]
    for i, engine in enumerate(engines):
        engine.put(b"k", b"v%d" % i)
    assert threading.active_count() - before <= 3  # the scheduler and its sync threads
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(
        e.wal.synced_lsn < e.wal.last_lsn for e in engines
    ):
        time.sleep(0.005)
    fs.crash()  # nothing unsynced is left to lose
    for i in range(30):
        reopened = Engine.open(f"/e{i}", EngineOptions(background=False), fs=fs)
        assert reopened.get(b"k") == b"v%d" % i
        reopened.close()
    for engine in engines:
        engine.close()
    scheduler.shutdown()
