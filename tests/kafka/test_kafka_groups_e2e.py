"""Consumer groups of real Kafka clients against a real ``sentinel-server``, for each of
confluent-kafka, aiokafka and kafka-python: two members share the partitions; one
leaves and the other takes them all over from the offsets its peer committed; a new
member resumes at the committed offsets, re-reading only what was not committed; a
member killed with kill -9 is replaced once its session times out.
"""

from __future__ import annotations

import selectors
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka_members import LIBRARIES, SESSION_TIMEOUT_MS, Member, Record, member

from broker_process import BrokerProcess, module_broker

PARTITIONS = 4
ALL = set(range(PARTITIONS))
MEMBER_SCRIPT = Path(__file__).with_name("kafka_members.py")


broker = module_broker("kafka-groups")


def create(broker: BrokerProcess, topic: str) -> None:
    client = AdminClient({"bootstrap.servers": broker.kafka_address})  # alive until done
    client.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(10)


def produce(broker: BrokerProcess, topic: str, batch: str, per_partition: int) -> list[Record]:
    """``per_partition`` records to each partition; returns (partition, value) of each."""
    producer = Producer({"bootstrap.servers": broker.kafka_address, "linger.ms": 1})
    records = [(p, f"{batch}-{p}-{i}".encode()) for p in range(PARTITIONS)
               for i in range(per_partition)]
    for partition, value in records:
        producer.produce(topic, value=value, partition=partition)
    assert producer.flush(10) == 0
    return records


def poll_until(members: list[Member], done: Callable[[], bool], what: str,
               timeout: float = 30.0) -> dict[int, list[Record]]:
    """Poll every member in turn until ``done()``; returns what each one received,
    checking that each record came to the member that owned its partition then."""
    got: dict[int, list[Record]] = {i: [] for i in range(len(members))}
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        for i, m in enumerate(members):
            records = m.poll()
            owned = m.assignment()
            assert all(p in owned for p, _ in records), (i, records, owned)
            got[i] += records
    return got


def shared(a: Member, b: Member) -> bool:
    """Both members hold partitions, none twice, all of them between the two."""
    x, y = a.assignment(), b.assignment()
    return bool(x) and bool(y) and not x & y and x | y == ALL


def consume(members: list[Member], expected: list[Record], what: str) -> list[list[Record]]:
    """Poll until the members received as many records as expected; what each got."""
    got: list[list[Record]] = [[] for _ in members]
    deadline = time.monotonic() + 30
    while sum(map(len, got)) < len(expected):
        assert time.monotonic() < deadline, f"timed out waiting until {what}: {got}"
        for i, m in enumerate(members):
            records = m.poll()
            owned = m.assignment()
            assert all(p in owned for p, _ in records), (i, records, owned)
            got[i] += records
    return got


def read_line(child: subprocess.Popen[str], timeout: float = 30.0) -> str:
    assert child.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        assert selector.select(timeout), "the child member printed nothing"
    return child.stdout.readline()


@pytest.mark.parametrize("library", LIBRARIES)
def test_two_members_share_take_over_and_resume_from_commits(
        broker: BrokerProcess, library: str) -> None:
    topic, group = f"share-{library}", f"g-share-{library}"
    create(broker, topic)
    a = member(library, broker.kafka_address, topic, group)
    b = member(library, broker.kafka_address, topic, group)
    poll_until([a, b], lambda: shared(a, b), "both members hold partitions")

    # Each member gets the records of its own partitions; both commit.
    first = produce(broker, topic, "first", 5)
    got_a, got_b = consume([a, b], first, "the first batch is consumed")
    assert sorted(got_a + got_b) == sorted(first)
    assert {p for p, _ in got_a} == a.assignment()
    assert {p for p, _ in got_b} == b.assignment()
    a.commit()
    b.commit()

    # b leaves: a takes every partition over, from b's committed offsets (no re-read).
    b.close()
    poll_until([a], lambda: a.assignment() == ALL, "the survivor holds every partition")
    second = produce(broker, topic, "second", 5)
    assert sorted(consume([a], second, "the survivor reads the second batch")[0]) \
        == sorted(second)
    a.commit()

    # A third batch read but not committed: a new member re-reads that and only that.
    third = produce(broker, topic, "third", 3)
    assert sorted(consume([a], third, "the third batch is consumed")[0]) == sorted(third)
    a.close()
    c = member(library, broker.kafka_address, topic, group)
    again = consume([c], third, "the new member reads what was not committed")[0]
    assert sorted(again) == sorted(third), "re-read records that were committed"
    c.close()


@pytest.mark.parametrize("library", LIBRARIES)
def test_member_killed_with_kill_9_is_replaced_after_its_session_timeout(
        broker: BrokerProcess, library: str) -> None:
    topic, group = f"kill-{library}", f"g-kill-{library}"
    create(broker, topic)
    child = subprocess.Popen(
        [sys.executable, str(MEMBER_SCRIPT), library, broker.kafka_address, topic, group],
        stdout=subprocess.PIPE, text=True)
    try:
        line = read_line(child)  # the child prints once it holds partitions
        assert line.startswith("assigned"), f"the child member never got partitions: {line!r}"
        survivor = member(library, broker.kafka_address, topic, group)
        poll_until([survivor], lambda: bool(survivor.assignment())
                   and survivor.assignment() != ALL, "the two members share the partitions")
        child.kill()  # SIGKILL: no LeaveGroup, the coordinator must notice on its own
        child.wait(10)
        killed_at = time.monotonic()
        poll_until([survivor], lambda: survivor.assignment() == ALL,
                   "the survivor holds every partition")
        # Not before the dead member's session could expire (heartbeats are periodic).
        assert time.monotonic() - killed_at >= SESSION_TIMEOUT_MS / 1000 / 2
        records = produce(broker, topic, "after", 2)
        assert sorted(consume([survivor], records, "the survivor reads every partition")[0]) \
            == sorted(records)
        survivor.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
