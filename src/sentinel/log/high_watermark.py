"""The high watermark of a single-broker partition: the end of the acknowledged log.

Rule (``auto``): with sync ``always`` a batch is acknowledged once the WAL entry that
holds it is fsynced, so the watermark waits in a queue of (lsn, log end) until
``synced(lsn)`` covers it; in the other sync modes a batch is acknowledged once
appended (``appended`` moves the watermark at once). Without ``auto`` (a replicated
partition) only ``set`` moves it. Thread-safe: ``synced`` comes from worker threads.
"""

from __future__ import annotations

import threading
from collections import deque


class HighWatermark:
    __slots__ = ("_auto", "_lock", "_pending", "_sync_always", "_value")

    def __init__(self, value: int, *, auto: bool, sync_always: bool) -> None:
        self._value = value
        self._auto = auto
        self._sync_always = sync_always
        self._lock = threading.Lock()
        self._pending: deque[tuple[int, int]] = deque()

    @property
    def value(self) -> int:
        return self._value

    def appended(self, lsn: int, log_end: int) -> None:
        """Batches up to ``log_end`` were written in WAL entry ``lsn``."""
        if not self._auto:
            return
        with self._lock:
            if self._sync_always:
                self._pending.append((lsn, log_end))
            else:
                self._value = log_end

    def synced(self, lsn: int) -> None:
        """Every WAL entry up to ``lsn`` is durable."""
        if not self._auto:
            return
        with self._lock:
            pending = self._pending
            while pending and pending[0][0] <= lsn:
                self._value = pending.popleft()[1]

    def set(self, offset: int) -> None:
        with self._lock:
            self._value = offset

    def truncated(self, log_end: int) -> None:
        """The log was cut back to ``log_end``."""
        with self._lock:
            self._value = min(self._value, log_end)
            self._pending = deque(p for p in self._pending if p[1] <= log_end)

    def restart(self, offset: int) -> None:
        """The log restarted, empty, at ``offset``: nothing below it is pending."""
        with self._lock:
            self._value = offset
            self._pending.clear()
