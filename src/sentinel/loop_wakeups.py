"""Wake asyncio waiters from other threads with one loop wake-up per burst.

A sync wave (``storage/sync_scheduler``) ends on a sync thread and makes durable the
appends of every partition written meanwhile: at 1,000 partitions that is hundreds of
waiters. ``asyncio.wrap_future`` of one ``concurrent.futures.Future`` each costs, per
waiter, a future with its condition and lock, the chaining callbacks, and a
``call_soon_threadsafe``, which writes to the loop's wake-up pipe: one system call and
one more run of the loop for each. Here the sync thread appends ``(future, error)`` to
a list and schedules one drain unless one is scheduled already; the drain, on the
loop, resolves everything posted so far. A waiter whose caller went away (its future
cancelled) is skipped. A waiter may carry a ``then``: what its owner does at the end of
the wait (a partition log moves its high watermark and unpins its files), run by the
drain before the future is resolved, cancelled or not. So the sync thread runs none of
that: it posts and goes back to its fsyncs, and the event loop, which runs the rest of
the partition's code anyway, does it without a GIL hand-off per partition.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import weakref
from collections.abc import Callable

__all__ = ["LoopWakeups"]

log = logging.getLogger(__name__)

Then = Callable[[BaseException | None], None]

_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopWakeups] = (
    weakref.WeakKeyDictionary()
)


class LoopWakeups:
    """Posts from any thread, resolved on ``loop`` (module doc)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._posted: list[tuple[asyncio.Future[None], BaseException | None, Then | None]] = []
        self._scheduled = False
        self.wakeups = 0  # loop wake-ups asked (for tests and profiles)

    @classmethod
    def of_running_loop(cls) -> LoopWakeups:
        """The running loop's (made at its first use)."""
        loop = asyncio.get_running_loop()
        found = _by_loop.get(loop)
        if found is None:
            found = _by_loop[loop] = cls(loop)
        return found

    def waiter(
        self, then: Then | None = None
    ) -> tuple[asyncio.Future[None], Callable[[BaseException | None], None]]:
        """A future of the loop, and the callback (for any thread) that resolves it:
        with None, or with the error given; ``then(error)`` runs on the loop first."""
        future: asyncio.Future[None] = self._loop.create_future()
        return future, functools.partial(self._post, future, then)

    def _post(
        self, future: asyncio.Future[None], then: Then | None, error: BaseException | None
    ) -> None:
        with self._lock:
            self._posted.append((future, error, then))
            if self._scheduled:
                return
            self._scheduled = True
            self.wakeups += 1
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nobody waits any more
            with self._lock:
                self._posted.clear()
                self._scheduled = False

    def _drain(self) -> None:
        with self._lock:
            posted, self._posted = self._posted, []
            self._scheduled = False
        for future, error, then in posted:
            if then is not None:
                try:
                    then(error)
                except Exception:  # one owner's bug must not cost the others their answer
                    log.exception("the end of a wait failed")
            if future.done():  # its waiter was cancelled
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
