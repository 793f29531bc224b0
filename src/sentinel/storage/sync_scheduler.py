"""One durability pipeline for many WALs: a broker-wide group commit across partitions.

Each partition keeps its own WAL files (retention and deletion stay file deletions, and
value-separated large values live in the partition's own segments). An append only
buffers or writes (sync ``always``: it buffers; the sync writes and fsyncs). A writer
that needs durability registers ``(wal, lsn)`` with the ``SyncScheduler`` and gets a
``concurrent.futures.Future``. One scheduler thread runs *waves*: it takes every
registration so far, syncs each registered WAL once up to the highest LSN asked of it
(the WAL's own group commit: write what is buffered, one fsync), the WALs of one wave
in parallel on ``threads`` sync threads (concurrent fsyncs on one filesystem share its
journal commits), and then resolves every future the wave covered, with the WAL's error
for a WAL that failed (``WalFailedError``: the disk-full path of ``wal.py`` and the
engine's ``resume`` are unchanged). Registrations that arrive during a wave go to the
next one, so under load one wave serves every partition that wrote meanwhile: DESIGN's
"one fsync serves many writers", across partitions. Threads: 1 + ``threads``, whatever
the number of partitions.

Sync modes keep their meaning: ``always`` acknowledges after the wave; ``interval`` and
``none`` never wait for one (a caller may still ask, as ``Engine.sync`` does).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time
from collections.abc import Callable
from typing import Protocol

Done = concurrent.futures.Future[None]


class Syncable(Protocol):
    def sync_to(self, lsn: int) -> None: ...

    @property
    def synced_lsn(self) -> int: ...


class SyncScheduler:
    """Waves of fsyncs over every WAL with a waiter (see the module doc)."""

    def __init__(self, threads: int = 4, name: str = "sentinel-sync") -> None:
        if threads < 1:
            raise ValueError(f"a sync scheduler needs at least one thread, not {threads}")
        self._name = name
        self._cond = threading.Condition()
        # id(target) -> (target, how to sync it, highest LSN, futures with their LSNs)
        self._pending: dict[int, tuple[Syncable, Callable[[int], None], int, list[Done]]] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(threads, f"{name}-io")
        self._thread: threading.Thread | None = None
        self._stopped = False
        # Periodic ticks (sync ``interval``): id -> [period, next due, tick].
        self._ticks: dict[int, tuple[float, float, Callable[[], None]]] = {}
        self._tick_ids = itertools.count()
        self.waves = 0  # for tests and metrics
        self.wal_syncs = 0

    def request(
        self, target: Syncable, lsn: int, sync: Callable[[int], None] | None = None
    ) -> Done:
        """A future resolved once ``target`` is durable up to ``lsn`` (``sync(lsn)``,
        by default ``target.sync_to``, makes it so), or failed with its error."""
        future: Done = concurrent.futures.Future()
        if target.synced_lsn >= lsn:
            future.set_result(None)
            return future
        with self._cond:
            if self._stopped:
                raise RuntimeError(f"sync scheduler {self._name} is shut down")
            key = id(target)
            found = self._pending.get(key)
            if found is None:
                self._pending[key] = (target, sync or target.sync_to, lsn, [future])
            else:
                found[3].append(future)
                if lsn > found[2]:
                    self._pending[key] = (found[0], found[1], lsn, found[3])
            self._start_locked()
            self._cond.notify()
        return future

    def every(self, period_s: float, tick: Callable[[], None]) -> int:
        """Run ``tick`` every ``period_s`` seconds on the sync threads (sync
        ``interval``: ``WriteAheadLog.sync_unsynced``), the due ticks of a moment in
        parallel; a handle for ``cancel``. No thread per WAL."""
        with self._cond:
            handle = next(self._tick_ids)
            self._ticks[handle] = (period_s, time.monotonic() + period_s, tick)
            self._start_locked()
            self._cond.notify()
            return handle

    def cancel(self, handle: int) -> None:
        with self._cond:
            self._ticks.pop(handle, None)

    def _start_locked(self) -> None:
        if self._thread is None and not self._stopped:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def _due_locked(self, now: float) -> list[Callable[[], None]]:
        due = []
        for handle, (period, at, tick) in list(self._ticks.items()):
            if at <= now:
                due.append(tick)
                self._ticks[handle] = (period, max(at + period, now), tick)
        return due

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    due = [] if self._stopped else self._due_locked(now)
                    if self._pending or due or self._stopped:
                        break
                    soonest = min((at for _p, at, _t in self._ticks.values()), default=None)
                    self._cond.wait(None if soonest is None else max(0.0, soonest - now))
                if not self._pending and not due:
                    return
                wave, self._pending = list(self._pending.values()), {}
            if wave:
                self._wave(wave)
            if due:
                for done in [self._executor.submit(tick) for tick in due]:
                    done.exception()  # a tick records its own failure (the WAL's)

    def _wave(self, wave: list[tuple[Syncable, Callable[[int], None], int, list[Done]]]) -> None:
        self.waves += 1
        self.wal_syncs += len(wave)
        if len(wave) == 1:
            results: list[BaseException | None] = [_sync(wave[0][1], wave[0][2])]
        else:
            running = [self._executor.submit(_sync, sync, lsn) for _t, sync, lsn, _f in wave]
            results = [f.result() for f in running]
        for (_target, _sync_fn, _lsn, futures), error in zip(wave, results, strict=True):
            for future in futures:
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)

    def shutdown(self) -> None:
        """Finish the waves asked for so far, then stop the threads."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        self._executor.shutdown(wait=True)

    @property
    def thread_count(self) -> int:
        alive = 1 if self._thread is not None and self._thread.is_alive() else 0
        return alive + len(getattr(self._executor, "_threads", ()))


def _sync(sync: Callable[[int], None], lsn: int) -> BaseException | None:
    try:
        sync(lsn)
    except BaseException as exc:  # handed to every waiter of this WAL
        return exc
    return None


_default: list[SyncScheduler] = []
_default_lock = threading.Lock()


def default_scheduler() -> SyncScheduler:
    """The process's scheduler for engines given none (opened alone, in tests)."""
    with _default_lock:
        if not _default:
            _default.append(SyncScheduler(2, "sentinel-sync-default"))
        return _default[0]
