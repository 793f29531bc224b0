"""A broker-wide memtable budget (RocksDB's write buffer manager).

Every engine of a broker reports the size of its active memtable after each write.
When the total passes ``budget_bytes``, the manager asks the engines with the largest
memtables for memory, largest first (``Engine._relieve_memory``: an engine whose
memtable mostly holds large values lets them go to its WAL; otherwise it freezes the
memtable and hands it to the worker pool to flush),
until the total that remains is under half the budget. The request runs on the worker
pool, never on the writer's thread (which holds its own engine's write lock), and one
engine is asked at most once until it reports again. ``memtable_bytes`` per engine
stays the upper bound of one memtable; the budget bounds them all together, so a broker
of thousands of mostly idle partitions holds a few memtables' worth of memory, not one
per partition.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sentinel.storage.workers import WorkerPool

FlushRequest = Callable[[], None]


class WriteBufferManager:
    def __init__(self, budget_bytes: int, pool: WorkerPool) -> None:
        if budget_bytes < 1024:
            raise ValueError("the memtable budget must be at least 1 KiB")
        self._budget = budget_bytes
        self._pool = pool
        self._lock = threading.Lock()
        self._sizes: dict[int, tuple[int, FlushRequest]] = {}
        self._asked: set[int] = set()
        self._total = 0
        # The sizes of the engines in ``_asked`` together, kept as they report: a write
        # past the budget reads it instead of summing hundreds of asked engines.
        self._asked_total = 0
        self.flushes_requested = 0

    @property
    def budget_bytes(self) -> int:
        return self._budget

    @property
    def total_bytes(self) -> int:
        return self._total

    def report(self, owner: int, size: int, flush: FlushRequest) -> None:
        """``owner``'s active memtable now holds ``size`` bytes; ``flush`` freezes it."""
        doomed: list[FlushRequest] = []
        with self._lock:
            old = self._sizes.get(owner)
            old_size = old[0] if old is not None else 0
            asked = owner in self._asked
            self._total += size - old_size
            if asked:
                self._asked_total += size - old_size
            if size:
                self._sizes[owner] = (size, flush)
            else:
                self._sizes.pop(owner, None)
            if asked and (size == 0 or size < old_size):  # its flush froze the memtable
                self._asked.discard(owner)
                self._asked_total -= size
            if self._total > self._budget:
                remaining = self._total - self._asked_total
                # The sizes are sorted only when more must be asked: past the budget,
                # with enough flushes already asked, every write would otherwise sort
                # every engine's size (a broker of 1,000 partitions spent more on that
                # than on the write's memtable insert).
                if remaining > self._budget // 2:
                    for other, (bytes_, request) in sorted(
                        self._sizes.items(), key=lambda item: -item[1][0]
                    ):
                        if remaining <= self._budget // 2:
                            break
                        if other in self._asked:
                            continue
                        self._asked.add(other)
                        self._asked_total += bytes_
                        remaining -= bytes_
                        doomed.append(request)
        for request in doomed:
            self.flushes_requested += 1
            self._pool.submit(request)

    def forget(self, owner: int) -> None:
        with self._lock:
            old = self._sizes.pop(owner, None)
            if old is not None:
                self._total -= old[0]
                if owner in self._asked:
                    self._asked_total -= old[0]
            self._asked.discard(owner)
