"""The client against a real ``sentinel-server`` process: produce, consume, groups,
commits across a restart, seeks, errors, admin. Every wait polls with a deadline."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from broker_process import BrokerProcess
from metrics_polling import wait_for
from sentinel.broker.partitioner import default_partition
from sentinel.client import (
    Admin,
    AsyncAdmin,
    AsyncConsumer,
    AsyncProducer,
    Consumer,
    ConsumerRecord,
    Producer,
    TopicPartition,
    errors,
)
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc
from sentinel.record import BatchBuilder

DEADLINE_S = 15.0


def poll_n(consumer: Consumer, n: int, timeout: float = DEADLINE_S) -> list[ConsumerRecord]:
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    while len(records) < n:
        if time.monotonic() > deadline:
            pytest.fail(f"got {len(records)} of {n} records")
        records += consumer.poll(0.2)
    return records


def test_produce_ten_consume_ten_same_content_and_order(broker: BrokerProcess) -> None:
    with Admin(broker.address) as admin:
        admin.create_topic("orders", partitions=1)
    sent = [(b"k%d" % i, b"value-%d" % i, [("n", b"%d" % i)]) for i in range(10)]
    with Producer(broker.address) as producer:
        futures = [producer.send("orders", v, key=k, headers=h) for k, v, h in sent]
        metas = [f.result(timeout=DEADLINE_S) for f in futures]
    assert [m.offset for m in metas] == list(range(10))
    assert {(m.topic, m.partition) for m in metas} == {("orders", 0)}
    with Consumer(broker.address, topics=["orders"], auto_offset_reset="earliest") as consumer:
        got = poll_n(consumer, 10)
    assert [(r.key, r.value, list(r.headers)) for r in got] == sent
    assert [r.offset for r in got] == list(range(10))
    assert [r.timestamp for r in got] == [m.timestamp for m in metas]


def test_keyed_records_land_on_the_murmur2_partition(broker: BrokerProcess) -> None:
    with Admin(broker.address) as admin:
        admin.create_topic("keyed", partitions=4)
    keys = [b"user-%d" % i for i in range(40)]
    with Producer(broker.address) as producer:
        metas = [producer.send("keyed", b"v", key=k).result(DEADLINE_S) for k in keys]
    for key, meta in zip(keys, metas, strict=True):
        assert meta.partition == default_partition(key, 4)
    with Consumer(broker.address, topics=["keyed"], auto_offset_reset="earliest") as consumer:
        got = poll_n(consumer, 40)
    for record in got:
        assert record.key is not None
        assert record.partition == default_partition(record.key, 4)


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_acks(broker: BrokerProcess, acks: int | str) -> None:
    topic = f"acks-{acks}"
    with Producer(broker.address, acks=acks) as producer:  # type: ignore[arg-type]
        futures = [producer.send(topic, b"%d" % i) for i in range(20)]
        producer.flush(DEADLINE_S)
        metas = [f.result(0) for f in futures]
    if acks == 0:
        assert {m.offset for m in metas} == {-1}
        with Admin(broker.address) as admin:  # flush() means the broker has them
            assert admin.describe_topic(topic).partitions[0].log_end_offset == 20
    else:
        assert [m.offset for m in metas] == list(range(20))
    with Consumer(broker.address, topics=[topic], auto_offset_reset="earliest") as consumer:
        got = poll_n(consumer, 20)[:20]
    assert [r.value for r in got] == [b"%d" % i for i in range(20)]


def test_acks_zero_records_become_visible(broker: BrokerProcess) -> None:
    with Producer(broker.address, acks=0) as producer:
        for i in range(5):
            producer.send("acks0-visible", b"%d" % i)
        producer.flush(DEADLINE_S)
    with Consumer(broker.address, topics=["acks0-visible"], auto_offset_reset="earliest") as c:
        assert len(poll_n(c, 5, timeout=3.0)) == 5


def test_a_retried_idempotent_batch_is_stored_once(broker: BrokerProcess) -> None:
    builder = BatchBuilder(producer_id=123456789, producer_epoch=0, base_sequence=0)
    for i in range(3):
        builder.append(None, b"once-%d" % i, (), 1_700_000_000_000)
    batch = builder.build()
    request = pb.ProduceRequest(topic="dedup", partition=0, record_batches=batch)
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)
        stub.FetchMetadata(pb.MetadataRequest(topics=["dedup"], allow_auto_topic_creation=True))
        first = stub.Produce(request, timeout=DEADLINE_S)
        again = stub.Produce(request, timeout=DEADLINE_S)  # as a retry would
    assert not first.duplicate
    assert again.duplicate
    assert again.base_offset == first.base_offset
    with Admin(broker.address) as admin:
        assert admin.list_offsets("dedup", 0, "latest").offset == 3
    with Consumer(broker.address, topics=["dedup"], auto_offset_reset="earliest") as consumer:
        assert [r.value for r in poll_n(consumer, 3)] == [b"once-0", b"once-1", b"once-2"]
        assert consumer.poll(0.3) == []


def test_the_idempotent_producer_numbers_its_batches(broker: BrokerProcess) -> None:
    with Producer(broker.address, batch_size=200, linger_ms=0) as producer:
        futures = [producer.send("seq", b"x" * 50) for _ in range(30)]
        producer.flush(DEADLINE_S)
        assert [f.result().offset for f in futures] == list(range(30))
        producer_id = producer.producer_id
    assert producer_id > 0
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)
        resp = stub.Fetch(pb.FetchRequest(topic="seq", partition=0, offset=0, max_bytes=1 << 20))
    from sentinel.record import iter_batches, parse_header

    headers = [parse_header(v) for v in iter_batches(resp.record_batches)]
    assert len(headers) > 1
    assert {h.producer_id for h in headers} == {producer_id}
    assert [h.base_sequence for h in headers] == [h.base_offset for h in headers]


def test_three_consumers_share_six_partitions_and_take_over_a_leaver(
    broker: BrokerProcess,
) -> None:
    with Admin(broker.address) as admin:
        admin.create_topic("shared", partitions=6)
    options = {
        "group_id": "trio",
        "session_timeout_ms": 3000,
        "heartbeat_interval_ms": 100,
        "auto_offset_reset": "earliest",
    }
    consumers = [Consumer(broker.address, **options) for _ in range(3)]  # type: ignore[arg-type]
    try:
        for consumer in consumers:
            consumer.subscribe(["shared"])

        def balanced() -> bool:
            sets = [c.assignment() for c in consumers]
            union = set().union(*sets)
            return len(union) == 6 and all(len(s) == 2 for s in sets)

        wait_for(balanced, "two partitions each")
        leaver = consumers.pop(0)
        leaving = leaver.assignment()
        started = time.monotonic()
        leaver.close()

        def taken_over() -> bool:
            sets = [c.assignment() for c in consumers]
            return set().union(*sets) == {TopicPartition("shared", p) for p in range(6)} and all(
                len(s) == 3 for s in sets
            )

        wait_for(taken_over, "the leaver's partitions moving", timeout=3.0)
        assert time.monotonic() - started < 3.0  # within the session timeout
        assert leaving <= set().union(*(c.assignment() for c in consumers))
    finally:
        for consumer in consumers:
            consumer.close()


def test_rebalance_callbacks_and_group_consumption(broker: BrokerProcess) -> None:
    with Producer(broker.address) as producer:
        for i in range(12):
            producer.send("cb", b"%d" % i, partition=0)
    assigned: list[list[TopicPartition]] = []
    revoked: list[list[TopicPartition]] = []
    consumer = Consumer(
        broker.address,
        group_id="cbgroup",
        auto_offset_reset="earliest",
        heartbeat_interval_ms=100,
        session_timeout_ms=3000,
    )
    try:
        consumer.subscribe(["cb"], on_assign=assigned.append, on_revoke=revoked.append)
        assert [r.value for r in poll_n(consumer, 12)] == [b"%d" % i for i in range(12)]
        wait_for(lambda: assigned, "on_assign")
        assert assigned[0] == [TopicPartition("cb", 0)]
    finally:
        consumer.close()
    assert revoked == [[TopicPartition("cb", 0)]]
    with Admin(broker.address) as admin:
        lag = admin.describe_group("cbgroup").lag
    assert [(x.topic, x.partition, x.committed_offset, x.lag) for x in lag] == [("cb", 0, 12, 0)]


def test_committed_offsets_survive_a_broker_restart(broker: BrokerProcess) -> None:
    with Producer(broker.address) as producer:
        for i in range(10):
            producer.send("durable", b"%d" % i)
    with Consumer(
        broker.address, group_id="keeper", auto_offset_reset="earliest", enable_auto_commit=False
    ) as consumer:
        consumer.assign([("durable", 0)])
        got = poll_n(consumer, 10)
        consumer.commit({TopicPartition("durable", 0): got[6].offset + 1})
        assert consumer.committed(("durable", 0)) == 7
    broker.restart()
    with Consumer(broker.address, group_id="keeper", auto_offset_reset="earliest") as consumer:
        assert consumer.committed(("durable", 0)) == 7
        consumer.assign([("durable", 0)])
        assert consumer.position(("durable", 0)) == 7
        assert [r.value for r in poll_n(consumer, 3)] == [b"7", b"8", b"9"]


def test_seek_seek_to_beginning_and_end(broker: BrokerProcess) -> None:
    tp = TopicPartition("seeking", 0)
    with Producer(broker.address) as producer:
        for i in range(20):
            producer.send(tp.topic, b"%d" % i)
        producer.flush(DEADLINE_S)
        with Consumer(broker.address, auto_offset_reset="earliest") as consumer:
            consumer.assign([tp])
            assert consumer.position(tp) == 0
            consumer.seek(tp, 15)
            assert [r.offset for r in poll_n(consumer, 5)] == [15, 16, 17, 18, 19]
            consumer.seek_to_beginning([tp])
            assert consumer.position(tp) == 0
            assert poll_n(consumer, 1)[0].offset == 0
            consumer.seek_to_end()
            assert consumer.position(tp) == 20
            assert consumer.poll(0.2) == []
            producer.send(tp.topic, b"new").result(DEADLINE_S)
            assert [(r.offset, r.value) for r in poll_n(consumer, 1)] == [(20, b"new")]


def test_a_consumer_started_first_sees_a_later_record(broker: BrokerProcess) -> None:
    with Admin(broker.address) as admin:
        admin.create_topic("later", partitions=1)
    with Consumer(broker.address, topics=["later"]) as consumer:  # latest
        assert consumer.position(("later", 0)) == 0
        assert consumer.poll(0.1) == []
        with Producer(broker.address) as producer:
            producer.send("later", b"hello").result(DEADLINE_S)
        (record,) = poll_n(consumer, 1)
        assert record.value == b"hello"


def test_error_mapping(broker: BrokerProcess) -> None:
    with Admin(broker.address) as admin:
        admin.create_topic("errs", partitions=2)
        with pytest.raises(errors.UnknownTopicOrPartitionError):
            admin.describe_topic("missing")
        with pytest.raises(errors.TopicAlreadyExistsError):
            admin.create_topic("errs")
        with pytest.raises(errors.InvalidTopicError):
            admin.create_topic("bad/name")
    with Producer(broker.address, auto_create_topics=False) as producer:
        with pytest.raises(errors.UnknownTopicOrPartitionError):
            producer.send("missing", b"x")
        with pytest.raises(errors.UnknownTopicOrPartitionError):
            producer.send("errs", b"x", partition=7)
        too_big = producer.send("errs", b"x" * (2 * 1024 * 1024), partition=0)
        with pytest.raises(errors.MessageTooLargeError):
            too_big.result(DEADLINE_S)
        # The partition goes on after the refused batch (a new epoch for its sequences).
        assert producer.send("errs", b"fine", partition=0).result(DEADLINE_S).offset == 0
    with Consumer(broker.address, auto_offset_reset="none") as consumer:
        consumer.assign([("errs", 0)])
        consumer.seek(("errs", 0), 1000)
        with pytest.raises(errors.OffsetOutOfRangeError) as info:
            wait_for(lambda: consumer.poll(0.2) or None, "an out-of-range error")
        assert (info.value.log_start, info.value.log_end) == (0, 1)
        consumer.seek(("errs", 0), 0)
        assert poll_n(consumer, 1)[0].value == b"fine"


def test_out_of_range_resets_with_the_policy(broker: BrokerProcess) -> None:
    with Producer(broker.address) as producer:
        for i in range(5):
            producer.send("reset", b"%d" % i)
    with Consumer(broker.address, auto_offset_reset="earliest") as consumer:
        consumer.assign([("reset", 0)])
        consumer.seek(("reset", 0), 99)
        assert [r.offset for r in poll_n(consumer, 5)] == [0, 1, 2, 3, 4]


def test_admin(broker: BrokerProcess) -> None:
    with Admin(broker.address) as admin:
        created = admin.create_topic("adm", partitions=3, configs={"retention.ms": "60000"})
        assert [p.partition for p in created.partitions] == [0, 1, 2]
        assert created.configs["retention.ms"] == "60000"
        assert "adm" in admin.list_topics()
        with Producer(broker.address) as producer:
            producer.send("adm", b"a", partition=1, timestamp_ms=1000).result(DEADLINE_S)
            producer.send("adm", b"b", partition=1, timestamp_ms=2000).result(DEADLINE_S)
        assert admin.list_offsets("adm", 1, "earliest").offset == 0
        assert admin.list_offsets("adm", 1, "latest").offset == 2
        assert admin.list_offsets("adm", 1, 1500).offset == 1
        assert admin.describe_topic("adm").partitions[1].high_watermark == 2
        cluster = admin.metadata()
        assert cluster.brokers and "adm" in cluster.topics
        with Consumer(broker.address, group_id="adm-g") as consumer:
            consumer.commit({TopicPartition("adm", 1): 1})
        assert "adm-g" in {g.group_id for g in admin.list_groups()}
        (lag,) = admin.describe_group("adm-g").lag
        assert (lag.committed_offset, lag.log_end_offset, lag.lag) == (1, 2, 1)
        admin.delete_topic("adm")
        assert "adm" not in admin.list_topics()
    admin.close()  # idempotent
    with pytest.raises(errors.ClientClosedError):
        admin.list_topics()


def test_closed_clients_refuse_work(broker: BrokerProcess) -> None:
    producer = Producer(broker.address)
    producer.close()
    producer.close()
    with pytest.raises(errors.ClientClosedError):
        producer.send("t", b"x")
    consumer = Consumer(broker.address)
    consumer.close()
    consumer.close()
    with pytest.raises(errors.ClientClosedError):
        consumer.poll(0)


def test_the_producer_rides_out_a_broker_restart(broker: BrokerProcess) -> None:
    with Producer(broker.address, retries=10, retry_backoff_ms=200) as producer:
        assert producer.send("restart", b"before").result(DEADLINE_S).offset == 0
        broker.restart()
        assert producer.send("restart", b"after").result(DEADLINE_S).offset == 1


async def test_async_flavours(broker: BrokerProcess) -> None:
    async with AsyncAdmin(broker.address) as admin:
        await admin.create_topic("aio", partitions=2)
    async with AsyncProducer(broker.address) as producer:
        futures = [await producer.send("aio", b"%d" % i, key=b"k%d" % i) for i in range(10)]
        await producer.flush(DEADLINE_S)
        metas = await asyncio.gather(*futures)
        meta = await producer.send_and_wait("aio", b"last", partition=0)
    assert all(m.offset >= 0 for m in metas) and meta.partition == 0
    async with AsyncConsumer(
        broker.address,
        group_id="aio-g",
        topics=["aio"],
        auto_offset_reset="earliest",
        heartbeat_interval_ms=100,
        session_timeout_ms=3000,
    ) as consumer:
        assert len(await consumer.wait_for_assignment(DEADLINE_S)) == 2
        got: list[ConsumerRecord] = []
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < 11 and time.monotonic() < deadline:
            got += await consumer.poll(0.2)
        expected = [b"%d" % i for i in range(10)] + [b"last"]
        assert sorted(r.value or b"" for r in got) == sorted(expected)
        await consumer.commit()
        assert await consumer.committed(("aio", 0)) == await consumer.position(("aio", 0))
        committed = await consumer.commit_async({TopicPartition("aio", 1): 1})
        assert committed == {TopicPartition("aio", 1): 1}
        assert await consumer.committed(("aio", 1)) == 1
