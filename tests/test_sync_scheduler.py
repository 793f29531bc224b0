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
from sentinel.storage.sync_scheduler import Done, SyncScheduler
from sentinel.storage.wal import SyncMode, WalOptions
from sentinel.storage.write_batch import WriteBatch


def test_waiters_of_many_engines_are_resolved_and_durable() -> None:
    fs = MemFS()
    scheduler = SyncScheduler(4)
    options = EngineOptions(sync_scheduler=scheduler, background=False)
    engines = [Engine.open(f"/e{i}", options, fs=fs) for i in range(20)]
    written: list[tuple[Engine, int]] = []
    for round_ in range(5):
        for i, engine in enumerate(engines):
            lsn = engine.write_nowait(WriteBatch().put(b"k%d" % round_, b"v%d" % i))
            written.append((engine, lsn))
    futures = [engine.sync_future(lsn) for engine, lsn in written]
    for future in futures:
        future.result(timeout=30)
    # Fewer syncs than waiters: a WAL's sync covers every entry written before it.
    assert scheduler.wal_syncs < len(futures)
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
    assert threading.active_count() - before <= 3  # the ticks' thread and the sync threads
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


class _Target:
    """A WAL stand-in whose sync can be held (``gate``) and that records overlaps."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.synced_lsn = 0
        self.running = 0
        self.most_running = 0
        self.syncs = 0
        self._lock = threading.Lock()

    def sync_to(self, lsn: int) -> None:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            if self.gate is not None:
                assert self.gate.wait(30), "the test never opened the gate"
            else:
                time.sleep(0.001)
            self.synced_lsn = max(self.synced_lsn, lsn)
            self.syncs += 1
        finally:
            with self._lock:
                self.running -= 1


def held_sync(scheduler: SyncScheduler, target: _Target, lsn: int = 1) -> Done:
    """Register ``lsn`` and return its future once its sync is running (held at the
    target's gate)."""
    future = scheduler.request(target, lsn)
    deadline = time.monotonic() + 30
    while target.running == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert target.running == 1
    return future


def test_a_slow_wal_does_not_hold_back_the_waiters_of_another() -> None:
    # The first pipeline resolved a wave's waiters only when its slowest WAL was done:
    # one partition's slow fsync delayed every partition's acks.
    scheduler = SyncScheduler(2)
    gate = threading.Event()
    slow, fast = _Target(gate), _Target()
    held = held_sync(scheduler, slow)
    served = scheduler.request(fast, 1)
    served.result(timeout=30)  # while the slow sync is still held
    assert not held.done()
    again = scheduler.request(fast, 2)  # and the fast WAL's next sync too
    again.result(timeout=30)
    assert not held.done()
    gate.set()
    held.result(timeout=30)
    scheduler.shutdown()


def test_one_wal_is_never_synced_by_two_threads_at_once_and_waiters_share_syncs() -> None:
    scheduler = SyncScheduler(4)
    targets = [_Target() for _ in range(3)]
    futures: list[concurrent.futures.Future[None]] = []
    lock = threading.Lock()

    def writer(target: _Target) -> None:
        for lsn in range(1, 201):
            future = scheduler.request(target, lsn)
            with lock:
                futures.append(future)

    threads = [threading.Thread(target=writer, args=(t,)) for t in targets for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for future in futures:
        future.result(timeout=30)
    for target in targets:
        assert target.most_running == 1
        assert target.synced_lsn == 200
        assert target.syncs < 400  # the waiters that came during a sync shared the next
    scheduler.shutdown()


def test_shutdown_finishes_every_sync_asked_for() -> None:
    scheduler = SyncScheduler(2)
    targets = [_Target() for _ in range(8)]
    futures = [scheduler.request(t, n) for n in (1, 2) for t in targets]
    scheduler.shutdown()
    assert all(f.done() and f.exception() is None for f in futures)
    assert all(t.synced_lsn == 2 for t in targets)


def test_a_cancelled_waiter_does_not_cost_the_others_their_sync() -> None:
    scheduler = SyncScheduler(1)
    gate = threading.Event()
    target = _Target(gate)
    first = held_sync(scheduler, target)
    # Two waiters of the next sync; one gives up (its request was cancelled).
    quitter, stayer = scheduler.request(target, 2), scheduler.request(target, 2)
    assert quitter.cancel()
    gate.set()
    first.result(timeout=30)
    stayer.result(timeout=30)
    assert quitter.cancelled()
    scheduler.request(target, 3).result(timeout=30)  # and the pipeline goes on
    scheduler.shutdown()


def test_a_sync_starts_without_waiting_for_another_thread_to_dispatch_it() -> None:
    # The registering thread hands the sync to a sync thread itself: with the GIL held
    # by the registering thread (a busy event loop), the sync still starts. (The
    # pipeline used to wake a dispatcher thread, which needed the GIL first.)
    scheduler = SyncScheduler(1)
    gate = threading.Event()
    target = _Target(gate)
    scheduler.request(target, 1)
    assert scheduler.wal_syncs == 1  # started by request() itself
    assert scheduler.thread_count == 1  # the sync thread; no dispatcher (no ticks)
    gate.set()
    scheduler.shutdown()
    assert target.synced_lsn == 1


def test_syncs_that_never_overlap_use_one_thread() -> None:
    # A thread starts only when a sync finds none idle: a broker whose acks come one at
    # a time holds one sync thread, not ``threads``.
    scheduler = SyncScheduler(4)
    target = _Target()
    for lsn in range(1, 21):
        scheduler.request(target, lsn).result(timeout=30)
    assert scheduler.wal_syncs == 20
    assert scheduler.thread_count == 1
    scheduler.shutdown()


def test_waiters_that_come_during_a_sync_are_served_by_one_next_sync() -> None:
    scheduler = SyncScheduler(2)
    gate = threading.Event()
    target = _Target(gate)
    first = held_sync(scheduler, target)
    later = [scheduler.request(target, lsn) for lsn in range(2, 12)]
    assert scheduler.wal_syncs == 1
    gate.set()
    for future in (first, *later):
        future.result(timeout=30)
    assert target.syncs == 2 and target.synced_lsn == 11
    scheduler.shutdown()
