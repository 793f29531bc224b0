"""A broker-wide budget of request bytes in flight (Kafka's ``queued.max.request.bytes``).

A front door reserves bytes before it reads a request and holds them until the request
is answered; a request that does not fit waits, first come first served, until earlier
ones are answered or its deadline passes (then ``RequestThrottledError``, Kafka's
THROTTLING_QUOTA_EXCEEDED: retry later). So the broker holds at most ``capacity`` bytes
of requests at a time, however many arrive together.

A door that cannot know a request's size before it reads it (gRPC) holds a little (or,
for a request that may be large, the largest allowed for a moment), reads, then holds the
size read (``server/grpc_admission.py``). A door that reads a large request in steps
(Kafka's) holds room only a step ahead of the bytes it received and ``grow``s the
reservation as they come, so a client that announces a large request and stalls holds
no room it has not sent.

After large requests are answered the allocator is asked to give freed memory back to
the system (glibc's ``malloc_trim``): gRPC's receive buffers are small pieces from
per-thread arenas that otherwise keep the peak resident. At most once every
``TRIM_MIN_INTERVAL_S``: a trim returns every free page, and while requests keep coming
each page given back is faulted in again by the next ones.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import ctypes.util
import gc
import logging
import math
import time
from collections.abc import Callable

from sentinel.errors import InvalidArgumentError, SentinelError

log = logging.getLogger(__name__)

TRIM_AFTER_BYTES = 32 * 1024 * 1024
"""Give memory back once this many bytes of requests were answered since the last trim
and none are left in flight."""
TRIM_MIN_INTERVAL_S = 5.0
"""... and at least this long after the previous trim (a trim then due waits for it).
Trimmed at every moment nothing was in flight, a stream of produce requests (8 in
flight, 512 KiB each) was trimmed every ~40 MB: the event loop then took ~200 minor
page faults per MB produced instead of ~45, and ~20 % more CPU (docs/benchmarks.md,
"Broker alone, 2026-12-02")."""


class RequestThrottledError(SentinelError):
    """The broker holds as many request bytes as it may; the request waited for room
    until its deadline. Kafka's THROTTLING_QUOTA_EXCEEDED (retriable)."""

    kafka_code = 89
    code_name = "THROTTLING_QUOTA_EXCEEDED"


def _glibc_trim() -> Callable[[], None] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def run() -> None:
        # A cancelled call can leave its request in a reference cycle inside gRPC: free
        # it now (this runs only when no request is in flight), then return the pages.
        # The young generations only: such a cycle is recent, and a full collection walks
        # every object the broker holds (each partition's memtable index, its state): on
        # the event loop, 90 ms with 1,000 partitions. The interpreter's own full
        # collections free whatever cycle outlived two younger ones.
        gc.collect(1)
        trim(0)  # returns whether memory was released: either is fine

    return run


