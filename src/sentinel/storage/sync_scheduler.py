"""One durability pipeline for many WALs: a broker-wide group commit across partitions.

Each partition keeps its own WAL files (retention and deletion stay file deletions, and
value-separated large values live in the partition's own segments). An append only
buffers or writes (sync ``always``: it buffers; the sync writes and fsyncs). A writer
that needs durability registers ``(wal, lsn)`` with the ``SyncScheduler`` and gets a
``concurrent.futures.Future`` (``request``), or names a callback (``notify``: an
asyncio driver's waiters are woken by one loop wake-up per wave, ``loop_wakeups``,
not one per future). A WAL with a registration and no sync running gets one
sync at once (the WAL's own group commit: write what is buffered, one fsync, up to the
highest LSN asked of it), handed by the registering thread straight to one of
``threads`` sync threads, so the WALs that wrote meanwhile are synced in parallel
(concurrent fsyncs on one filesystem share its journal commits), and each WAL's waiters
are resolved as soon as *its* sync ends, with its error for a WAL that failed
(``WalFailedError``: the disk-full path of ``wal.py`` and the engine's ``resume`` are
unchanged). A WAL has at most one sync running; registrations that arrive meanwhile wait
for it to end and are served by the next (queued by the sync thread that ends it, behind
the other WALs' syncs), so under load one fsync serves every writer of a partition that
wrote meanwhile, and across partitions the fsyncs overlap: DESIGN's "one fsync serves
many writers". No barrier across WALs: a partition whose fsync is slow (a large buffer,
a slow file) holds back its own waiters only, not every partition's acks (the first
pipeline ran waves that resolved nobody until the slowest WAL of the wave was done; with
1,000 partitions under acks=all that is head-of-line blocking). No thread of its own
between the writer and the sync thread: an ack used to wait for a dispatcher thread to
wake and take the GIL from a busy event loop (one more hand-off of up to the
interpreter's switch interval, 5 ms) before its fsync even began. Threads: ``threads``,
plus one for the periodic ticks of sync ``interval`` when there are any, whatever the
number of partitions.

Sync modes keep their meaning: ``always`` acknowledges after its WAL's sync;
``interval`` and ``none`` never wait for one (a caller may still ask, as ``Engine.sync``
does).
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

Done = concurrent.futures.Future[None]


class Syncable(Protocol):
    def sync_to(self, lsn: int) -> None: ...

    @property
    def synced_lsn(self) -> int: ...


#: Called once, from a sync thread, with the error of the sync that covered the LSN
#: asked (None: durable).
Waiter = Callable[[BaseException | None], None]

_Pending = tuple[Syncable, Callable[[int], None], int, list[Waiter]]


class SyncScheduler:
    """Overlapping fsyncs, one at a time per WAL, for every WAL with a waiter (see the
    module doc)."""

    def __init__(self, threads: int = 4, name: str = "sentinel-sync") -> None:
        if threads < 1:
            raise ValueError(f"a sync scheduler needs at least one thread, not {threads}")
        self._name = name
        self._cond = threading.Condition()
        # id(target) -> (target, how to sync it, highest LSN asked, its waiters)
        self._pending: dict[int, _Pending] = {}
        self._running: set[int] = set()  # ids of the targets with a sync under way
        # The sync threads take jobs from one queue (None: stop). Not an executor: its
        # submit (a future, a work item, a semaphore, a lock) cost the event loop ~20 us
        # per request when each request's partition needed a sync of its own (1,000
        # partitions); a put here is a few hundred nanoseconds. A thread starts when a
        # job finds none idle, up to ``threads``, as the executor's did.
        self._size = threads
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._io_threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a job (under ``_cond``)
        self._thread: threading.Thread | None = None
        self._stopped = False
        # Periodic ticks (sync ``interval``): id -> [period, next due, tick].
        self._ticks: dict[int, tuple[float, float, Callable[[], None]]] = {}
        self._tick_ids = itertools.count()
        self.wal_syncs = 0  # syncs started (each serves every waiter registered before)

    def request(
        self, target: Syncable, lsn: int, sync: Callable[[int], None] | None = None
    ) -> Done:
        """A future resolved once ``target`` is durable up to ``lsn`` (``sync(lsn)``,
        by default ``target.sync_to``, makes it so), or failed with its error."""
        future: Done = concurrent.futures.Future()
        if not self.notify(target, lsn, functools.partial(resolve_waiter, future), sync):
            future.set_result(None)
        return future

    def notify(
        self,
        target: Syncable,
        lsn: int,
        waiter: Waiter,
        sync: Callable[[int], None] | None = None,
    ) -> bool:
        """``request`` without a future: ``waiter(error)`` is called once, from a sync
        thread, when the sync covering ``lsn`` ends. False if ``target`` is durable up
        to ``lsn`` already (``waiter`` is not called). A waiter must be quick and must
        not call back into the scheduler: an asyncio driver posts to its loop
        (``LoopWakeups``), one wake-up for every waiter a wave resolves."""
        if target.synced_lsn >= lsn:
            return False
        with self._cond:
            if self._stopped:
                raise RuntimeError(f"sync scheduler {self._name} is shut down")
            key = id(target)
            found = self._pending.get(key)
            if found is None:
                self._pending[key] = (target, sync or target.sync_to, lsn, [waiter])
            else:
                found[3].append(waiter)
                if lsn > found[2]:
                    self._pending[key] = (found[0], found[1], lsn, found[3])
            if key not in self._running:
                self._dispatch_locked(key)
        return True

    def _dispatch_locked(self, key: int) -> None:
        """Start the pending sync of ``key`` (none running) on a sync thread."""
        pending = self._pending.pop(key)
        try:
            self._submit_locked(functools.partial(self._sync_one, key, pending))
        except BaseException as exc:  # no thread could start (the interpreter is exiting)
            _call_waiters(pending[3], exc)
            return
        self._running.add(key)
        self.wal_syncs += 1

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` once on a sync thread, behind the syncs queued so far: a WAL's
        roll in sync ``none``/``interval`` (``WriteAheadLog``'s ``run_io``), whose
        fsyncs must not run on the appending thread. A job does IO and must not wait
        for another job. ``RuntimeError`` once shut down."""
        with self._cond:
            if self._stopped:
                raise RuntimeError(f"sync scheduler {self._name} is shut down")
            self._submit_locked(functools.partial(self._run_job, job))

    def _run_job(self, job: Callable[[], None]) -> None:
        try:
            job()
        finally:
            with self._cond:
                self._idle += 1

    def _submit_locked(self, job: Callable[[], None]) -> None:
        if self._idle:
            self._idle -= 1
        elif len(self._io_threads) < self._size:
            thread = threading.Thread(
                target=self._work, name=f"{self._name}-io_{len(self._io_threads)}", daemon=True
            )
            thread.start()
            self._io_threads.append(thread)
        self._jobs.put(job)

    def _work(self) -> None:
        """A sync thread: run jobs until the stop mark."""
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except BaseException:  # a job resolves its own waiters; never lose the thread
                log.exception("a job of sync scheduler %s failed", self._name)

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
        """The ticks' thread (sync ``interval`` only)."""
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    now = time.monotonic()
                    due = self._due_locked(now)
                    if due:
                        break
                    soonest = min((at for _p, at, _t in self._ticks.values()), default=None)
                    self._cond.wait(None if soonest is None else max(0.0, soonest - now))
            dones = []
            with self._cond:
                for tick in due:
                    done: Done = concurrent.futures.Future()
                    self._submit_locked(functools.partial(self._run_tick, tick, done))
                    dones.append(done)
            for done in dones:
                done.result()  # the due ticks of a moment run in parallel, then the next

    def _sync_one(self, key: int, pending: _Pending) -> None:
        """On a sync thread: sync one WAL, resolve its waiters, start its next sync."""
        _target, sync, lsn, waiters = pending
        error = _sync(sync, lsn)
        with self._cond:
            self._running.discard(key)
            # This thread is free once the waiters below are resolved: a sync one of
            # them asks next is queued for it, not given a thread of its own.
            self._idle += 1
            if key in self._pending:
                # Behind the syncs already queued (other WALs'), not ahead of them.
                self._dispatch_locked(key)
            self._cond.notify_all()
        _call_waiters(waiters, error)

    def _run_tick(self, tick: Callable[[], None], done: Done) -> None:
        try:
            tick()  # a tick records its own failure (the WAL's)
        finally:
            with self._cond:
                self._idle += 1
            done.set_result(None)

    def shutdown(self) -> None:
        """Finish the syncs asked for so far, then stop the threads."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            while self._running:
                self._cond.wait()
            thread = self._thread
        if thread is not None:
            thread.join()
        with self._cond:
            workers = list(self._io_threads)
        for _ in workers:  # behind the jobs queued so far
            self._jobs.put(None)
        for worker in workers:
            worker.join()

    @property
    def thread_count(self) -> int:
        alive = 1 if self._thread is not None and self._thread.is_alive() else 0
        return alive + sum(t.is_alive() for t in self._io_threads)


def resolve_waiter(future: Done, error: BaseException | None) -> None:
    """Resolve a waiter's future, unless its waiter cancelled it (a cancelled future
    refuses a result: that must not cost the other waiters theirs)."""
    if future.done():
        return
    try:
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
    except concurrent.futures.InvalidStateError:
        pass  # cancelled between the check and the set


def _call_waiters(waiters: list[Waiter], error: BaseException | None) -> None:
    for waiter in waiters:
        try:
            waiter(error)
        except BaseException:  # one waiter's bug must not cost the others their answer
            log.exception("a waiter of a sync failed")


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
