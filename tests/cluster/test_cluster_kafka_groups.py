"""Kafka clients in a three-broker cluster. Consumer groups (confluent-kafka):
the coordinator is found through FindCoordinator, offsets are committed through it into
the group's partition of ``__consumer_offsets`` (its leader is the coordinator), and
after kill -9 of the coordinator's broker a new consumer of the group resumes exactly
where the commits left off, at the partition's new leader."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from kafka.admin import KafkaAdminClient

from cluster.harness import Cluster, poll
from kafka import KafkaConsumer as KpConsumer
from kafka import KafkaProducer as KpProducer
from kafka import TopicPartition as KpTP

REBALANCING = (KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS,
               KafkaError.UNKNOWN_MEMBER_ID)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(3, tmp_path).start()
    yield cluster
    cluster.close()


def consume(bootstrap: str, group: str, want: int) -> list[bytes]:
    """``want`` records through a group member that commits each one synchronously."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "session.timeout.ms": 6000,
    })
    consumer.subscribe(["orders"])
    values: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while len(values) < want:
            assert time.monotonic() < deadline, f"consumed {len(values)} of {want}"
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            try:
                consumer.commit(message, asynchronous=False)
            except KafkaException as exc:
                # The group rebalanced under the commit (early on, its coordinator moves
                # to the preferred replica): as for any Kafka client, the record comes
                # again from the last commit once the member has rejoined.
                if exc.args[0].code() in REBALANCING:
                    continue
                raise
            values.append(message.value() or b"")
    finally:
        consumer.close()
    return values


def test_group_offsets_survive_the_death_of_the_coordinator(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.wait_formed()
    # DescribeCluster and Metadata name this cluster (cluster.json) and its controller.
    stored = json.loads((tmp_path / "n1" / "cluster.json").read_text())["cluster_id"]
    admin = AdminClient({"bootstrap.servers": cluster.kafka_bootstrap()})
    described = admin.describe_cluster(request_timeout=10).result(timeout=30)
    assert described.cluster_id == stored
    assert described.controller is not None and described.controller.id in (1, 2, 3)
    assert sorted(n.id for n in described.nodes) == [1, 2, 3]
    cluster.create_topic("orders", partitions=1, replication_factor=3)
    producer = Producer({"bootstrap.servers": cluster.kafka_bootstrap(), "acks": "all"})
    for n in range(20):
        producer.produce("orders", value=b"%d" % n)
    assert producer.flush(30) == 0

    first = consume(cluster.kafka_bootstrap(), "billing", 10)
    assert first == [b"%d" % n for n in range(10)]

    coordinator = cluster.coordinator_of("billing")
    cluster.kill(coordinator)
    live = cluster.live_ids()
    assert cluster.coordinator_of("billing", not_in=[coordinator]) in live
    bootstrap = ",".join(f"127.0.0.1:{cluster.kafka_ports[i]}" for i in live)
    rest = consume(bootstrap, "billing", 10)
    assert rest == [b"%d" % n for n in range(10, 20)]
    cluster.restart(coordinator)
    cluster.stop()


def test_kafka_python_admin_moves_a_partition(cluster: Cluster) -> None:
    """AlterPartitionReassignments / ListPartitionReassignments (KIP-455) from
    kafka-python's admin client: the move is accepted, carried out, and listed until
    done; a broker that is not in the cluster and a cancel are refused by name."""
    cluster.wait_formed()
    info = cluster.create_topic("kmoved", 1, 2)
    before = list(info.partitions[0].replicas)
    target = [next(i for i in cluster.node_ids if i not in before), before[0]]
    tp = KpTP("kmoved", 0)
    admin = KafkaAdminClient(bootstrap_servers=cluster.kafka_bootstrap(),
                             request_timeout_ms=10000)
    try:
        bad = admin.alter_partition_reassignments({tp: [target[0], 9]})
        assert bad[tp] is not None
        assert admin.alter_partition_reassignments({tp: target}) == {tp: None}

        def moved() -> bool | None:
            under_way = admin.list_partition_reassignments()
            if under_way:
                ongoing = under_way[tp]
                assert set(ongoing["replicas"]) >= set(target)
                return None
            (topic,) = admin.describe_topics(["kmoved"])
            replicas = topic["partitions"][0]["replica_nodes"]
            return True if replicas == target else None

        poll(moved, f"kmoved-0 moved to {target}", 30.0)
        cancel = admin.alter_partition_reassignments({tp: None})
        assert cancel[tp] is not None and "NoReassignment" in cancel[tp].__name__
    finally:
        admin.close()


def test_kafka_python_consumer_validates_its_position_at_a_new_leader(cluster: Cluster) -> None:
    """KIP-320: kafka-python 3.0 checks its position with OffsetForLeaderEpoch when a
    partition's leader epoch moves. After kill -9 of the leader it asks the new one,
    is told its epoch ends past its position, and reads on: every record once, in
    order, none read again."""
    cluster.wait_formed()
    cluster.create_topic("epochs", 1, 3)
    first = [b"a%d" % n for n in range(100)]
    then = [b"b%d" % n for n in range(100)]
    producer = KpProducer(bootstrap_servers=cluster.kafka_bootstrap(), acks="all", retries=20)
    for value in first:
        producer.send("epochs", value, partition=0)
    producer.flush(30)
    producer.close()
    consumer = KpConsumer(bootstrap_servers=cluster.kafka_bootstrap(),
                          enable_auto_commit=False, auto_offset_reset="earliest",
                          metadata_max_age_ms=500)
    tp = KpTP("epochs", 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    # Another one placed at the end by ListOffsets, which names the epoch it checks.
    tail = KpConsumer(bootstrap_servers=cluster.kafka_bootstrap(), enable_auto_commit=False,
                      auto_offset_reset="earliest", metadata_max_age_ms=500)
    tail.assign([tp])
    tail.seek_to_end(tp)
    assert tail.position(tp) >= len(first)
    seen: list[bytes] = []
    tailed: list[bytes] = []

    def read(count: int, into: list[bytes] = seen, who: KpConsumer = consumer) -> None:
        deadline = time.monotonic() + 60
        while len(into) < count:
            assert time.monotonic() < deadline, f"read {len(into)} of {count}"
            for records in who.poll(timeout_ms=200).values():
                into.extend(r.value for r in records)

    try:
        read(len(first))
        leader = cluster.leader_of("epochs", 0)
        cluster.kill(leader)
        cluster.leader_of("epochs", 0, not_in=[leader])
        live = ",".join(cluster.brokers[i].kafka_address for i in cluster.live_ids())
        producer = KpProducer(bootstrap_servers=live, acks="all", retries=20)
        for value in then:
            producer.send("epochs", value, partition=0)
        producer.flush(30)
        producer.close()
        read(len(first) + len(then))
        assert seen == first + then
        read(len(then), tailed, tail)
        assert tailed == then
    finally:
        consumer.close()
        tail.close()
