"""Sync ``none``/``interval`` with a ``run_io``: the WAL's unsynced entries stay within
``_RETAIN_AT`` however late the sync thread runs its jobs, across rolls.

The WAL keeps every unsynced frame in memory (for ``resume``); with a ``run_io`` an
appender past ``_RETAIN_AT`` waits for a sync done by a sync thread (``_make_room``),
and a roll only marks a pending roll whose IO that thread does. If a path skipped the
wait (a roll pending, a job already queued, a preparation under way), an appender
would keep going while the sync thread lags, and the memory would grow with it. Here
``run_io`` is a queue that runs only when the test says, while one thread appends and
rolls: the test runs a job only once the appender has stopped, and checks the
unsynced bytes and the queue at every step (a bound with small numbers:
``_RETAIN_AT`` is patched down to 256 KiB).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from sentinel.fs import MemFS
from sentinel.storage import wal as wal_module
from sentinel.storage.wal import FRAME_HEADER_SIZE, SyncMode, WalOptions, WriteAheadLog

RETAIN = 256 * 1024
PAYLOAD = 4096
FRAME = FRAME_HEADER_SIZE + PAYLOAD
APPENDS = 600  # ~2.4 MiB: about ten times the bound


class HeldIO:
    """A ``run_io`` whose jobs wait in a queue until ``run_one``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.jobs: list[Callable[[], None]] = []
        self.most_queued = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            self.jobs.append(job)
            self.most_queued = max(self.most_queued, len(self.jobs))

    def run_one(self) -> bool:
        with self._lock:
            if not self.jobs:
                return False
            job = self.jobs.pop(0)
        job()
        return True


@pytest.mark.parametrize("mode", [SyncMode.NONE, SyncMode.INTERVAL], ids=lambda m: m.value)
@pytest.mark.parametrize("rolls", ["none", "segment", "rotate"])
def test_unsynced_bytes_stay_bounded_while_the_sync_thread_lags(
    monkeypatch: pytest.MonkeyPatch, mode: SyncMode, rolls: str
) -> None:
    monkeypatch.setattr(wal_module, "_RETAIN_AT", RETAIN)
    monkeypatch.setattr(wal_module, "_SYNC_AT", RETAIN // 2)
    io = HeldIO()
    segment_bytes = 300 * 1024 if rolls == "segment" else 64 * 1024 * 1024
    wal = WriteAheadLog(
        MemFS(),
        "/wal",
        1,
        WalOptions(sync_mode=mode, segment_bytes=segment_bytes),
        interval_thread=False,
        run_io=io.submit,
    )
    first = wal.current_segment
    most = 0
    errors: list[BaseException] = []

    def append_all() -> None:
        nonlocal most
        try:
            for i in range(APPENDS):
                wal.append(b"%06d" % i * (PAYLOAD // 6) + b"." * (PAYLOAD % 6))
                most = max(most, wal._unsynced_bytes)
                if rolls == "rotate" and i % 50 == 49:
                    wal.rotate_deferred()
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    appender = threading.Thread(target=append_all, daemon=True)
    appender.start()
    stalls = 0
    deadline = time.monotonic() + 60
    while appender.is_alive():
        assert time.monotonic() < deadline, "the appender never finished"
        last = wal.last_lsn
        appender.join(0.02)
        most = max(most, wal._unsynced_bytes)
        if appender.is_alive() and wal.last_lsn == last:  # waiting for the sync thread
            stalls += 1
            io.run_one()
    while io.run_one():
        pass
    assert not errors, errors
    assert wal.last_lsn == APPENDS
    assert stalls > 0  # the appender did wait for the held jobs
    assert most < RETAIN + FRAME  # the bound: one entry past it at most
    assert io.most_queued <= 2  # the background IO and a preparation, no more
    if rolls != "none":
        assert wal.current_segment - first >= 5  # the WAL rolled while jobs were held
    wal.close()
