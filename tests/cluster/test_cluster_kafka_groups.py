"""Consumer groups of a real Kafka client (confluent-kafka) in a three-broker cluster:
the coordinator is found through FindCoordinator, offsets are committed through it into
the controller's replicated log, and after kill -9 of the coordinator's broker a new
consumer of the group resumes exactly where the commits left off."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from confluent_kafka import Consumer, Producer

from cluster.harness import Cluster, poll
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(3, tmp_path).start()
    yield cluster
    cluster.close()


def controller_of(cluster: Cluster, live: list[int]) -> int | None:
    """The controller's leader (the group coordinator) as a live broker reports it."""
    for i in live:
        with grpc.insecure_channel(cluster.grpc_address(i)) as channel:
            stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
            try:
                found = stub.FetchMetadata(pb.MetadataRequest(), timeout=5)
            except grpc.RpcError:
                continue
            if found.controller_id in live:
                return int(found.controller_id)
    return None


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
            values.append(message.value() or b"")
            consumer.commit(message, asynchronous=False)
    finally:
        consumer.close()
    return values


def test_group_offsets_survive_the_death_of_the_coordinator(cluster: Cluster) -> None:
    cluster.wait_formed()
    cluster.create_topic("orders", partitions=1, replication_factor=3)
    producer = Producer({"bootstrap.servers": cluster.kafka_bootstrap(), "acks": "all"})
    for n in range(20):
        producer.produce("orders", value=b"%d" % n)
    assert producer.flush(30) == 0

    first = consume(cluster.kafka_bootstrap(), "billing", 10)
    assert first == [b"%d" % n for n in range(10)]

    coordinator = poll(lambda: controller_of(cluster, cluster.live_ids()), "a coordinator", 20)
    cluster.kill(coordinator)
    live = cluster.live_ids()
    poll(lambda: controller_of(cluster, live), "a new coordinator", 30)
    bootstrap = ",".join(f"127.0.0.1:{cluster.kafka_ports[i]}" for i in live)
    rest = consume(bootstrap, "billing", 10)
    assert rest == [b"%d" % n for n in range(10, 20)]
    cluster.restart(coordinator)
    cluster.stop()
