"""A partition's appends in the order their requests arrived (Kafka's order).

Kafka serves one connection's requests one at a time, so a producer that pipelines
requests (librdkafka keeps many in flight, each with every partition that has a batch
ready) finds its batches in each partition's log in the order it sent them; without
idempotence nothing else keeps that order. This broker serves a connection's requests
concurrently, and a request's way to a partition's append may wait: a request for
several partitions appends each in a task of its own, which starts after a later
request's handler has already appended; an append may first reopen its partition's
files in a worker, and a later request that finds them open appends first.

So a request takes its place in each of its partitions' queues when it arrives, on the
event loop before any ``await`` (``Arrivals.enter``), and appends once every place
before it has appended or given up (``Place.turn``); it leaves its place right after
its append (``Place.leave``), before waiting for durability, so that the appends of
many requests still share the fsync waves. A request that is refused, cancelled or
fails leaves its place too (``leave`` is idempotent: callers leave in ``finally``).

An idempotent producer's request that is ahead of its sequence (``producer_order``)
must not hold a place while it waits for its predecessor, which may be behind it in
the queue: it leaves, waits, then takes a new place at the end (``Place.rejoin``).

The uncontended path takes no future: a request alone in the queue appends at once.
"""

from __future__ import annotations

import asyncio
import collections

__all__ = ["Arrivals", "Place"]


class Place:
    """One request's place in a partition's queue of appends."""

    __slots__ = ("_arrivals", "_queued", "_woken")

    def __init__(self, arrivals: Arrivals) -> None:
        self._arrivals = arrivals
        self._woken: asyncio.Future[None] | None = None
        self._queued = True

    @property
    def arrivals(self) -> Arrivals:
        """The queue this place is (or was) in."""
        return self._arrivals

    async def turn(self) -> None:
        """Return once every place before this one has left."""
        if not self._queued:
            raise RuntimeError("a place that left has no turn")
        if self._arrivals.first() is self:
            return
        woken = self._woken = asyncio.get_running_loop().create_future()
        await woken

    def leave(self) -> None:
        """Give the place up (after the append, or without one); the next place's turn
        comes if this one was first. Idempotent."""
        if self._queued:
            self._queued = False
            self._arrivals.remove(self)

    def rejoin(self) -> None:
        """Take a new place at the end of the queue (after ``leave``)."""
        if self._queued:
            raise RuntimeError("a place that has not left cannot rejoin")
        self._queued = True
        self._woken = None
        self._arrivals.append(self)

    def _wake(self) -> None:
        woken = self._woken
        if woken is not None and not woken.done():
            woken.set_result(None)


class Arrivals:
    """The queue of one partition's appends, in arrival order."""

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: collections.deque[Place] = collections.deque()

    def enter(self) -> Place:
        """A new place at the end of the queue (call before any ``await``)."""
        place = Place(self)
        self._queue.append(place)
        return place

    def __len__(self) -> int:
        return len(self._queue)

    def first(self) -> Place | None:
        return self._queue[0] if self._queue else None

    def append(self, place: Place) -> None:
        self._queue.append(place)

    def remove(self, place: Place) -> None:
        queue = self._queue
        if queue and queue[0] is place:
            queue.popleft()
            if queue:
                queue[0]._wake()
        else:
            queue.remove(place)
