"""Our client and CLI against a three-broker cluster, real processes on loopback
(issue 8: "our client and CLI refresh metadata and retry"; "sentinel-cli cluster (or
topics -describe) shows replicas, leader and in-sync state").

- The Producer (acks=all, idempotent) writes numbered records through a bootstrap list
  while the leader of partition 0 is killed with kill -9: it keeps going (metadata
  from a live broker, retries to the new leader) and every acknowledged record is read
  back exactly once by our Consumer.
- A group of two of our consumers finds the coordinator (the leader of the group's
  partition of ``__consumer_offsets``),
  reads and commits everything, leaves; the coordinator is killed; two new members of
  the group, on the new coordinator, read exactly the records produced since (the
  commits survived: no committed record is read again).
- ``sentinel-cli cluster`` and ``topics -describe`` name the brokers and leaders.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.harness import Cluster, poll
from sentinel.cli.main import main as cli_main
from sentinel.client import Admin, Consumer, Producer, TopicPartition
from sentinel.client.errors import (
    IllegalGenerationError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

PARTITIONS = 3
# A commit refused because the member must join the group again (Kafka's CommitFailed).
REJOIN_ERRORS = (UnknownMemberIdError, IllegalGenerationError, RebalanceInProgressError)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(3, tmp_path).start()
    try:
        cluster.wait_formed()
        yield cluster
    finally:
        cluster.close()


def bootstrap(cluster: Cluster) -> str:
    return ",".join(cluster.grpc_address(i) for i in cluster.node_ids)


def read_all(address: str, topic: str, expected: int, timeout: float = 20.0) -> list[bytes]:
    """Every record of ``topic`` (all partitions, from the start) by our Consumer."""
    values: list[bytes] = []
    with Consumer(address, request_timeout_ms=5000) as consumer:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while len(values) < expected and time.monotonic() < deadline:
            values.extend(r.value for r in consumer.poll(0.5) if r.value is not None)
    return values


def test_producer_rides_out_a_killed_leader(cluster: Cluster) -> None:
    topic = "numbers"
    cluster.create_topic(topic, PARTITIONS, 3)
    for p in range(PARTITIONS):
        cluster.leader_of(topic, p)
    acked: list[int] = []
    failed: list[BaseException] = []
    total = 3000
    victim = -1
    with Producer(
        bootstrap(cluster),
        acks="all",
        enable_idempotence=True,
        retries=60,
        retry_backoff_ms=50,
        linger_ms=2,
        request_timeout_ms=5000,
    ) as producer:
        futures = []
        for n in range(total):
            if n == total // 2:
                producer.flush(30)
                victim = cluster.leader_of(topic, 0)
                cluster.kill(victim)
            futures.append((n, producer.send(topic, value=b"%d" % n, partition=n % PARTITIONS)))
        producer.flush(60)
        for n, future in futures:
            try:
                future.result(0)
                acked.append(n)
            except Exception as exc:  # counted, reported below
                failed.append(exc)
    assert not failed, f"{len(failed)} sends failed, first: {failed[0]!r}"
    new_leader = cluster.leader_of(topic, 0, not_in=[victim])
    assert new_leader != victim
    # Our consumer through a bootstrap list whose first broker is the dead one.
    live = [i for i in cluster.node_ids if i != victim]
    address = ",".join([cluster.grpc_address(victim)] + [cluster.grpc_address(i) for i in live])
    values = read_all(address, topic, len(acked))
    numbers = [int(v) for v in values]
    assert len(numbers) == len(set(numbers)), "a record was read twice"
    assert set(numbers) == set(acked)


def test_group_resumes_on_a_new_coordinator(cluster: Cluster) -> None:
    topic = "work"
    group = "workers"
    cluster.create_topic(topic, PARTITIONS, 3)
    for p in range(PARTITIONS):
        cluster.leader_of(topic, p)
    address = bootstrap(cluster)

    def produce(numbers: range) -> None:
        with Producer(address, acks="all", request_timeout_ms=5000, retries=30) as producer:
            for n in numbers:
                producer.send(topic, value=b"%d" % n, partition=n % PARTITIONS)
            producer.flush(30)

    def consumer() -> Consumer:
        return Consumer(
            address,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=300,
            request_timeout_ms=5000,
        )

    def read(wanted: set[int]) -> list[int]:
        """Two members of the group read until ``wanted`` is seen, committing as they go."""
        seen: list[int] = []
        first, second = consumer(), consumer()
        try:
            first.subscribe([topic])
            second.subscribe([topic])
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (
                wanted <= set(seen) and first.assignment() and second.assignment()
            ):
                for c in (first, second):
                    records = c.poll(0.2)
                    seen.extend(int(r.value) for r in records if r.value is not None)
                    if records:
                        # Right after the coordinator moved, the new one may not know
                        # the member yet: the commit fails as Kafka's CommitFailed does,
                        # and the member's next poll joins again (seen in a full run).
                        with contextlib.suppress(*REJOIN_ERRORS):
                            c.commit()
            assert first.assignment() and second.assignment(), "both members own partitions"
        finally:
            first.close()
            second.close()
        return seen

    produce(range(300))
    before = read(set(range(300)))
    assert set(before) == set(range(300))
    with Admin(address) as admin:  # every broker asked; the offsets at the coordinator
        assert group in {g.group_id for g in admin.list_groups()}
        committed = admin.list_group_offsets(group)
        assert len(committed) == PARTITIONS and sum(committed.values()) >= 300
    coordinator = cluster.coordinator_of(group)
    cluster.kill(coordinator)
    assert cluster.coordinator_of(group, not_in=(coordinator,)) != coordinator
    produce(range(300, 450))
    after = read(set(range(300, 450)))
    assert set(after) == set(range(300, 450)), "the group resumed where it committed"
    assert min(after) >= 300, "a record committed before the kill was read again"


def test_cli_cluster_and_describe(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = "shown"
    cluster.create_topic(topic, PARTITIONS, 3)
    leaders = {p: cluster.leader_of(topic, p) for p in range(PARTITIONS)}
    brokers = bootstrap(cluster)

    assert cli_main(["cluster", "-broker", brokers, "-json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {b["node_id"] for b in doc["brokers"]} == set(cluster.node_ids)
    assert doc["controller_id"] in cluster.node_ids
    by_id = {b["node_id"]: b for b in doc["brokers"]}
    for i in cluster.node_ids:
        assert by_id[i]["address"] == cluster.grpc_address(i)
        assert by_id[i]["kafka_address"] == f"127.0.0.1:{cluster.kafka_ports[i]}"
    assert [b["controller"] for b in doc["brokers"]].count(True) == 1

    assert cli_main(["cluster", "-broker", brokers]) == 0
    table = capsys.readouterr().out
    assert "controller" in table and cluster.grpc_address(1) in table

    assert cli_main(["topics", "-broker", brokers, "-describe", topic, "-json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["replication_factor"] == 3
    for part in described["partitions"]:
        assert sorted(part["replicas"]) == cluster.node_ids
        assert part["leader"] in part["replicas"]
        assert part["leader"] == leaders[part["partition"]] or part["leader"] > 0
    assert cli_main(["topics", "-broker", brokers, "-describe", topic]) == 0
    text = capsys.readouterr().out
    assert "IN SYNC" in text and "LEADER" in text


def test_cli_moves_a_partition_and_refuses_a_bad_target(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = "moved"
    info = cluster.create_topic(topic, 1, 2)
    before = list(info.partitions[0].replicas)
    new = next(i for i in cluster.node_ids if i not in before)
    target = [new, before[0]]
    brokers = bootstrap(cluster)
    argv = ["topics", "-broker", brokers, "-reassign", topic, "-partition", "0"]

    assert cli_main([*argv, "-replicas", "1,9"]) == 1
    err = capsys.readouterr().err
    assert "INVALID_REPLICA_ASSIGNMENT" in err or "broker 9 is not in the cluster" in err, err

    assert cli_main([*argv, "-replicas", ",".join(map(str, target)), "-json"]) == 0
    assert json.loads(capsys.readouterr().out)["target"] == target

    def done() -> bool | None:
        assert cli_main(["topics", "-broker", brokers, "-reassignments", "-json"]) == 0
        if json.loads(capsys.readouterr().out)["reassignments"]:
            return None
        assert cli_main(["topics", "-broker", brokers, "-describe", topic, "-json"]) == 0
        replicas = json.loads(capsys.readouterr().out)["partitions"][0]["replicas"]
        return True if replicas == target else None

    poll(done, f"{topic}-0 moved to {target}", 20.0)
