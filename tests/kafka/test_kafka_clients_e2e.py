"""Real Kafka clients against a real ``sentinel-server``: confluent-kafka (librdkafka),
kafka-python and aiokafka produce, consume, list offsets and administer topics through
the Kafka door, and what one door writes the other reads.

Consumers are given their partitions (``assign``): consumer groups through the Kafka
door are tested in test_kafka_groups_e2e.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AioTP
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType as KpConfigType
from kafka.admin import KafkaAdminClient
from kafka.admin import NewPartitions as KpNewPartitions
from kafka.admin import NewTopic as KpNewTopic

from broker_process import BrokerProcess, module_broker
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTP
from metrics_polling import wait_for
from sentinel import client as sentinel_client

# Record timestamps of a minute ago: older ones would be removed by time retention
# (7 days), which the broker checks every second here.
TS = int(time.time() * 1000) - 60_000


broker = module_broker("kafka-clients")


def admin(broker: BrokerProcess) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.kafka_address})


def create(broker: BrokerProcess, name: str, partitions: int = 1) -> None:
    client = admin(broker)  # kept alive until the futures resolve
    for future in client.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(10)


def confluent_consume(broker: BrokerProcess, topic: str, partitions: int,
                      count: int) -> list[Any]:
    consumer = Consumer({"bootstrap.servers": broker.kafka_address, "group.id": "unused",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got: list[Any] = []
    deadline = time.monotonic() + 20
    while len(got) < count and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None:
            assert message.error() is None, message.error()
            got.append(message)
    consumer.close()
    assert len(got) == count
    return got


def kafka_python_consume(broker: BrokerProcess, topic: str, partitions: int) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=broker.kafka_address, consumer_timeout_ms=1500)
    consumer.assign([KpTP(topic, p) for p in range(partitions)])
    consumer.seek_to_beginning()
    got = list(consumer)
    consumer.close()
    return got


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_confluent_kafka_round_trip_acks_all(broker: BrokerProcess, codec: str) -> None:
    topic = f"cf-{codec}"
    create(broker, topic, 3)
    producer = Producer({"bootstrap.servers": broker.kafka_address, "acks": "all",
                         "compression.type": codec, "linger.ms": 5})
    for i in range(300):
        producer.produce(topic, key=b"key-%d" % (i % 7), value=b"value %d " % i * 5,
                         headers=[("n", str(i).encode()), ("codec", codec.encode())])
    assert producer.flush(20) == 0
    got = confluent_consume(broker, topic, 3, 300)
    assert sorted(m.value() for m in got) == sorted(b"value %d " % i * 5 for i in range(300))
    for m in got:
        n = int(dict(m.headers())["n"])
        assert m.key() == b"key-%d" % (n % 7)
    # The same key goes to the same partition (librdkafka's murmur2 partitioner).
    by_key: dict[bytes, set[int]] = {}
    for m in got:
        by_key.setdefault(m.key(), set()).add(m.partition())
    assert all(len(parts) == 1 for parts in by_key.values())


def test_confluent_idempotent_producer_and_offsets_for_times(broker: BrokerProcess) -> None:
    create(broker, "cf-idem")
    producer = Producer({"bootstrap.servers": broker.kafka_address,
                         "enable.idempotence": True, "linger.ms": 1})
    for i in range(100):
        producer.produce("cf-idem", value=b"%d" % i, timestamp=TS + i)
    assert producer.flush(20) == 0
    got = confluent_consume(broker, "cf-idem", 1, 100)
    assert [m.value() for m in got] == [b"%d" % i for i in range(100)]
    consumer = Consumer({"bootstrap.servers": broker.kafka_address, "group.id": "unused"})
    assert consumer.get_watermark_offsets(TopicPartition("cf-idem", 0), 10) == (0, 100)
    (found,) = consumer.offsets_for_times([TopicPartition("cf-idem", 0, TS + 42)], 10)
    assert found.offset == 42
    consumer.close()


def test_confluent_transactions_are_refused_at_once(broker: BrokerProcess) -> None:
    """Transactions are not served: librdkafka's init_transactions fails with the fatal
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED at once (it retried INVALID_REQUEST until its
    whole timeout ran out), and nothing was produced."""
    producer = Producer({"bootstrap.servers": broker.kafka_address,
                         "transactional.id": "cf-tx"})
    started = time.monotonic()
    with pytest.raises(KafkaException) as refused:
        producer.init_transactions(60)
    assert time.monotonic() - started < 30, "init_transactions waited out its timeout"
    assert refused.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    del producer  # destroyed now, not after the broker is gone


def test_kafka_python_idempotent_by_default(broker: BrokerProcess) -> None:
    producer = KafkaProducer(bootstrap_servers=broker.kafka_address, compression_type="gzip")
    futures = [producer.send("kp-topic", key=b"k", value=b"v%d" % i, headers=[("h", b"x")],
                             timestamp_ms=TS + i) for i in range(50)]  # auto-created topic
    producer.flush()
    offsets = [f.get(10).offset for f in futures]
    assert offsets == list(range(50))
    assert producer.config["enable_idempotence"]
    producer.close()
    got = kafka_python_consume(broker, "kp-topic", 1)
    assert [(r.key, r.value, r.headers) for r in got] == [
        (b"k", b"v%d" % i, [("h", b"x")]) for i in range(50)]  # fmt: skip
    consumer = KafkaConsumer(bootstrap_servers=broker.kafka_address)
    tp = KpTP("kp-topic", 0)
    assert consumer.beginning_offsets([tp]) == {tp: 0}
    assert consumer.end_offsets([tp]) == {tp: 50}
    assert consumer.offsets_for_times({tp: TS + 10})[tp].offset == 10
    consumer.close()


def test_aiokafka_round_trip(broker: BrokerProcess) -> None:
    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.kafka_address,
                                    enable_idempotence=True, compression_type="gzip")
        await producer.start()
        for i in range(40):
            await producer.send("aio-topic", b"a%d" % i, key=b"k%d" % i,
                                headers=[("i", b"%d" % i)])
        await producer.flush()
        await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.kafka_address)
        await consumer.start()
        tp = AioTP("aio-topic", 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 40 and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                got.extend(records)
        assert await consumer.end_offsets([tp]) == {tp: 40}
        await consumer.stop()
        assert [(r.key, r.value, r.headers) for r in got] == [
            (b"k%d" % i, b"a%d" % i, (("i", b"%d" % i),)) for i in range(40)]  # fmt: skip

    asyncio.run(run())


def test_aiokafka_admin_client(broker: BrokerProcess) -> None:
    """aiokafka's own admin client: create, configs, add partitions, delete records,
    describe the cluster, delete."""
    from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
    from aiokafka.admin.records_to_delete import RecordsToDelete

    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.kafka_address)
        await admin.start()
        try:
            await admin.create_topics([NewTopic("aio-admin", 1, 1)])
            await admin.alter_configs([ConfigResource(
                ConfigResourceType.TOPIC, "aio-admin", configs={"retention.ms": "7200000"})])
            described = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, "aio-admin")])
            assert "7200000" in repr(described)
            await admin.create_partitions({"aio-admin": NewPartitions(2)})
            producer = AIOKafkaProducer(bootstrap_servers=broker.kafka_address)
            await producer.start()
            for i in range(5):
                await producer.send_and_wait("aio-admin", b"%d" % i, partition=1)
            await producer.stop()
            low = await admin.delete_records({AioTP("aio-admin", 1): RecordsToDelete(3)})
            assert low == {AioTP("aio-admin", 1): 3}
            cluster = await admin.describe_cluster()
            assert [b["port"] for b in cluster["brokers"]] == [broker.kafka_port]
            await admin.delete_topics(["aio-admin"])
            assert "aio-admin" not in await admin.list_topics()
        finally:
            await admin.close()

    asyncio.run(run())


def test_kafka_to_grpc_and_grpc_to_kafka(broker: BrokerProcess) -> None:
    create(broker, "doors")
    producer = Producer({"bootstrap.servers": broker.kafka_address, "acks": "all",
                         "compression.type": "lz4"})
    for i in range(20):
        producer.produce("doors", key=b"k%d" % i, value=b"from kafka %d" % i,
                         headers=[("door", b"kafka")])
    assert producer.flush(20) == 0
    with sentinel_client.Producer(broker.address, acks="all") as ours:
        for i in range(20):
            ours.send("doors", b"from grpc %d" % i, key=b"g%d" % i, headers=[("door", b"grpc")])
        ours.flush()
    with sentinel_client.Consumer(broker.address, consumer_timeout_ms=2000) as consumer:
        consumer.assign([("doors", 0)])
        consumer.seek_to_beginning()
        via_grpc = list(consumer)
    assert [r.value for r in via_grpc] == (
        [b"from kafka %d" % i for i in range(20)] + [b"from grpc %d" % i for i in range(20)])
    assert via_grpc[0].key == b"k0" and dict(via_grpc[0].headers) == {"door": b"kafka"}
    via_kafka = kafka_python_consume(broker, "doors", 1)
    assert [r.value for r in via_kafka] == [r.value for r in via_grpc]
    assert [r.offset for r in via_kafka] == list(range(40))
    assert via_kafka[20].key == b"g0" and via_kafka[20].headers == [("door", b"grpc")]


def test_confluent_admin_client(broker: BrokerProcess) -> None:
    client = admin(broker)
    topic = NewTopic("cf-admin", 2, 1, config={"retention.ms": "3600000"})
    client.create_topics([topic])["cf-admin"].result(10)
    with pytest.raises(Exception, match="already exists"):
        client.create_topics([NewTopic("cf-admin", 2, 1)])["cf-admin"].result(10)
    assert len(client.list_topics(timeout=10).topics["cf-admin"].partitions) == 2
    resource = ConfigResource(ConfigResource.Type.TOPIC, "cf-admin")
    configs = client.describe_configs([resource])[resource].result(10)
    assert configs["retention.ms"].value == "3600000"
    alter = ConfigResource(ConfigResource.Type.TOPIC, "cf-admin", incremental_configs=[
        ConfigEntry("retention.bytes", "1048576",
                    incremental_operation=AlterConfigOpType.SET)])  # fmt: skip
    client.incremental_alter_configs([alter])[alter].result(10)
    configs = client.describe_configs([resource])[resource].result(10)
    assert configs["retention.bytes"].value == "1048576"
    assert configs["retention.ms"].value == "3600000"
    client.create_partitions([NewPartitions("cf-admin", 4)])["cf-admin"].result(10)
    wait_for(lambda: len(client.list_topics(timeout=10).topics["cf-admin"].partitions) == 4)
    producer = Producer({"bootstrap.servers": broker.kafka_address})
    for i in range(10):
        producer.produce("cf-admin", value=b"%d" % i, partition=0)
    assert producer.flush(20) == 0
    deleted = client.delete_records([TopicPartition("cf-admin", 0, 4)])
    assert deleted[TopicPartition("cf-admin", 0, 4)].result(10).low_watermark == 4
    cluster = client.describe_cluster().result(10)
    assert [(n.host, n.port) for n in cluster.nodes] == [("127.0.0.1", broker.kafka_port)]
    client.delete_topics(["cf-admin"])["cf-admin"].result(10)
    wait_for(lambda: "cf-admin" not in client.list_topics(timeout=10).topics)


def test_kafka_python_admin_client(broker: BrokerProcess) -> None:
    client = KafkaAdminClient(bootstrap_servers=broker.kafka_address)
    client.create_topics([KpNewTopic("kp-admin", 1, 1)])
    client.alter_configs([KpConfigResource(KpConfigType.TOPIC, "kp-admin",
                                           configs={"retention.ms": "7200000"})])
    described = client.describe_configs([KpConfigResource(KpConfigType.TOPIC, "kp-admin")])
    assert "7200000" in repr(described)
    client.create_partitions({"kp-admin": KpNewPartitions(3)})
    producer = KafkaProducer(bootstrap_servers=broker.kafka_address)
    for i in range(6):
        producer.send("kp-admin", b"%d" % i, partition=1)
    producer.flush()
    producer.close()
    result = client.delete_records({KpTP("kp-admin", 1): 2})
    assert result[KpTP("kp-admin", 1)]["low_watermark"] == 2
    assert client.describe_cluster()["brokers"][0]["port"] == broker.kafka_port
    # Replica moves need a cluster: a broker alone refuses each partition by name.
    refused = client.alter_partition_reassignments({KpTP("kp-admin", 0): [1]})
    assert refused[KpTP("kp-admin", 0)] is not None
    assert "InvalidRequest" in refused[KpTP("kp-admin", 0)].__name__
    assert client.list_partition_reassignments() == {}
    client.delete_topics(["kp-admin"])
    client.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.kafka_address)
    wait_for(lambda: "kp-admin" not in consumer.topics())
    consumer.close()
