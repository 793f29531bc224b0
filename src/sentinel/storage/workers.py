"""A fixed-size pool of worker threads shared by every engine of a broker.

Engines do not own threads: their flushes, compactions and WAL syncs are *jobs* run by
a ``WorkerPool`` (a broker runs one, of 2-4 threads, for all its partitions; an engine
opened alone makes a private pool of one thread). A ``Strand`` is one engine's queue on
the pool: its jobs run one at a time, in order, never concurrently, whatever the pool
size; jobs of different strands run in parallel. ``Strand.schedule(delay)`` runs the
strand's job (again) after ``delay`` seconds: the retry backoff of a failed job, without
a sleeping thread.

Jobs must not block waiting for another job of the pool (that could take every
thread); they may block on IO.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

Job = Callable[[], None]


class WorkerPool:
    """``threads`` daemon threads running submitted jobs, some after a delay."""

    def __init__(self, threads: int = 2, name: str = "sentinel-worker") -> None:
        if threads < 1:
            raise ValueError(f"a worker pool needs at least one thread, not {threads}")
        self._name = name
        self._size = threads
        self._cond = threading.Condition()
        self._ready: deque[Job] = deque()
        self._timed: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._stopped = False

    @property
    def size(self) -> int:
        return self._size

    def submit(self, job: Job, delay: float = 0.0) -> None:
        """Run ``job`` on a pool thread (after ``delay`` seconds). Threads start on the
        first submit, so that an idle pool costs none."""
        with self._cond:
            if self._stopped:
                raise RuntimeError(f"worker pool {self._name} is shut down")
            if delay > 0:
                heapq.heappush(self._timed, (time.monotonic() + delay, next(self._seq), job))
            else:
                self._ready.append(job)
            if len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._run, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            self._cond.notify()

    def _next_job(self) -> Job | None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._timed and self._timed[0][0] <= now:
                    self._ready.append(heapq.heappop(self._timed)[2])
                if self._ready:
                    return self._ready.popleft()
                if self._stopped:
                    return None
                timeout = self._timed[0][0] - now if self._timed else None
                self._cond.wait(timeout)

    def _run(self) -> None:
        while (job := self._next_job()) is not None:
            try:
                job()
            except BaseException:  # a job handles its own errors; never lose the thread
                log.exception("a job of worker pool %s failed", self._name)

    def shutdown(self) -> None:
        """Run what is ready, drop delayed jobs, join the threads."""
        with self._cond:
            self._stopped = True
            self._timed.clear()
            self._cond.notify_all()
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join()

    @property
    def thread_count(self) -> int:
        with self._cond:
            return sum(t.is_alive() for t in self._threads)


class Strand:
    """One owner's serial queue on a pool: ``job`` runs at most once at a time; a
    ``schedule`` while it runs (or is queued) makes it run once more afterwards."""

    def __init__(self, pool: WorkerPool, job: Job) -> None:
        self._pool = pool
        self._job = job
        self._lock = threading.Condition()
        self._queued = False  # a run is queued (or timed) and not started yet
        self._running = False
        self._again = False
        self._closed = False

    def schedule(self, delay: float = 0.0) -> None:
        with self._lock:
            if self._closed:
                return
            if self._running and delay <= 0:
                self._again = True
                return
            if self._queued and delay > 0:
                return  # a run is already coming
            self._queued = True
        self._pool.submit(self._run, delay)

    def _run(self) -> None:
        with self._lock:
            if self._running or self._closed:
                # A delayed run met a running one: the running one re-runs it.
                if self._running:
                    self._again = True
                self._queued = False
                self._lock.notify_all()
                return
            self._queued = False
            self._running = True
        try:
            self._job()
        finally:
            with self._lock:
                self._running = False
                again, self._again = self._again, False
                self._lock.notify_all()
            if again:
                self.schedule()

    @property
    def busy(self) -> bool:
        """A run is in progress or queued."""
        with self._lock:
            return self._running or self._queued

    def close(self) -> None:
        """No more runs; wait for the running one to end (a queued run does nothing)."""
        with self._lock:
            self._closed = True
            while self._running:
                self._lock.wait(0.05)
