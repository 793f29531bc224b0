"""Ctrl-C and SIGTERM, taken where the command can stop cleanly.

Python raises ``KeyboardInterrupt`` wherever the main thread is when the signal lands.
Inside a client's locking code (a condition re-taking the lock it shares with the
client's IO thread, say) that can leave the lock released by the wrong thread or held
for good, and the close that follows hangs: CI saw ``consume -follow`` still running
30 s after a SIGINT, twice in one run. So the loops that run for as long as the user
lets them (``consume``'s reads, ``produce``'s sends) run ``deferred``: there a signal
only records itself and wakes the client (``Consumer.wakeup``), and the loop raises
``KeyboardInterrupt`` between two calls (``check``), with nothing of the client's held.
Where such a loop blocks on the user instead (``raising``: the next line of stdin),
the signal raises at once, as before: no lock of ours is held there. Outside these
places, and at a second signal (the user insists: a close that hangs), it raises at
once too.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["INTERRUPTS", "Interrupts"]


class Interrupts:
    """The process's one record of SIGINT / SIGTERM (``install`` in the main thread)."""

    def __init__(self) -> None:
        self.requested = False
        self._deferring = 0
        self._raising = 0
        self._wake: list[Callable[[], None]] = []

    def install(self) -> None:
        """Take SIGINT and SIGTERM (from the main thread; elsewhere nothing changes)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self.handle)
            signal.signal(signal.SIGTERM, self.handle)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        again, self.requested = self.requested, True
        if not self._deferring or self._raising or again:
            raise KeyboardInterrupt
        for wake in tuple(self._wake):
            wake()

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a signal came (a point where stopping is safe)."""
        if self.requested:
            raise KeyboardInterrupt

    @contextmanager
    def deferred(self, wake: Callable[[], None] | None = None) -> Iterator[None]:
        """A signal in the body is recorded and calls ``wake`` (signal-safe: it must take
        no lock); it raises at the body's next ``check``, or at its end."""
        self.check()
        self._deferring += 1
        if wake is not None:
            self._wake.append(wake)
        try:
            yield
        finally:
            self._deferring -= 1
            if wake is not None:
                self._wake.remove(wake)
        self.check()

    @contextmanager
    def raising(self) -> Iterator[None]:
        """Inside ``deferred``, a stretch that blocks on the user: a signal raises at once."""
        self.check()
        self._raising += 1
        try:
            yield
        finally:
            self._raising -= 1


#: The one the CLI installs (``cli.main``); commands run in-process by tests leave it
#: uninstalled, so there ``check`` never raises and signals behave as Python's default.
INTERRUPTS = Interrupts()
