"""Whether an engine's storage can take writes now, and when to try again.

A full disk (or any failed write or fsync) puts the engine's WAL, or its background
flushes, into a *failed* state; the engine does not stop for good. ``StorageHealth``
tracks one such state: it logs ONE warning when the state is entered and ONE info line
when it is left (never one line per refused request), and spaces the attempts to leave
it with an exponential backoff, so that a stream of refused requests does not turn into
a stream of failing IO.

Thread-safe; sans-IO apart from logging (the caller does the attempt).
"""

from __future__ import annotations

import errno
import logging
import threading

from sentinel.clock import Clock

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0

_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the disk, or the user's quota, is full:
    the failure a start may go on after (reads served, writes refused and retried),
    unlike a read-only or failing disk, which a start refuses."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            return True
        exc = exc.__cause__  # type: ignore[assignment]
    return False


class StorageHealth:
    """The health of one thing that writes (``what``: e.g. "the WAL of <dir>")."""

    def __init__(
        self,
        what: str,
        clock: Clock,
        *,
        first_backoff_s: float = FIRST_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        self._what = what
        self._clock = clock
        self._first = first_backoff_s
        self._max = max_backoff_s
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._backoff = first_backoff_s
        self._next_try = 0.0

    @property
    def error(self) -> BaseException | None:
        """The error that put it in the failed state; None when healthy."""
        return self._error

    def failed(self, exc: BaseException) -> None:
        """An attempt (or a first write) failed with ``exc``."""
        with self._lock:
            now = self._clock.monotonic()
            if self._error is None:
                log.warning("%s failed: %r; refusing writes until it recovers", self._what, exc)
                self._backoff = self._first
            else:
                self._backoff = min(self._max, self._backoff * 2)
            self._error = exc
            self._next_try = now + self._backoff

    def due(self) -> bool:
        """True when it is time to try to recover (always True when healthy)."""
        with self._lock:
            return self._error is None or self._clock.monotonic() >= self._next_try

    def seconds_until_due(self) -> float:
        with self._lock:
            return max(0.0, self._next_try - self._clock.monotonic())

    def recovered(self, detail: str = "") -> None:
        with self._lock:
            if self._error is not None:
                log.info("%s recovered%s", self._what, f": {detail}" if detail else "")
            self._error = None
            self._backoff = self._first
