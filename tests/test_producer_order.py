"""The broker's in-order handling of one idempotent producer's requests to one
partition: a request ahead of its turn waits (bounded) for its predecessor."""

from __future__ import annotations

import asyncio

import pytest

from sentinel.broker.producer_order import ahead_of_turn, wait_for_turn
from sentinel.broker.signal import Signal
from sentinel.log.producer_state import INT32_MAX, ProducerBatch, ProducerEntry
from sentinel.record import build_batch, parse_header

TS = 1_700_000_000_000


def batch(seq: int, epoch: int = 0, count: int = 1, producer_id: int = 9) -> bytes:
    return build_batch(
        [(None, b"v%d" % i, (), TS) for i in range(count)],
        producer_id=producer_id,
        producer_epoch=epoch,
        base_sequence=seq,
    )


def entry(last_seq: int, epoch: int = 0) -> ProducerEntry:
    return ProducerEntry(9, epoch, (ProducerBatch(0, last_seq, 0, last_seq, -1),), TS)


@pytest.mark.parametrize(
    ("state", "data", "ahead"),
    [
        (None, batch(0), False),  # a new producer's first batch
        (None, batch(5), True),  # a new producer: sequence 0 may still be on its way
        (entry(4), batch(5), False),  # in turn
        (entry(4), batch(9), True),  # a gap: the batches 5..8 may still come
        (entry(4), batch(2), False),  # behind: a duplicate, or out of order at once
        (entry(4), batch(0, epoch=1), False),  # a new epoch starts at 0
        (entry(4), batch(3, epoch=1), True),
        (entry(4, epoch=2), batch(5, epoch=1), False),  # a zombie: refused at once
        (entry(INT32_MAX), batch(0), False),  # sequences wrap
        (entry(INT32_MAX - 1), batch(1), True),
        (entry(4), batch(-1, producer_id=-1), False),  # not idempotent
    ],
)
def test_ahead_of_turn(state: ProducerEntry | None, data: bytes, ahead: bool) -> None:
    assert ahead_of_turn(state, parse_header(data)) is ahead


async def test_an_early_request_waits_for_its_predecessor() -> None:
    states: dict[int, ProducerEntry] = {9: entry(4)}
    signal = Signal()
    waiter = asyncio.create_task(wait_for_turn(batch(6), states.get, signal, 10.0))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    signal.fire()  # an append of someone else: still not its turn
    await asyncio.sleep(0.01)
    assert not waiter.done()
    states[9] = entry(5)  # its predecessor was appended
    signal.fire()
    await asyncio.wait_for(waiter, 5.0)


async def test_the_wait_is_bounded_and_garbage_never_waits() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await wait_for_turn(batch(9), {9: entry(4)}.get, Signal(), 0.05)
    assert loop.time() - started >= 0.05
    await asyncio.wait_for(wait_for_turn(b"not a batch", {}.get, Signal(), 10.0), 1.0)
    await asyncio.wait_for(wait_for_turn(batch(5), {9: entry(4)}.get, Signal(), 10.0), 1.0)
