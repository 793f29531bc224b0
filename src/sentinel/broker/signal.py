"""A versioned wake-up for long-polling readers of one partition.

Readers note ``version`` before they look, then ``wait(version, timeout)``: if an append
fired in between, the wait returns at once, so no wake-up is ever missed.
"""

from __future__ import annotations

import asyncio
import contextlib


class Signal:
    __slots__ = ("_event", "version")

    def __init__(self) -> None:
        self.version = 0
        self._event = asyncio.Event()

    def fire(self) -> None:
        self.version += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, seen_version: int, timeout: float) -> None:
        """Return once the version moves past ``seen_version`` or ``timeout`` passes."""
        if self.version != seen_version or timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
