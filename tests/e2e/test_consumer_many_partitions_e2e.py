"""A consumer group subscribed to a topic of 2,000 partitions on one real broker: a
record produced to any partition reaches it quickly, while the consumer keeps a bounded
number of fetch calls open (one FetchMany long-poll for the broker, not one Fetch per
partition) inside a connection the broker bounds to 16 HTTP/2 streams.

The latency bound is generous (the machine's speed is not what is tested: with one
Fetch per partition, 2,000 long-polls over 16 streams take tens of seconds to cycle
through, so a record waited about that long); the figures measured go in the commit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

import sentinel.client._fetch_calls as fetch_calls
from broker_process import BrokerProcess
from metrics_polling import scrape, wait_for
from sentinel.client import Admin, Consumer, Producer, TopicPartition

T = TypeVar("T")
PARTITIONS = 2_000
STREAMS = 16
DELIVERY_S = 3.0
"""Every record must be polled within this of its send."""
MAX_CALLS = 4
"""Fetch calls of the consumer open at once: its FetchMany, and for a moment the ones it
replaced when it sent the long-poll again (a cancelled call stays open until its task
takes the cancellation: two replacements in a row on a loaded machine left 3 open in
one CI run). One call per partition would open 2,000, bounded here by the broker's 16
streams."""


class CallCount:
    """How many of the fetcher's calls are open at once, the most seen."""

    def __init__(self, unary: Callable[[Awaitable[T]], Awaitable[T]]) -> None:
        self._unary = unary
        self.open = 0
        self.most = 0
        self.total = 0

    async def __call__(self, call: Awaitable[T]) -> T:
        self.open += 1
        self.total += 1
        self.most = max(self.most, self.open)
        try:
            return await self._unary(call)
        finally:
            self.open -= 1


@pytest.mark.slow
def test_a_record_on_any_of_2000_partitions_reaches_the_group_quickly(
    start_broker: Callable[..., BrokerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = start_broker(grpc_max_concurrent_streams=STREAMS)
    calls = CallCount(fetch_calls.unary)
    monkeypatch.setattr(fetch_calls, "unary", calls)
    with Admin(broker.address, request_timeout_ms=120_000) as admin:
        admin.create_topic("wide", PARTITIONS)
    targets = [TopicPartition("wide", (i * 197) % PARTITIONS) for i in range(12)]
    latencies: list[float] = []
    with (
        Consumer(broker.address, group_id="g", auto_offset_reset="earliest") as consumer,
        Producer(broker.address, acks=1, linger_ms=0) as producer,
    ):
        consumer.subscribe(["wide"])

        def assigned() -> bool:
            assert consumer.poll(0.1) == []
            return len(consumer.assignment()) == PARTITIONS

        wait_for(assigned, "the assignment of every partition", timeout=60)
        for partition in range(PARTITIONS):  # every position known: the steady state
            assert consumer.position(TopicPartition("wide", partition)) == 0
        for tp in targets:
            value = b"%d" % tp.partition
            sent = time.monotonic()
            producer.send(tp.topic, value, partition=tp.partition).result(30)
            got = None
            while got is None and time.monotonic() - sent < DELIVERY_S:
                got = next((r for r in consumer.poll(0.05) if r.value == value), None)
            assert got is not None, f"{tp} not polled within {DELIVERY_S} s of its send"
            assert (got.partition, got.offset) == (tp.partition, 0)
            latencies.append(time.monotonic() - sent)
    print("delivery s:", [round(x, 3) for x in latencies])
    assert calls.total > 0
    assert calls.most <= MAX_CALLS, f"{calls.most} fetch calls open at once"
    figures = scrape(broker)
    fetch_many = sum(v for k, v in figures.items() if 'method="FetchMany"' in k)
    single = sum(v for k, v in figures.items() if 'method="Fetch"' in k)
    assert fetch_many > 0
    assert single == 0  # no per-partition long-poll reached the broker


def test_call_count_counts_open_calls() -> None:
    """The counter of the test above: open calls, the most at once."""

    async def answer(call: Awaitable[int]) -> int:
        return await call

    async def run() -> CallCount:
        count = CallCount(answer)
        gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        waiting = [asyncio.ensure_future(count(gate)) for _ in range(3)]
        await asyncio.sleep(0)
        assert count.open == 3
        gate.set_result(1)
        assert await asyncio.gather(*waiting) == [1, 1, 1]
        return count

    count = asyncio.run(run())
    assert (count.open, count.most, count.total) == (0, 3, 3)
