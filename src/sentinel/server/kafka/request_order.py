"""Request order: which requests of one Kafka connection may run at the same time.

Kafka's broker serves a connection's requests one at a time (it mutes the channel until
the answer is sent), so a client may pipeline CreateTopics then DeleteTopics of one
topic, AlterConfigs then DescribeConfigs, or DeleteRecords then ListOffsets, and rely on
them taking effect in the order sent. Sentinel's door runs a connection's requests
concurrently instead (a long-polling Fetch does not hold up the Metadata behind it, and
many Produce requests overlap: the hot path, kept in order per partition by
``broker/producer_order.py``; a group's offset commits are ordered by the group's
writer). What must not overlap are the requests that change the broker's state, the
barriers (``BARRIER_KEYS``):

===========================  ==========================================================
the request                  starts
===========================  ==========================================================
a barrier                    once every earlier request of the connection finished
                             (answered or failed): alone, as Kafka would run it
any other                    once every earlier barrier finished; alongside the other
                             requests that are not barriers, as before
===========================  ==========================================================

Left out, on purpose: Produce (ordered per partition already; serialising it would cost
the pipelining it lives on), OffsetCommit (ordered per group), the group membership
requests JoinGroup, SyncGroup, Heartbeat and LeaveGroup (a JoinGroup is held for a whole
rebalance: a barrier behind it would wait as long, and everything behind the barrier
with it), and Metadata, though it may create the topics it names (clients send it on
their produce connections at every refresh; it only creates what does not exist, and a
CreateTopics or DeleteTopics before or after it is a barrier anyway).

This ordering comes before the others of the door (``turns.py``: handlers held back while
answers do not drain; the lock that serves Fetch requests one at a time): a request only
queues there once it may start here, so a barrier never holds a turn while it waits for
the requests before it. A barrier behind a long-polling Fetch waits for that poll to end,
as it would on Kafka's broker.

Pure: tickets are handed out in arrival order by ``arrived`` (the driver calls it as it
decodes a request, never from the request's task, whose first step may come later), and
a waiting request is woken through its ``Waiter`` (``turns.Waiter``: an
``asyncio.Future[None]`` in the driver). ``finished`` must follow every ``arrived``
(the driver's ``finally``); a request whose waiter was cancelled (its connection closed)
only has to be finished too. No event loop, no socket.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentinel.server.kafka.turns import Waiter

__all__ = ["BARRIER_KEYS", "RequestOrder"]

BARRIER_KEYS = frozenset({
    19,  # CreateTopics
    20,  # DeleteTopics
    21,  # DeleteRecords
    22,  # InitProducerId (a new epoch fences the producer's earlier requests)
    33,  # AlterConfigs
    37,  # CreatePartitions
    42,  # DeleteGroups
    44,  # IncrementalAlterConfigs
    45,  # AlterPartitionReassignments
    47,  # OffsetDelete
})
"""API keys whose requests run alone on their connection: each changes the broker's
state (topics, records, configs, groups, producer epochs, replica placement)."""


@dataclass(slots=True)
class _Request:
    """An unfinished request: whether it is a barrier, may start, and who waits."""

    barrier: bool
    free: bool
    waiter: Waiter | None = None


class RequestOrder:
    """When each request of one connection may start (the module's table)."""

    __slots__ = ("_barriers", "_next", "_unfinished")

    def __init__(self) -> None:
        #: Requests arrived and not finished, by ticket, in arrival order.
        self._unfinished: dict[int, _Request] = {}
        #: How many of them are barriers.
        self._barriers = 0
        self._next = 0

    @property
    def unfinished(self) -> int:
        """Requests arrived and not finished yet (waiting or running)."""
        return len(self._unfinished)

    def arrived(self, api_key: int) -> int:
        """A request of ``api_key`` was decoded: its ticket (in arrival order), to pass to
        ``must_wait``, ``wait`` and ``finished``."""
        barrier = api_key in BARRIER_KEYS
        free = not self._unfinished if barrier else self._barriers == 0
        ticket = self._next
        self._next += 1
        self._unfinished[ticket] = _Request(barrier, free)
        self._barriers += barrier
        return ticket

    def must_wait(self, ticket: int) -> bool:
        """Whether the request of ``ticket`` must ``wait`` before it starts."""
        request = self._unfinished.get(ticket)
        return request is not None and not request.free

    def wait(self, ticket: int, waiter: Waiter) -> None:
        """``waiter`` is set once the request of ``ticket`` may start (at once if it may
        already)."""
        request = self._unfinished.get(ticket)
        if request is None:
            raise ValueError(f"request ticket {ticket} is not waiting: finished or unknown")
        if request.free:
            if not waiter.done():
                waiter.set_result(None)
            return
        request.waiter = waiter

    def finished(self, ticket: int) -> None:
        """The request of ``ticket`` is done: answered, failed, or cancelled while it
        waited. Those it held back may start now. Finishing a ticket twice is harmless."""
        request = self._unfinished.pop(ticket, None)
        if request is None:
            return
        if request.barrier:
            self._barriers -= 1
            self._let_through()
        elif self._barriers:
            self._let_first_barrier()

    def close(self) -> None:
        """The connection is gone: nobody is let through any more (the requests' tasks
        are cancelled; a task cancelled before its first step never finishes)."""
        self._unfinished.clear()
        self._barriers = 0

    def _let_through(self) -> None:
        """Free, in order, every request up to the first barrier, and that barrier too
        if nothing is before it."""
        first = True
        for request in self._unfinished.values():
            if request.barrier and not first:
                return
            self._free(request)
            if request.barrier:
                return
            first = False

    def _let_first_barrier(self) -> None:
        """A request that is not a barrier finished: the only one it can free is a
        barrier that is now the oldest unfinished request (those before the first
        barrier are all free already)."""
        oldest = next(iter(self._unfinished.values()), None)
        if oldest is not None and oldest.barrier:
            self._free(oldest)

    def _free(self, request: _Request) -> None:
        if request.free:
            return
        request.free = True
        waiter = request.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
