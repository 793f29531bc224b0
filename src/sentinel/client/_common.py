"""What the clients' flavours share beyond their cores: closing on leaving ``with`` and
``async with``."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["AsyncClosingContext", "ClosingContext"]


class ClosingContext:
    """``with client:`` closes the client on the way out (the blocking clients)."""

    def close(self) -> None:
        """Release the client. Idempotent."""
        raise NotImplementedError

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
