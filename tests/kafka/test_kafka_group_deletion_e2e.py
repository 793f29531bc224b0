"""Deleting consumer groups (DeleteGroups) and a group's offsets of some partitions
(OffsetDelete) with real Kafka clients against a real ``sentinel-server``:
confluent-kafka's ``AdminClient.delete_consumer_groups`` and kafka-python's
``KafkaAdminClient.delete_groups`` on an Empty group with committed offsets (gone: a new
consumer starts per ``auto.offset.reset``), a group with a live member (NON_EMPTY_GROUP)
and an unknown group; kafka-python's ``delete_group_offsets`` and our raw client for
OffsetDelete, refused per partition for a topic a live member subscribes to; and every
deletion still holds after the broker is killed with kill -9 and started again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as CTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.errors import GroupIdNotFoundError, GroupSubscribedToTopicError, NoError
from kafka_members import Member, member
from kafka_raw import RawKafka

from broker_process import BrokerProcess
from kafka import KafkaAdminClient
from kafka import TopicPartition as KTopicPartition
from sentinel.protocol.kafka.messages.api_versions import ApiVersionsRequest
from sentinel.protocol.kafka.messages.offset_delete import (
    OffsetDeleteRequest,
    OffsetDeleteRequestPartition,
    OffsetDeleteRequestTopic,
)

PARTITIONS = 2
PER_PARTITION = 3
GROUP_SUBSCRIBED_TO_TOPIC, UNKNOWN_TOPIC_OR_PARTITION, GROUP_ID_NOT_FOUND = 86, 3, 69


def topic_with_records(broker: BrokerProcess, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.kafka_address})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(10)
    producer = Producer({"bootstrap.servers": broker.kafka_address, "linger.ms": 1})
    for p in range(PARTITIONS):
        for i in range(PER_PARTITION):
            producer.produce(topic, value=f"{p}-{i}".encode(), partition=p)
    assert producer.flush(10) == 0


def read_all(m: Member, what: str) -> int:
    """Poll until every record of the topic came (or 20 s); how many came."""
    got = 0
    deadline = time.monotonic() + 20
    while got < PARTITIONS * PER_PARTITION:
        assert time.monotonic() < deadline, f"timed out: {what} ({got} records)"
        got += len(m.poll())
    return got


def empty_group_with_commits(broker: BrokerProcess, topic: str, group: str) -> None:
    """A consumer reads the whole topic, commits and leaves: an Empty group, offsets kept."""
    m = member("confluent-kafka", broker.kafka_address, topic, group)
    read_all(m, f"{group} reads {topic}")
    m.commit()
    m.close()


def live_member(broker: BrokerProcess, library: str, topic: str, group: str) -> Member:
    m = member(library, broker.kafka_address, topic, group)
    deadline = time.monotonic() + 20
    while not m.assignment():
        assert time.monotonic() < deadline, f"{group}: no assignment"
        m.poll()
    return m


def committed(broker: BrokerProcess, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets as confluent-kafka lists them (-1001: none)."""
    admin = AdminClient({"bootstrap.servers": broker.kafka_address})
    asked = ConsumerGroupTopicPartitions(
        group, [CTopicPartition(topic, p) for p in range(PARTITIONS)])
    listed = admin.list_consumer_group_offsets([asked])[group].result(10)
    return {tp.partition: tp.offset for tp in listed.topic_partitions}


def kafka_python_admin(broker: BrokerProcess) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=broker.kafka_address, request_timeout_ms=10_000)


def error_code(future: Future[None]) -> int:
    """The code of the KafkaError a confluent-kafka admin future fails with."""
    with pytest.raises(KafkaException) as caught:
        future.result(10)
    error: KafkaError = caught.value.args[0]
    return int(error.code())


def test_confluent_delete_consumer_groups(start_broker: Callable[..., BrokerProcess]) -> None:
    broker = start_broker()
    topic_with_records(broker, "orders")
    empty_group_with_commits(broker, "orders", "done")
    assert committed(broker, "done", "orders") == {0: PER_PARTITION, 1: PER_PARTITION}
    busy = live_member(broker, "confluent-kafka", "orders", "busy")
    try:
        admin = AdminClient({"bootstrap.servers": broker.kafka_address})
        futures = admin.delete_consumer_groups(["done", "busy", "never"], request_timeout=10)
        assert futures["done"].result(10) is None
        assert error_code(futures["busy"]) == KafkaError.NON_EMPTY_GROUP
        assert error_code(futures["never"]) == KafkaError.GROUP_ID_NOT_FOUND
        busy.poll()
        assert busy.assignment(), "the refused group's member is still in it"
    finally:
        busy.close()
    assert committed(broker, "done", "orders") == {0: -1001, 1: -1001}
    # A new consumer of the deleted group starts per auto.offset.reset (earliest).
    again = member("confluent-kafka", broker.kafka_address, "orders", "done")
    try:
        assert read_all(again, "the deleted group reads from the start") == 6
    finally:
        again.close()


