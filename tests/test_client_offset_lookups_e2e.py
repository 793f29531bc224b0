"""``beginning_offsets``, ``end_offsets`` and ``offsets_for_times`` of ``Consumer`` and
``AsyncConsumer`` against a real ``sentinel-server``, with kafka-python's semantics:
the log start, the high watermark, and the first record at or after a time (None
past the last), for partitions assigned or not.

One broker for the module. Partition 0 holds five records one second apart from
``BASE``; partition 1 four records half a second later than those, the first two
deleted (its log start is 2)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker_process import BrokerProcess
from sentinel.client import (
    Admin,
    AsyncConsumer,
    Consumer,
    OffsetAndTimestamp,
    Producer,
    TopicPartition,
    errors,
)
from sentinel.errors import InvalidArgumentError

TOPIC = "lookups"
P0 = TopicPartition(TOPIC, 0)
P1 = TopicPartition(TOPIC, 1)
BASE = (int(time.time()) - 60) * 1000  # recent: no retention takes the records
P0_TIMES = [BASE + 1000 * i for i in range(5)]  # offsets 0..4
P1_TIMES = [BASE + 500 + 1000 * i for i in range(4)]  # offsets 0..3, 0 and 1 deleted
DEADLINE_S = 15.0

BEGINNING = {P0: 0, P1: 2}
END = {P0: 5, P1: 4}
TIMES = {
    P0: BASE - 1,  # before the first: the first
    P1: BASE,  # before the first left: the log start
}
TIMES_BETWEEN = {P0: BASE + 1500, P1: BASE + 2600}
TIMES_EXACT = {P0: BASE + 3000, P1: BASE + 3500}
TIMES_AFTER = {P0: P0_TIMES[-1] + 1, P1: P1_TIMES[-1] + 1}


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    broker = BrokerProcess(Path(tmp_path_factory.mktemp("lookups"))).start()
    try:
        with Admin(broker.address) as admin:
            admin.create_topic(TOPIC, partitions=2)
            with Producer(broker.address, acks="all") as producer:
                futures = [
                    producer.send(TOPIC, b"p%d-%d" % (p, i), partition=p, timestamp_ms=ts)
                    for p, times in ((0, P0_TIMES), (1, P1_TIMES))
                    for i, ts in enumerate(times)
                ]
                for future in futures:
                    future.result(DEADLINE_S)
            assert admin.delete_records(TOPIC, 1, 2) == 2
        yield broker.address
    finally:
        broker.kill()


def expected_for_times() -> list[tuple[dict[TopicPartition, int], dict[TopicPartition, object]]]:
    return [
        (TIMES, {P0: OffsetAndTimestamp(0, P0_TIMES[0]), P1: OffsetAndTimestamp(2, P1_TIMES[2])}),
        (
            TIMES_BETWEEN,
            {P0: OffsetAndTimestamp(2, P0_TIMES[2]), P1: OffsetAndTimestamp(3, P1_TIMES[3])},
        ),
        (
            TIMES_EXACT,
            {P0: OffsetAndTimestamp(3, P0_TIMES[3]), P1: OffsetAndTimestamp(3, P1_TIMES[3])},
        ),
        (TIMES_AFTER, {P0: None, P1: None}),
    ]


@pytest.mark.parametrize("assigned", [False, True])
def test_consumer_lookups(address: str, assigned: bool) -> None:
    with Consumer(address, auto_offset_reset="earliest") as consumer:
        if assigned:
            consumer.assign([P0])  # P1 stays unassigned: both must answer
        assert consumer.beginning_offsets([P0, (TOPIC, 1)]) == BEGINNING
        assert consumer.end_offsets([(TOPIC, 0), P1]) == END
        for timestamps, expected in expected_for_times():
            assert consumer.offsets_for_times(timestamps) == expected
        assert consumer.beginning_offsets([]) == {}
        assert consumer.offsets_for_times({}) == {}
        if assigned:
            assert consumer.assignment() == {P0}
            assert consumer.position(P0) == 0  # a lookup is no seek
            assert [r.offset for r in consumer.poll(DEADLINE_S, max_records=1)] == [0]


@pytest.mark.parametrize("assigned", [False, True])
async def test_async_consumer_lookups(address: str, assigned: bool) -> None:
    async with AsyncConsumer(address, auto_offset_reset="earliest") as consumer:
        if assigned:
            await consumer.assign([P1])
        assert await consumer.beginning_offsets([(TOPIC, 0), P1]) == BEGINNING
        assert await consumer.end_offsets([P0, P1]) == END
        for timestamps, expected in expected_for_times():
            assert await consumer.offsets_for_times(timestamps) == expected
        if assigned:
            assert await consumer.position(P1) == 2


def test_unknown_topic_or_partition_raises_within_the_request_timeout(address: str) -> None:
    with Consumer(address, request_timeout_ms=500) as consumer:
        for tps in ([("no-such-topic", 0)], [P0, (TOPIC, 7)]):
            started = time.monotonic()
            with pytest.raises(errors.UnknownTopicOrPartitionError):
                consumer.end_offsets(tps)
            assert time.monotonic() - started < 5.0
        with pytest.raises(errors.UnknownTopicOrPartitionError):
            consumer.offsets_for_times({("no-such-topic", 0): BASE})


async def test_async_unknown_topic_raises(address: str) -> None:
    async with AsyncConsumer(address, request_timeout_ms=500) as consumer:
        with pytest.raises(errors.UnknownTopicOrPartitionError):
            await consumer.beginning_offsets([("no-such-topic", 0)])


def test_bad_arguments_and_closed_consumer(address: str) -> None:
    consumer = Consumer(address)
    with pytest.raises(InvalidArgumentError):
        consumer.offsets_for_times({P0: -1})  # -1 / -2 are not times
    with pytest.raises(InvalidArgumentError):
        consumer.end_offsets([(TOPIC, -1)])
    consumer.close()
    with pytest.raises(errors.ClientClosedError):
        consumer.end_offsets([P0])
