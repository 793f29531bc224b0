"""Bounded open files: idle partition logs close their engine's files, reopen on demand.

A partition's engine holds a few open files (LOCK, WAL segment, manifest, one per live
table). A broker of thousands of partitions keeps at most ``max_open`` engines open
(``OpenLogLimit``, an LRU over the logs, with a limit derived from RLIMIT_NOFILE or set
by ``--max-open-partitions``); the least recently used idle one beyond it is *released*
on the worker pool: its log checkpoints, its engine syncs and closes (writing the
clean-shutdown record), and nothing else changes: the ``PartitionLog`` object stays,
with its offsets, high watermark and producer state in memory. The next call that needs
the engine reopens it (``EngineSlot.pin``: a clean open, no replay) and the call goes
on. A log in use (a call in progress, a sync wave awaited) is pinned and never released.

LSNs stay monotonic across incarnations: each reopened engine numbers from 1 again, so
the slot adds ``lsn_base`` (everything the released engines wrote, all of it durable).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from sentinel.errors import ClosedError
from sentinel.storage.engine import Engine, EngineStats


class Releasable(Protocol):
    def release_files(self) -> bool: ...


class OpenLogLimit:
    """An LRU of the logs whose engines are open; past ``max_open``, the least recently
    used are released by ``run`` (the broker's worker pool)."""

    def __init__(self, max_open: int, run: Callable[[Callable[[], None]], None]) -> None:
        if max_open < 1:
            raise ValueError(f"max_open must be at least 1, not {max_open}")
        self.max_open = max_open
        self._run = run
        self._lock = threading.Lock()
        self._lru: OrderedDict[int, Releasable] = OrderedDict()
        self.releases = 0

    @property
    def open_count(self) -> int:
        return len(self._lru)

    def used(self, log: Releasable) -> None:
        victims: list[Releasable] = []
        with self._lock:
            key = id(log)
            if key in self._lru:
                self._lru.move_to_end(key)
            else:
                self._lru[key] = log
            while len(self._lru) > self.max_open:
                victims.append(self._lru.popitem(last=False)[1])
        for victim in victims:
            self._run(lambda v=victim: self._release(v))  # type: ignore[misc]

    def _release(self, log: Releasable) -> None:
        # A pinned log is in use: its unpin marks it used again (back in the LRU).
        if log.release_files():
            self.releases += 1

    def forget(self, log: Releasable) -> None:
        with self._lock:
            self._lru.pop(id(log), None)


class EngineSlot:
    """The engine under one partition log: pinned while used, released when idle."""

    def __init__(self, engine: Engine, reopen: Callable[[], Engine] | None) -> None:
        self.engine = engine
        self._reopen = reopen
        self._lock = threading.Lock()
        self._pins = 0
        self.released = False
        self.closed = False
        self.lsn_base = 0
        self.stats_when_released: EngineStats | None = None

    def pin(self) -> Engine:
        """The live engine (reopened if released), pinned until ``unpin``."""
        with self._lock:
            if self.released:
                if self.closed or self._reopen is None:
                    raise ClosedError("the partition log is closed")
                self.engine = self._reopen()
                self.released = False
                self.stats_when_released = None
            self._pins += 1
            return self.engine

    def unpin(self) -> None:
        with self._lock:
            self._pins -= 1

    def release(self, before_close: Callable[[Engine], None]) -> bool:
        """Close the engine unless pinned, released or closed: ``before_close`` (the
        log's checkpoint and sync) first. True if it did."""
        with self._lock:
            if self._pins or self.released or self.closed or self._reopen is None:
                return False
            engine = self.engine
            before_close(engine)
            self.stats_when_released = engine.stats()
            last = engine.wal.last_lsn
            engine.close()
            self.lsn_base += last
            self.released = True
            return True

    def close(self) -> bool:
        """Mark closed; True if the engine is still open (the caller closes it)."""
        with self._lock:
            self.closed = True
            return not self.released
