"""In-order handling of one idempotent producer's requests to one partition.

Kafka's idempotence relies on a connection handling its requests in order: a producer
pipelines up to five batches per partition, and the broker sees their sequences in
the order they were sent. Over gRPC every ``Produce`` is its own call (an HTTP/2
stream), and the server may start concurrent calls of one connection in any order;
a batch that overtakes its predecessor would be refused as OUT_OF_ORDER_SEQUENCE
although nothing was lost.

The choice here is ordering on the broker, per (producer id, partition), rather than a
produce stream per producer: it needs no protocol change, keeps every produce a plain
unary call (each with its own deadline, status and retry), and holds only requests
that are in fact early. Before its append, a request whose first batch is *ahead* of
the sequence the partition's producer state expects next waits for the appends before
it, woken by the partition's append signal, for at most ``MAX_ORDER_WAIT_S``. Then it
goes on whatever happened, and the log decides as before: in turn, a duplicate of a
stored batch (answered with its original offset), or out of order (its predecessor was
lost or refused: the producer's rules take over). Batches at or behind the expected
sequence, and those of producers that are not idempotent, never wait.

"Ahead" means: for a known producer in its current epoch, a first sequence past the
next expected one (within half the 31-bit sequence space, so that wrapping works);
for a new epoch, or a producer the log does not know, a first sequence other than 0.
A producer whose state the broker forgot (expired) and that resumes at a later
sequence is therefore held once, for the bounded wait, before the log accepts it.

The check and the append that follows run on the event loop with no ``await`` between
them, so no other request of the partition can slip in between.

A gap the producer will fill (``RefusedBatches``, used by a replicated partition): when
a partition answered one of a producer's batches NOT_LEADER_OR_FOLLOWER (a leader that
refused a proposal during its hand-off, a follower, an entry replaced), the producer
re-sends that batch, and its pipelined batches after it reach the partition first. The
log would answer them OUT_OF_ORDER_SEQUENCE, which to a Kafka client means "batches
were lost": librdkafka then bumps its epoch and re-sends everything in flight under the
new numbering, which stores twice any of them that was in fact stored (on another
partition, say). Nothing was lost: the gap is the refused batch, still on its way. So,
for a bounded time after such a refusal, a batch of the same producer and epoch that
comes after the refused sequence, while the log does not hold that sequence, is
answered NOT_LEADER_OR_FOLLOWER as well: what a Kafka broker that is not the leader
answers for every batch, retriable, after which the client refreshes its metadata and
re-sends in order under the same epoch. The rule is narrow on purpose: it keys on the
refused (producer, epoch, first sequence) only, it ends as soon as the log holds that
sequence or the producer moves to a new epoch, and it expires after
``REFUSAL_MEMORY_S``, so a real gap (a batch lost, never re-sent) is answered
OUT_OF_ORDER_SEQUENCE again after a few seconds. At most ``MAX_REFUSALS`` producers
are remembered per partition (the oldest refusal is forgotten first).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from sentinel.broker.signal import Signal
from sentinel.errors import SentinelError
from sentinel.log.producer_state import INT32_MAX, ProducerEntry, next_sequence
from sentinel.record import BatchHeader, parse_header

__all__ = [
    "MAX_ORDER_WAIT_S",
    "MAX_REFUSALS",
    "REFUSAL_MEMORY_S",
    "RefusedBatches",
    "ahead_of_turn",
    "is_ahead",
    "wait_for_turn",
]

MAX_ORDER_WAIT_S = 0.25
"""How long a request waits for the requests before it; a predecessor still on its way
arrives within milliseconds, one that was lost never does."""

REFUSAL_MEMORY_S = 5.0
"""How long a refused batch's gap is answered NOT_LEADER_OR_FOLLOWER: a client re-sends
a batch refused so within its metadata refresh and retry backoff (well under a second);
past this, a gap is a lost batch and the log says OUT_OF_ORDER_SEQUENCE."""

MAX_REFUSALS = 1024
"""Producers whose refusal one partition remembers at once (oldest forgotten first)."""

_HALF_RANGE = (INT32_MAX + 1) // 2


def ahead_of_turn(entry: ProducerEntry | None, header: BatchHeader) -> bool:
    """Whether ``header``'s batch is ahead of the sequence its producer's state expects
    next (so an earlier batch of the same producer and epoch has not been appended)."""
    if header.producer_id < 0 or header.base_sequence < 0:
        return False
    if entry is None or header.producer_epoch > entry.epoch:
        expected = 0
    elif header.producer_epoch < entry.epoch:
        return False  # a zombie: the log refuses it at once
    else:
        expected = next_sequence(entry.last_seq)
    distance = (header.base_sequence - expected) % (INT32_MAX + 1)
    return 0 < distance < _HALF_RANGE


def is_ahead(
    first_batch: memoryview | bytes, producer_state: Callable[[int], ProducerEntry | None]
) -> bool:
    """Whether the request whose first batch is ``first_batch`` is ahead of its turn now
    (an idempotent producer's batch whose predecessor is not appended yet)."""
    try:
        header = parse_header(first_batch)
    except SentinelError:
        return False  # not a batch: the log's validation refuses it with its reason
    return _header_ahead(header, producer_state)


def _header_ahead(
    header: BatchHeader, producer_state: Callable[[int], ProducerEntry | None]
) -> bool:
    if header.producer_id < 0:
        return False
    try:
        return ahead_of_turn(producer_state(header.producer_id), header)
    except SentinelError:
        return False  # the log is closing or gone: the append reports it


async def wait_for_turn(
    first_batch: memoryview | bytes,
    producer_state: Callable[[int], ProducerEntry | None],
    signal: Signal,
    max_wait_s: float = MAX_ORDER_WAIT_S,
) -> None:
    """Return when the request whose first batch is ``first_batch`` may be appended:
    at once unless it is ahead of its turn, else once it no longer is (``signal`` fires
    after every append to the partition) or after ``max_wait_s``."""
    try:
        header = parse_header(first_batch)
    except SentinelError:
        return  # not a batch: the log's validation refuses it with its reason
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait_s
    while True:
        version = signal.version
        if not _header_ahead(header, producer_state):
            return
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        await signal.wait(version, remaining)


def _after(sequence: int, reference: int) -> bool:
    """Whether ``sequence`` comes after ``reference`` (within half the 31-bit space)."""
    return 0 < (sequence - reference) % (INT32_MAX + 1) < _HALF_RANGE


@dataclass(frozen=True, slots=True)
class Refusal:
    """A producer's batch answered NOT_LEADER_OR_FOLLOWER: its epoch, its first
    sequence, and when (the caller's clock, seconds)."""

    epoch: int
    sequence: int
    at: float


class RefusedBatches:
    """Per producer id, the earliest of its batches a partition refused as
    NOT_LEADER_OR_FOLLOWER and that the log does not hold yet (module docstring).
    Values in, answers out: the caller passes the log's producer state and the time."""

    __slots__ = ("_capacity", "_memory_s", "_refusals")

    def __init__(
        self, memory_s: float = REFUSAL_MEMORY_S, capacity: int = MAX_REFUSALS
    ) -> None:
        self._memory_s = memory_s
        self._capacity = capacity
        self._refusals: dict[int, Refusal] = {}

    def __len__(self) -> int:
        return len(self._refusals)

    def refused(self, header: BatchHeader, now: float) -> None:
        """The batch of ``header`` was answered NOT_LEADER_OR_FOLLOWER at ``now``."""
        pid, epoch, seq = header.producer_id, header.producer_epoch, header.base_sequence
        if pid < 0 or seq < 0:
            return
        known = self._refusals.get(pid)
        if (
            known is not None
            and known.epoch == epoch
            and now - known.at <= self._memory_s
            and _after(seq, known.sequence)
        ):
            return  # a batch behind the gap: the gap still starts at the earlier one
        self._refusals.pop(pid, None)  # re-inserted last: the newest is evicted last
        if len(self._refusals) >= self._capacity:
            del self._refusals[next(iter(self._refusals))]
        self._refusals[pid] = Refusal(epoch, seq, now)

    def behind_refusal(
        self, entry: ProducerEntry | None, header: BatchHeader, now: float
    ) -> bool:
        """Whether the batch of ``header`` comes after a refused batch of its producer
        and epoch that the log (whose state of the producer is ``entry``) does not hold
        yet: it is to be answered NOT_LEADER_OR_FOLLOWER, as its predecessor was.
        Forgets a refusal that expired or that the log or a new epoch went past."""
        pid = header.producer_id
        known = self._refusals.get(pid)
        if known is None or header.base_sequence < 0:
            return False
        if (
            now - known.at > self._memory_s
            or header.producer_epoch > known.epoch
            or _holds(entry, known)
        ):
            del self._refusals[pid]
            return False
        return header.producer_epoch == known.epoch and _after(
            header.base_sequence, known.sequence
        )


def _holds(entry: ProducerEntry | None, refusal: Refusal) -> bool:
    """Whether the log's state of the producer is past the refused batch: it holds the
    refused sequence (it was re-sent and stored), or the producer moved to a newer
    epoch."""
    if entry is None or entry.epoch < refusal.epoch:
        return False
    if entry.epoch > refusal.epoch:
        return True
    return entry.last_seq == refusal.sequence or _after(entry.last_seq, refusal.sequence)
