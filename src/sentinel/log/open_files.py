"""Bounded open files: idle partition logs close their engine's files, reopen on demand.

A partition's engine holds few open files: its WAL segment, and the tables read since it
was last reopened (a broker's engines hold no LOCK of their own, the broker holds the
data directory's; the manifest is open only while an edit is appended). A broker of
thousands of partitions keeps at most ``max_open`` engines open (``OpenLogLimit``, an
LRU over the logs, with a limit derived from RLIMIT_NOFILE, at most 256, or set by
``--max-open-partitions``), and beyond it those *active* (appended to again within
``ACTIVE_WINDOW_S`` of the append before: under production), up to ``max_active``
(``--max-active-partitions``, derived from RLIMIT_NOFILE with no 256 bound); the least
recently used idle one beyond that cap is *released* on the worker pool: its engine
closes every file it holds (``Engine.suspend_files``: no fsync when nothing is
unsynced, no flush unless its memtable is large), and nothing else changes: the
engine and the ``PartitionLog`` stay in memory (offsets, high watermark, producer
state, version, memtable). The next call that needs the engine
reopens its WAL segment (``EngineSlot.pin`` or ``reopen_now`` -> ``Engine.resume_files``:
one ``open``, no replay, no new file, no fsync; a table reopens on its first read) and
the call goes on: a broker reopens a released partition on the event loop, without a
thread hop. While the logs holding files are at the hard cap (the cap and a
quarter), the loop's reopen is refused, and a worker's (``make_room``) first releases
the victims the drain has not reached yet: the open files stay bounded however fast a
pass reopens logs. A log in use (a call in progress, a sync wave awaited) is pinned and never
released; an engine that is busy (a flush or compaction running or wanted, a failed
WAL) refuses, and the limit tries again later.

A slot may also start *unopened* (a partition that closed cleanly, restarted by a
broker: ``PartitionLog.deferred``): its engine is opened by the first ``pin`` or
``wake``, with the opener the log gave, and only then enters the LRU.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Protocol

from sentinel.errors import ClosedError
from sentinel.storage.engine import Engine

_log = logging.getLogger(__name__)

RETRY_S = 0.2  # a busy log's release is tried again after this long
#: A log appended to again within this long of its append before is *active* (a
#: partition under production), until it has not been appended to for this long. A
#: producer's stream (a 64 KiB batch to each of 1,000 partitions in turn at 100 MB/s:
#: one every 0.6 s to each) makes a partition active at its second batch, so only the
#: first round over them misses the LRU (when it took a third append, the second round
#: also reopened every partition the first had released). One produce to each
#: partition (a test's, an operator's check, the 10,000-partition start) does not.
ACTIVE_WINDOW_S = 2.0


class Releasable(Protocol):
    def release_files(self) -> bool: ...

    def release_files_now(self) -> bool: ...

    @property
    def files_open(self) -> bool: ...

    @property
    def closed(self) -> bool: ...


class OpenLogLimit:
    """An LRU of the logs whose engines are open; past the cap, the least recently
    used are released by ``run`` (the broker's worker pool), in batches (``cap //
    16``): one job drains the victims that pile up meanwhile, rather than one job (a
    thread wake-up) per victim.

    The cap is ``max_open`` and one more per *active* log (``appended``: two appends
    within ``ACTIVE_WINDOW_S``), up to ``max_active``:
    partitions under production keep their files open, however many, within what the
    open-files limit holds, while idle ones beyond ``max_open`` are released. An LRU
    smaller than the set of logs a round-robin producer writes misses on every append:
    each one reopened a WAL segment and released another (at 1,000 partitions and 256
    open, 15-25 % of the MB/s). A log used once (a partition created, a produce and a
    fetch each) is not active: a broker of 10,000 such partitions keeps
    ``max_open``. Activity ends ``ACTIVE_WINDOW_S`` after the last append; the next use
    of any log, or ``trim`` (each retention pass), then releases down to the cap."""

    def __init__(
        self,
        max_open: int,
        run: Callable[[Callable[[], None], float], None],
        *,
        max_active: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_open < 1:
            raise ValueError(f"max_open must be at least 1, not {max_open}")
        if max_active < 0:
            raise ValueError(f"max_active must not be negative, not {max_active}")
        self.max_open = max_open
        self.max_active = max(max_open, max_active)
        self._clock = clock
        self._appended_at: dict[int, float] = {}  # id(log) -> its last append
        self._active: dict[int, float] = {}  # id(log) -> its last append while active
        self._pruned_at = clock()
        self._run = run
        self._lock = threading.Lock()
        self._lru: OrderedDict[int, Releasable] = OrderedDict()
        self._victims: deque[Releasable] = deque()  # to release, oldest first
        self._draining = False  # a job runs ``_drain`` (or is about to)
        self._releasing = 0  # victims taken by ``_drain``, their files not closed yet
        self._room = threading.Condition(self._lock)
        self.releases = 0

    def appended(self, log: Releasable) -> None:
        """``log`` took an append now (``ACTIVE_WINDOW_S``: whether it is active)."""
        if self.max_active == self.max_open:
            return
        now = self._clock()
        key = id(log)
        with self._lock:
            before = self._appended_at.get(key)
            if before is not None and now - before <= ACTIVE_WINDOW_S:
                self._active[key] = now
            self._appended_at[key] = now

    def trim(self) -> None:
        """Release the logs past the cap now: activity that ended lowers it, and an idle
        broker must not keep the files of the partitions it was producing to until one
        of them is used again (each retention pass calls this)."""
        with self._lock:
            if not self._evict_locked():
                return
        self._run(self._drain, 0.0)

    @property
    def cap(self) -> int:
        """The logs kept open now: ``max_open``, and one more per active log, up to
        ``max_active``."""
        with self._lock:
            return self._cap_locked()

    def _cap_locked(self) -> int:
        if not self._active:
            return self.max_open
        now = self._clock()
        if now - self._pruned_at >= ACTIVE_WINDOW_S / 4:  # O(active), a few times a window
            self._pruned_at = now
            cutoff = now - ACTIVE_WINDOW_S
            for key in [k for k, t in self._active.items() if t < cutoff]:
                del self._active[key]
        return min(self.max_active, self.max_open + len(self._active))

    @property
    def hard_cap(self) -> int:
        """The logs that may hold files at once, counting those picked for release and
        not released yet: the cap and a quarter more (the drain's lag)."""
        with self._lock:
            return self._hard_cap_locked()

    def _hard_cap_locked(self) -> int:
        cap = self._cap_locked()
        return cap + max(1, cap // 4)

    def _holding_locked(self) -> int:
        return len(self._lru) + len(self._victims) + self._releasing

    def crowded(self) -> bool:
        """Whether the logs holding files are at the hard cap: reopens outpace the
        releases (a round-robin over many more logs than the limit), so a reopen on the
        event loop is refused (a worker's, ``make_room``, first)."""
        with self._lock:
            return self._holding_locked() >= self._hard_cap_locked()

    def make_room(self, timeout: float) -> None:
        """Before a reopen (or a first opening) in a worker thread: while the logs
        holding files are at the hard cap, release the victims picked and not released
        yet in this thread (the drain's work, done by whoever needs the room), or wait,
        at most ``timeout`` seconds, for the releases other threads are making. Every
        worker reopen comes here, whatever does it (a retention or compaction pass, a
        read, an append, a topic's creation): such a pass over thousands of released
        logs reopened them faster than a loaded broker's drain released them, and 2,000
        new partitions reached the 1,024 RLIMIT_NOFILE. It returns at once when no room
        is coming (every log holding files in use or busy: their releases are retried
        later), and on the event loop, which must not block (its reopens are
        ``reopen_now``, refused while crowded, then a worker's)."""
        try:
            asyncio.get_running_loop()
            return
        except RuntimeError:
            pass
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._holding_locked() < self._hard_cap_locked():
                    return
                victim = self._take_victim_locked()
                if victim is None:
                    left = deadline - time.monotonic()
                    if not self._releasing or left <= 0:
                        return
                    self._room.wait(left)
                    continue
            self._release_taken(victim)

    def _take_victim_locked(self) -> Releasable | None:
        """(lock held) The oldest victim still idle, counted as releasing; None if none."""
        while self._victims:
            victim = self._victims.popleft()
            if id(victim) in self._lru:
                continue  # used again since it was picked: not a victim any more
            self._releasing += 1
            return victim
        return None

    def _release_taken(self, victim: Releasable) -> None:
        """Release a victim ``_take_victim_locked`` gave, whatever happens."""
        try:
            self._release(victim)
        except Exception:  # its next use meets the error; the others go on
            _log.exception("releasing the files of an idle partition log failed")
        finally:
            with self._lock:
                self._releasing -= 1
                self._room.notify_all()

    @property
    def open_count(self) -> int:
        return len(self._lru)

    def used(self, log: Releasable, *, inline: bool = False) -> None:
        """``log`` was used now (it holds files). Past the limit, the least recently used
        become victims, released by a drain job; ``inline``: the caller releases them
        itself right after (``release_now``), and no job is started for them."""
        with self._lock:
            key = id(log)
            if key in self._lru:
                self._lru.move_to_end(key)
            else:
                self._lru[key] = log
            if inline:
                self._pick_victims_locked()
                return
            if not self._evict_locked():
                return
        self._run(self._drain, 0.0)

    def release_now(self, most: int = 32) -> None:
        """Release, in this call, up to ``most`` victims whose release costs nothing but
        ``close`` calls (``Releasable.release_files_now``: the event loop's path, with no
        worker's wake-up and no GIL hand-off per batch of releases); from the first one
        that needs more (a sync, a flush, a lock held elsewhere), a drain job does the
        rest, as without ``inline``."""
        for _ in range(most):
            with self._lock:
                victim = self._take_victim_locked()
                if victim is None:
                    return
            released = False
            try:
                released = victim.release_files_now()
            except Exception:  # the drain job meets it again, and logs it
                released = False
            finally:
                with self._lock:
                    self._releasing -= 1
                    if released:
                        self.releases += 1
                    else:
                        self._victims.appendleft(victim)
                    self._room.notify_all()
            if not released:
                break
        with self._lock:
            if not self._victims or self._draining:
                return
            self._draining = True
        self._run(self._drain, 0.0)

    def _pick_victims_locked(self) -> None:
        """Past the cap, move the least recently used logs to the victims, down to
        ``cap - cap // 16`` (lock held)."""
        cap = self._cap_locked()
        if len(self._lru) > cap:
            keep = cap - cap // 16
            while len(self._lru) > keep:
                self._victims.append(self._lru.popitem(last=False)[1])

    def _evict_locked(self) -> bool:
        """``_pick_victims_locked``: a job releases a batch, not one log per request (a
        round-robin over more logs than the limit); True if a drain job must be started
        (lock held)."""
        self._pick_victims_locked()
        if not self._victims or self._draining:
            return False
        self._draining = True
        return True

    def _drain(self) -> None:
        """Release the victims until none is left (new ones may come meanwhile)."""
        while True:
            with self._lock:
                victim = self._take_victim_locked()
                if victim is None:
                    self._draining = False
                    return
            self._release_taken(victim)

    def _release(self, log: Releasable) -> None:
        if log.release_files():
            self.releases += 1
            return
        # In use (its unpin marks it used again) or busy: try again later, if it is
        # still among the least recently used then.
        if not log.files_open or log.closed:
            return
        with self._lock:
            if id(log) in self._lru:
                return
            self._lru[id(log)] = log
            self._lru.move_to_end(id(log), last=False)
        self._run(self._recheck, RETRY_S)

    def _recheck(self) -> None:
        with self._lock:
            if not self._evict_locked():
                return
        self._drain()

    def forget(self, log: Releasable) -> None:
        with self._lock:
            self._lru.pop(id(log), None)
            self._appended_at.pop(id(log), None)
            self._active.pop(id(log), None)


class EngineSlot:
    """The engine under one partition log: pinned while used, suspended when idle."""

    def __init__(self, engine: Engine | None, opener: Callable[[], Engine] | None = None) -> None:
        if engine is None and opener is None:
            raise ValueError("an unopened slot needs an opener")
        self._engine = engine
        self._opener = opener
        self._lock = threading.Lock()
        self._pins = 0
        self.closed = False

    @property
    def opened(self) -> bool:
        return self._engine is not None

    @property
    def engine(self) -> Engine:
        """The engine; only once opened (``pin`` or ``wake`` first)."""
        if self._engine is None:
            raise ClosedError("the partition log's engine is not opened yet")
        return self._engine

    @property
    def released(self) -> bool:
        return self._engine is None or self._engine.files_suspended

    def _ready(self) -> Engine:
        """The engine opened, its files reopened (lock held)."""
        if self._engine is None:
            assert self._opener is not None
            self._engine = self._opener()
        elif self._engine.files_suspended:
            self._engine.resume_files()
        return self._engine

    def pin(self) -> Engine:
        """The engine, opened or its files reopened if needed, pinned until ``unpin``."""
        with self._lock:
            if self.closed:
                raise ClosedError("the partition log is closed")
            engine = self._ready()
            self._pins += 1
            return engine

    def reopen_now(self) -> bool:
        """Reopen a released engine's files in this call if that is cheap (the engine
        is opened, and no release or opening holds the slot): its WAL segment's
        ``open`` (``Engine.resume_files``). True if its files are open now; False: the
        caller opens them in a worker (``pin``), as for a deferred log."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            engine = self._engine
            if self.closed or engine is None or engine.marked_clean:
                return False  # marked: its record's removal is an fsync, for a worker
            if engine.files_suspended:
                engine.resume_files()
            return True
        finally:
            self._lock.release()

    def wake(self) -> Engine:
        """The engine with its files open, not pinned."""
        with self._lock:
            if self.closed:
                return self.engine
            return self._ready()

    def unpin(self) -> None:
        with self._lock:
            self._pins -= 1

    def while_released(self, action: Callable[[Engine], bool]) -> bool:
        """``action(engine)`` if the engine's files are released and the log is not in
        use (no pin, no reopen can come meanwhile); False otherwise."""
        with self._lock:
            engine = self._engine
            if self._pins or self.closed or engine is None or not engine.files_suspended:
                return False
            return action(engine)

    def release_now(self, before: Callable[[Engine], bool]) -> bool:
        """``release`` on the event loop: only if no lock is held elsewhere and it costs
        nothing but ``close`` calls (``before``, then ``Engine.suspend_files_now``);
        False otherwise, the files left open."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            engine = self._engine
            if self._pins or self.closed or engine is None or engine.files_suspended:
                return False
            return before(engine) and engine.suspend_files_now()
        finally:
            self._lock.release()

    def release(self, before: Callable[[Engine], None]) -> bool:
        """Suspend the engine's files unless the log is in use or closed: ``before``
        (the log's own step) first. True if the files are closed now."""
        with self._lock:
            engine = self._engine
            if self._pins or self.closed or engine is None or engine.files_suspended:
                return False
            before(engine)
            return engine.suspend_files()

    def close(self) -> None:
        with self._lock:
            self.closed = True
