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
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sentinel.broker.signal import Signal
from sentinel.errors import SentinelError
from sentinel.log.producer_state import INT32_MAX, ProducerEntry, next_sequence
from sentinel.record import BatchHeader, parse_header

__all__ = ["MAX_ORDER_WAIT_S", "ahead_of_turn", "wait_for_turn"]

MAX_ORDER_WAIT_S = 0.25
"""How long a request waits for the requests before it; a predecessor still on its way
arrives within milliseconds, one that was lost never does."""

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
    if header.producer_id < 0:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait_s
    while True:
        version = signal.version
        try:
            if not ahead_of_turn(producer_state(header.producer_id), header):
                return
        except SentinelError:
            return  # the log is closing or gone: the append reports it
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        await signal.wait(version, remaining)
