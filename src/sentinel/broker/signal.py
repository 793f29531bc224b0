"""A versioned wake-up for long-polling readers of one partition.

Readers note ``version`` before they look, then ``wait(version, timeout)``: if the
signal fired in between, the wait returns at once, so no wake-up is ever missed.
``wait_any`` does the same over many signals (a fetch over many partitions), with one
future registered on each, not a task per partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence


class Signal:
    __slots__ = ("_waiters", "version")

    def __init__(self) -> None:
        self.version = 0
        self._waiters: set[asyncio.Future[None]] = set()

    def fire(self) -> None:
        self.version += 1
        waiters, self._waiters = self._waiters, set()
        for future in waiters:
            if not future.done():
                future.set_result(None)

    async def wait(self, seen_version: int, timeout: float) -> None:
        """Return once the version moves past ``seen_version`` or ``timeout`` passes."""
        await wait_any(((self, seen_version),), timeout)


async def wait_any(seen: Sequence[tuple[Signal, int]], timeout: float) -> None:
    """Return once any signal's version moves past the one noted with it, or after
    ``timeout`` seconds."""
    if timeout <= 0 or any(signal.version != version for signal, version in seen):
        return
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    for signal, _version in seen:
        signal._waiters.add(future)
    try:
        await asyncio.wait_for(future, timeout)
    except TimeoutError:
        pass
    finally:
        for signal, _version in seen:
            signal._waiters.discard(future)