def test_kafka_python_delete_groups(start_broker: Callable[..., BrokerProcess]) -> None:
    broker = start_broker()
    topic_with_records(broker, "events")
    empty_group_with_commits(broker, "events", "done")
    busy = live_member(broker, "kafka-python", "events", "busy")
    admin = kafka_python_admin(broker)
    try:
        results = admin.delete_groups(["done", "busy", "never"])
        assert results == {"done": "OK", "busy": "NonEmptyGroupError",
                           "never": "GroupIdNotFoundError"}
        assert admin.list_group_offsets("done") == {"done": {}}
    finally:
        busy.close()
        admin.close()
    assert committed(broker, "done", "events") == {0: -1001, 1: -1001}


def test_offset_delete_refuses_a_subscribed_topic_and_survives_kill_9(
        start_broker: Callable[..., BrokerProcess]) -> None:
    broker = start_broker()
    topic_with_records(broker, "read")
    topic_with_records(broker, "old")
    # Group "g" committed offsets of both topics, then its live member reads "read" only.
    empty_group_with_commits(broker, "old", "g")
    empty_group_with_commits(broker, "read", "g")
    reader = live_member(broker, "kafka-python", "read", "g")
    admin = kafka_python_admin(broker)
    try:
        results = admin.delete_group_offsets(
            "g", [KTopicPartition("read", 0), KTopicPartition("old", 0)])
        assert results == {KTopicPartition("read", 0): GroupSubscribedToTopicError,
                           KTopicPartition("old", 0): NoError}
        with pytest.raises(GroupIdNotFoundError):
            admin.delete_group_offsets("never", [KTopicPartition("old", 0)])
        with RawKafka(broker.kafka_address) as raw:
            versions = raw.call(18, 0, ApiVersionsRequest())
            advertised = {k.api_key: (k.min_version, k.max_version) for k in versions.api_keys}
            assert (advertised[42], advertised[47]) == ((0, 2), (0, 0))
            response = raw.call(47, 0, OffsetDeleteRequest(group_id="g", topics=tuple(
                OffsetDeleteRequestTopic(name=name, partitions=tuple(
                    OffsetDeleteRequestPartition(partition_index=p) for p in parts))
                for name, parts in (("read", (1,)), ("old", (1, 7)), ("gone", (0,))))))
            assert response.error_code == 0
            assert {(t.name, p.partition_index): p.error_code
                    for t in response.topics for p in t.partitions} == {
                ("read", 1): GROUP_SUBSCRIBED_TO_TOPIC, ("old", 1): 0,
                ("old", 7): UNKNOWN_TOPIC_OR_PARTITION, ("gone", 0): UNKNOWN_TOPIC_OR_PARTITION,
            }
            refused = raw.call(47, 0, OffsetDeleteRequest(group_id="never"))
            assert (refused.error_code, refused.topics) == (GROUP_ID_NOT_FOUND, ())
    finally:
        reader.close()
        admin.close()
    kept = {0: PER_PARTITION, 1: PER_PARTITION}
    assert committed(broker, "g", "read") == kept
    assert committed(broker, "g", "old") == {0: -1001, 1: -1001}

    # Acknowledged deletions are durable: kill -9, start again, same answers.
    empty_group_with_commits(broker, "old", "deleted")
    confluent = AdminClient({"bootstrap.servers": broker.kafka_address})  # alive until done
    deleted = confluent.delete_consumer_groups(["deleted"], request_timeout=10)
    assert deleted["deleted"].result(10) is None
    broker.kill()
    broker.start()
    assert committed(broker, "g", "read") == kept
    assert committed(broker, "g", "old") == {0: -1001, 1: -1001}
    assert committed(broker, "deleted", "old") == {0: -1001, 1: -1001}
    admin = kafka_python_admin(broker)
    try:
        assert {g["group_id"] for g in admin.list_groups()} == {"g"}
    finally:
        admin.close()
