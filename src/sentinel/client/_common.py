"""What the clients' flavours share beyond their cores: closing on leaving ``with`` and
``async with``, and closing at interpreter exit what the application left open.

A blocking client runs its IO on a daemon thread's event loop. Left open when the
interpreter exits, that loop would be torn down with its tasks still pending (and
asyncio would print ``Task was destroyed but it is pending!``), and a producer's
queued records would be lost. So every blocking client registers itself on creation
and unregisters on ``close``; at exit, ``atexit`` closes those still open, as
kafka-python does (a producer flushes for up to ``AT_EXIT_TIMEOUT_S`` first).
"""

from __future__ import annotations

import atexit
import logging
import threading
from types import TracebackType
from typing import Self

__all__ = ["AT_EXIT_TIMEOUT_S", "AsyncClosingContext", "ClosingContext"]

log = logging.getLogger(__name__)

AT_EXIT_TIMEOUT_S = 5.0
"""How long a client left open may take to close at interpreter exit."""

_open: dict[int, ClosingContext] = {}
_open_lock = threading.Lock()
_registered = False


def _close_all_at_exit() -> None:
    with _open_lock:
        clients = list(_open.values())
        _open.clear()
    for client in clients:
        try:
            client.close_at_exit()
        except Exception as exc:
            log.warning("closing a %s at exit: %s", type(client).__name__, exc)


class ClosingContext:
    """``with client:`` closes the client on the way out (the blocking clients)."""

    def close(self) -> None:
        """Release the client. Idempotent."""
        raise NotImplementedError

    def close_at_exit(self) -> None:
        """``close`` as the interpreter exits (bounded by ``AT_EXIT_TIMEOUT_S``)."""
        self.close()

    def _close_at_exit(self) -> None:
        """Have this client closed at interpreter exit unless closed before."""
        global _registered  # noqa: PLW0603 - one atexit hook for the process
        with _open_lock:
            _open[id(self)] = self
            if not _registered:
                atexit.register(_close_all_at_exit)
                _registered = True

    def _closed_now(self) -> None:
        """The client is closed: nothing to do at exit."""
        with _open_lock:
            _open.pop(id(self), None)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClosingContext:
    """``async with client:`` closes the client on the way out (the asyncio clients,
    whose ``__aenter__`` differs: some start the client first)."""

    async def close(self) -> None:
        """Release the client. Idempotent."""
        raise NotImplementedError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
