"""How the gRPC door admits a request: read its one message, hold what it weighs in the
broker's request budget (``--max-request-bytes-in-flight``) until it is answered.

gRPC tells a request's size only once it has read the whole message, and a message is
read only when the door asks for it (until then it waits in the sender's flow-control
window, not in the broker's memory). A call's room is therefore held in two steps::

    headers arrive --> lane room held --> message read --> its own size held --> answered
                       (below)            within           (waits for room if
                                          request_timeout   larger than held)

* ``Produce``, whose request may be as large as ``--max-request-bytes``, waits for that
  much room (first come, first served) before its message is read, so that a burst of
  large produces is read two at a time, not all at once. Once the message has had
  ``hold_s`` (``--grpc-request-hold-ms``) to arrive and has not, the call keeps
  ``SMALL_REQUEST_BYTES`` only: a call that sends its headers and stalls holds the budget
  for ``hold_s``, not until it leaves, and the rest of a slow large message arrives at
  the network's pace.
* Every other RPC (names, ids, offsets: small by nature) holds ``SMALL_REQUEST_BYTES``
  taken at once, never waiting: a ListTopics is never queued behind large produces or
  stalled calls (as the Kafka door's small frames).

A message that has not arrived ``request_timeout_s`` (``--grpc-request-timeout-ms``)
after its room was held is refused (``RequestNotDeliveredError``), as the Kafka door
drops a frame whose body stalls.

How many calls of one connection reach admission at once is bounded before it, by
HTTP/2 (``--grpc-max-concurrent-streams``, ``server/app``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from typing import Any

from sentinel.broker.request_budget import RequestBudget, Reservation
from sentinel.config import BrokerConfig
from sentinel.errors import PeerError

_DEFAULTS = BrokerConfig()

SMALL_REQUEST_BYTES = 64 * 1024
"""What a call holds while its message is unread, unless it may be large."""
LARGE_METHODS = frozenset({"Produce"})
"""The RPCs whose request may be as large as ``--max-request-bytes``."""
DEFAULT_HOLD_S = _DEFAULTS.grpc_request_hold_ms / 1000
"""How long a large RPC's unread message keeps ``--max-request-bytes`` held (64 MiB
arrive in ~0.5 s at 1 Gbit/s): ``--grpc-request-hold-ms``'s default."""
DEFAULT_REQUEST_TIMEOUT_S = _DEFAULTS.grpc_request_timeout_ms / 1000
"""A call's message must arrive within this once its headers did:
``--grpc-request-timeout-ms``'s default."""


class RequestNotDeliveredError(PeerError):
    """The caller sent a call's headers but not its message in time (retriable)."""

    kafka_code = 7
    code_name = "REQUEST_TIMED_OUT"


async def _one_message(requests: AsyncIterable[bytes]) -> bytes | None:
    """The request's one message. The receiver is run to its end (a unary client
    half-closes after its message): a receiver left suspended keeps the last message in
    a reference cycle, so a large request would stay in memory until a full collection."""
    first: bytes | None = None
    async for raw in requests:
        if first is None:
            first = raw
    return first


class Admission:
    """Admits the requests of one gRPC server against the broker's budget."""

    def __init__(
        self,
        budget: RequestBudget,
        max_request_bytes: int,
        *,
        hold_s: float = DEFAULT_HOLD_S,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> None:
        self._budget = budget
        self._max_request_bytes = max_request_bytes
        self._hold_s = hold_s
        self._request_timeout_s = request_timeout_s
        self._closing: set[asyncio.Task[None]] = set()

    @classmethod
    def of(cls, budget: RequestBudget, config: BrokerConfig) -> Admission:
        """The admission a broker of ``config`` runs its gRPC door with."""
        return cls(
            budget,
            config.max_request_bytes,
            hold_s=config.grpc_request_hold_ms / 1000,
            request_timeout_s=config.grpc_request_timeout_ms / 1000,
        )

    @property
    def hold_s(self) -> float:
        return self._hold_s

    @property
    def request_timeout_s(self) -> float:
        return self._request_timeout_s

    async def admit(
        self, method: str, requests: AsyncIterable[bytes], wait: float
    ) -> tuple[Reservation, bytes | None]:
        """The call's message (None: it sent none) and the room it holds, to release once
        answered. Waits for room at most ``wait`` seconds (then ``RequestThrottledError``);
        ``RequestNotDeliveredError`` if the message does not arrive in time."""
        large = method in LARGE_METHODS
        if large:
            held = await self._budget.reserve(self._max_request_bytes, wait)
        else:
            held = self._lane_room()
        deadline = asyncio.get_running_loop().time() + self._request_timeout_s
        try:
            raw = await self._read(method, requests, held if large else None, deadline)
        except BaseException:
            held.release()
            self._close_soon(requests)
            raise
        size = len(raw) if raw is not None else 0
        if size <= held.size:
            held.shrink(size)
            return held, raw
        held.release()  # read with less than it weighs: now wait for all of it
        return await self._budget.reserve(size, wait), raw

    def _lane_room(self) -> Reservation:
        room = self._budget.try_reserve(SMALL_REQUEST_BYTES)
        return room if room is not None else self._budget.force(SMALL_REQUEST_BYTES)

    async def _read(
        self,
        method: str,
        requests: AsyncIterable[bytes],
        demote: Reservation | None,
        deadline: float,
    ) -> bytes | None:
        """Read the message by ``deadline``; ``demote`` keeps ``SMALL_REQUEST_BYTES``
        only once it has waited ``hold_s``."""
        loop = asyncio.get_running_loop()
        reading = asyncio.ensure_future(_one_message(requests))
        try:
            if demote is not None:
                await asyncio.wait((reading,), timeout=self._hold_s)
                if not reading.done():
                    demote.shrink(SMALL_REQUEST_BYTES)
            return await asyncio.wait_for(reading, max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise RequestNotDeliveredError(
                f"the {method} call's request message did not arrive within "
                f"{self._request_timeout_s:g} s of its headers"
            ) from None
        finally:
            reading.cancel()  # (done: no effect) cancelled, or the read's own error

    def _close_soon(self, requests: AsyncIterable[bytes]) -> None:
        """Close a receiver left suspended by a cancelled call (deadline, client gone), so
        that what it read is freed now rather than at the next full garbage collection."""
        aclose = getattr(requests, "aclose", None)
        if aclose is None:
            return
        task: asyncio.Task[Any] = asyncio.ensure_future(aclose())
        self._closing.add(task)
        task.add_done_callback(self._closed)

    def _closed(self, task: asyncio.Task[Any]) -> None:
        self._closing.discard(task)
        if not task.cancelled():
            task.exception()  # a receiver that fails to close has nothing left to free
