"""A waiting handler's wake-up as an ``asyncio.Future[None]`` behaves, for the pure
pieces of the Kafka door that let handlers through (``turns``, ``request_order``)."""

from __future__ import annotations


class Waiter:
    """Let through once, never when cancelled."""

    def __init__(self) -> None:
        self.state = "waiting"

    def done(self) -> bool:
        return self.state != "waiting"

    def cancelled(self) -> bool:
        return self.state == "cancelled"

    def set_result(self, result: None, /) -> None:
        assert self.state == "waiting", "a waiter is let through once, never when cancelled"
        self.state = "let through"

    def cancel(self) -> None:
        if self.state == "waiting":
            self.state = "cancelled"