class Reservation:
    """Bytes held for one request; ``release`` (or leaving ``async with``) returns them."""

    __slots__ = ("_budget", "size")

    def __init__(self, budget: RequestBudget, size: int) -> None:
        self._budget = budget
        self.size = size

    def shrink(self, size: int) -> None:
        """Keep only ``size`` bytes (the request turned out smaller than reserved)."""
        if 0 <= size < self.size:
            freed = self.size - size
            self.size = size
            self._budget._give_back(freed, answered=0)

    def grow(self, size: int) -> None:
        """Hold ``size`` more bytes already in memory (a request received in steps),
        without waiting: the budget may go below zero, as with ``force``."""
        if size > 0:
            self.size += size
            self._budget.available -= size

    def absorb(self, other: Reservation) -> None:
        """Take over ``other``'s bytes (it holds none after)."""
        size, other.size = other.size, 0
        self.size += size

    def release(self) -> None:
        size, self.size = self.size, 0
        if size:
            self._budget._give_back(size, answered=size)

    async def __aenter__(self) -> Reservation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class RequestBudget:
    """``capacity`` bytes shared by every request; one per broker, on its event loop."""

    def __init__(
        self,
        capacity: int,
        trim: Callable[[], None] | None = None,
        *,
        trim_min_interval_s: float = TRIM_MIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise InvalidArgumentError("the request budget must be at least one byte")
        self.capacity = capacity
        self.available = capacity
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._trim = trim if trim is not None else _glibc_trim()
        self._answered_since_trim = 0
        self._trim_interval = trim_min_interval_s
        self._trim_timer: asyncio.TimerHandle | None = None
        self._clock = clock
        self._last_trim = -math.inf  # ``clock()`` at the last trim
        self.trims = 0

    @property
    def in_flight(self) -> int:
        return self.capacity - self.available

    async def reserve(self, size: int, timeout: float | None) -> Reservation:
        """Hold ``size`` bytes (at most the capacity), waiting up to ``timeout`` seconds
        (None: without end) behind earlier requests."""
        size = max(0, min(size, self.capacity))
        if not self._waiters and size <= self.available:
            self.available -= size
            return Reservation(self, size)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            self._abandon(entry)
            raise RequestThrottledError(
                f"the broker holds {self.in_flight} of {self.capacity} request bytes in flight "
                f"(--max-request-bytes-in-flight); a request of {size} bytes waited "
                f"{timeout:.1f} s for room"
            ) from None
        except asyncio.CancelledError:
            self._abandon(entry)
            raise
        return Reservation(self, size)

    def try_reserve(self, size: int) -> Reservation | None:
        """``reserve`` without waiting: None when the budget has no room now (or
        earlier requests wait for room)."""
        size = max(0, min(size, self.capacity))
        if self._waiters or size > self.available:
            return None
        self.available -= size
        return Reservation(self, size)

    def force(self, size: int) -> Reservation:
        """Account for ``size`` bytes already in memory (a request read before it could be
        reserved): held like any reservation, and the budget may go below zero."""
        size = max(0, size)
        self.available -= size
        return Reservation(self, size)

    def _abandon(self, entry: tuple[int, asyncio.Future[None]]) -> None:
        size, future = entry
        if future.done() and not future.cancelled():
            self._give_back(size, answered=0)  # granted as the waiter gave up: hand it on
            return
        future.cancel()
        self._waiters.remove(entry)
        self._wake()  # a large request at the head may have held smaller ones back

    def _give_back(self, size: int, *, answered: int) -> None:
        self.available += size
        self._answered_since_trim += answered
        self._wake()
        if self._trim_due():
            self._trim_or_wait()

    @property
    def trim_pending(self) -> bool:
        """A due trim waits for the minimum interval (for tests and metrics)."""
        return self._trim_timer is not None

    def _trim_due(self) -> bool:
        return (
            self.available == self.capacity
            and self._answered_since_trim >= TRIM_AFTER_BYTES
            and self._trim is not None
        )

    def _trim_or_wait(self) -> None:
        """Trim now if the last trim is old enough, else once it is (if then still due:
        nothing in flight; if something is, its answer calls here again)."""
        wait = self._last_trim + self._trim_interval - self._clock()
        if wait <= 0:
            self._run_trim()
            return
        if self._trim_timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (closing): the next answer tries again
            return
        self._trim_timer = loop.call_later(wait, self._trim_timer_fired)

    def _trim_timer_fired(self) -> None:
        self._trim_timer = None
        if self._trim_due():
            self._trim_or_wait()

    def _run_trim(self) -> None:
        if self._trim_timer is not None:
            self._trim_timer.cancel()
            self._trim_timer = None
        self._answered_since_trim = 0
        self._last_trim = self._clock()
        self.trims += 1
        if self._trim is not None:  # (``_trim_due`` checked it)
            self._trim()

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self.available:
            size, future = self._waiters.popleft()
            self.available -= size
            future.set_result(None)
