"""One real broker holding 2,000 partitions (20 topics of 100), attacked through the
Kafka door by real Kafka clients only (confluent-kafka, kafka-python, aiokafka):

1. the topics are created by confluent-kafka's AdminClient; Metadata names every
   partition with its leader, as confluent-kafka, kafka-python and aiokafka ask it;
2. an idempotent confluent-kafka Producer (acks=all) writes one record to every
   partition, each delivery acknowledged at its partition and offset 0;
3. a group of two confluent-kafka consumers subscribed by a regex (``^mp-.*``) shares
   the 2,000 partitions, reads every record as produced (key, value, partition,
   offset) and commits; an OffsetFetch of all 2,000 partitions answers the commits;
4. one member leaves, the broker is killed (SIGKILL) and started again on the same
   ports and data; the other member stays, a new one joins, the same producer writes a
   second record to every partition, and the group reads exactly those (no old record:
   the commits survived); once the broker has marked the idle partitions clean, every
   acknowledged record is read back from the beginning by one confluent-kafka consumer
   assigned all 2,000 partitions, then by one of kafka-python, whose ListOffsets give
   every partition's ends;
5. the broker's threads and open files stay under the bounds of
   tests/test_many_partitions_e2e.py (64 threads; at most 1,024 files, its
   RLIMIT_NOFILE, with the same 100 files of headroom at the peak), and its log names
   no fault (a traceback, a file it could not open).

The bounds and the log are asserted last, so that a run that breaks them still checks
every record and commit first. Each wait polls against a deadline.

The fault this test found (fixed): one Fetch naming many released partitions (a
consumer assigned 2,000 of them, from the beginning) reopened them all on the event
loop, past ``--max-open-partitions`` and its hard cap, up to RLIMIT_NOFILE:
``fetch._Reading.read`` -> ``PartitionLog.read`` -> ``_pin``, where ``make_room`` returns at
once on the event loop and ``EngineSlot.pin`` reopened regardless, faster than the
workers' drain closed others. The partitions past the limit failed with EMFILE
("cannot reopen its files: [Errno 24]") and were answered KAFKA_STORAGE_ERROR (56);
librdkafka retried them, so the records still arrived. A reopen on the event loop now
releases, in the same call, the idle logs it pushes past the limit
(``tests/test_open_files.py``, ``..._on_the_event_loop_...``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.admin import KafkaAdminClient

from broker_process import BrokerProcess
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTP
from peak_fds import PeakFds

TOPICS, PER_TOPIC = 20, 100
PARTITIONS = TOPICS * PER_TOPIC
PREFIX, GROUP = "mp-", "mp-group"
NAMES = [f"{PREFIX}{t:02d}" for t in range(TOPICS)]
MAX_THREADS = 64
MAX_FDS = 1024
SESSION_TIMEOUT_MS = 6000
# Errors a client reports while the broker it knows is down (after the kill).
WHILE_DOWN = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN}

Key = tuple[str, int]  # (topic, partition)


def every_partition() -> list[Key]:
    return [(name, p) for name in NAMES for p in range(PER_TOPIC)]


def record_key(topic: str, partition: int) -> bytes:
    return f"k-{topic}-{partition}".encode()


def record_value(round_: int, topic: str, partition: int) -> bytes:
    return f"v{round_}-{topic}-{partition}".encode() * 3




def within_bounds(broker: BrokerProcess, where: str) -> None:
    assert broker.proc is not None
    process = psutil.Process(broker.proc.pid)
    threads, fds = process.num_threads(), process.num_fds()
    assert threads < MAX_THREADS and fds < MAX_FDS, f"{where}: {threads} threads, {fds} files"


def start(data_dir: Path, **ports: int) -> BrokerProcess:
    """A broker whose RLIMIT_NOFILE is the bound, allowed 20,000 partitions."""
    return BrokerProcess(data_dir, open_files=MAX_FDS, max_partitions=20_000, **ports).start()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[list[BrokerProcess]]:
    """The running broker (the last of the list); killed at the end, whatever happened."""
    brokers = [start(tmp_path / "data")]
    yield brokers
    for each in brokers:
        each.kill()


def create_topics(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.kafka_address})
    futures = admin.create_topics([NewTopic(name, PER_TOPIC, 1) for name in NAMES],
                                  request_timeout=60)
    for name, future in futures.items():
        assert future.result(60) is None, name


def check_metadata_confluent(broker: BrokerProcess, where: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.kafka_address})
    metadata = admin.list_topics(timeout=30)
    assert set(NAMES) <= set(metadata.topics), f"{where}: {sorted(metadata.topics)}"
    brokers = set(metadata.brokers)
    for name in NAMES:
        topic = metadata.topics[name]
        assert topic.error is None, (where, name, topic.error)
        assert sorted(topic.partitions) == list(range(PER_TOPIC)), (where, name)
        for p, info in topic.partitions.items():
            assert info.error is None, (where, name, p, info.error)
            assert info.leader in brokers and info.replicas == [info.leader], (where, name, p)
            assert info.isrs == [info.leader], (where, name, p)


def check_metadata_kafka_python(broker: BrokerProcess) -> None:
    admin = KafkaAdminClient(bootstrap_servers=broker.kafka_address, request_timeout_ms=30_000)
    try:
        described = {t["name"]: t for t in admin.describe_topics(NAMES)}
    finally:
        admin.close()
    assert set(described) == set(NAMES), sorted(described)
    for name, topic in described.items():
        assert topic["error_code"] == 0, (name, topic["error_code"])
        parts = topic["partitions"]
        assert sorted(p["partition_index"] for p in parts) == list(range(PER_TOPIC)), name
        for part in parts:
            assert part["error_code"] == 0 and part["leader_id"] >= 0, (name, part)


def check_metadata_aiokafka(broker: BrokerProcess) -> None:
    async def run() -> list[Any]:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.kafka_address,
                                    request_timeout_ms=30_000)
        await admin.start()
        try:
            described: list[Any] = await admin.describe_topics(NAMES)
            return described
        finally:
            await admin.close()

    described = {t["topic"]: t for t in asyncio.run(asyncio.wait_for(run(), 60))}
    assert set(described) == set(NAMES), sorted(described)
    for name, topic in described.items():
        assert topic["error_code"] == 0, (name, topic["error_code"])
        parts = topic["partitions"]
        assert sorted(p["partition"] for p in parts) == list(range(PER_TOPIC)), name
        for part in parts:
            assert part["error_code"] == 0 and part["leader"] >= 0, (name, part)


def produce_everywhere(producer: Producer, round_: int) -> None:
    """One record to every partition; each delivery acknowledged at offset ``round_``."""
    delivered: dict[Key, int] = {}
    errors: list[str] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        topic, partition = message.topic(), message.partition()
        assert topic is not None and partition is not None
        if error is not None:
            errors.append(f"{topic}-{partition}: {error}")
            return
        offset = message.offset()
        assert offset is not None
        delivered[(topic, partition)] = offset

    for topic, partition in every_partition():
        producer.produce(topic, key=record_key(topic, partition),
                         value=record_value(round_, topic, partition), partition=partition,
                         on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(60) == 0, f"round {round_}: undelivered after 60 s"
    assert not errors, f"round {round_}: {errors[:10]} ({len(errors)})"
    wrong = {k: o for k, o in delivered.items() if o != round_}
    assert len(delivered) == PARTITIONS and not wrong, (
        f"round {round_}: {len(delivered)} delivered, at other offsets: {list(wrong.items())[:10]}")


def new_member(broker: BrokerProcess) -> Consumer:
    consumer = Consumer({
        "bootstrap.servers": broker.kafka_address, "group.id": GROUP,
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "session.timeout.ms": SESSION_TIMEOUT_MS, "heartbeat.interval.ms": 500,
    })
    consumer.subscribe([f"^{PREFIX}.*"])
    return consumer


def shared(members: list[Consumer]) -> bool:
    """Every member holds partitions, none twice, all 2,000 between them."""
    held = [{(tp.topic, tp.partition) for tp in m.assignment()} for m in members]
    together: set[Key] = set().union(*held)
    return all(held) and sum(map(len, held)) == len(together) == PARTITIONS


def consume_round(members: list[Consumer], round_: int, where: str,
                  tolerate: set[int] | None = None) -> None:
    """Poll the members until each of them holds its share of the partitions and every
    partition's record of ``round_`` came, exactly as produced, and no other."""
    got: dict[Key, tuple[int, bytes | None, bytes | None]] = {}
    unexpected: list[str] = []
    deadline = time.monotonic() + 60
    while len(got) < PARTITIONS or not shared(members):
        assert time.monotonic() < deadline, (
            f"{where}: {len(got)} of {PARTITIONS} records after 60 s, assignments "
            f"{[len(m.assignment()) for m in members]}")
        for consumer in members:
            for message in consumer.consume(500, 0.1):
                error = message.error()
                if error is not None:
                    assert tolerate and error.code() in tolerate, f"{where}: {error}"
                    continue
                topic, partition, offset = message.topic(), message.partition(), message.offset()
                assert topic is not None and partition is not None and offset is not None
                seen = (offset, message.key(), message.value())
                expected = (round_, record_key(topic, partition),
                            record_value(round_, topic, partition))
                if seen != expected:
                    unexpected.append(f"{topic}-{partition}: {seen!r}, expected {expected!r}")
                got[(topic, partition)] = seen
        assert not unexpected, f"{where}: {unexpected[:5]} ({len(unexpected)})"
    for consumer in members:
        committed = consumer.commit(asynchronous=False)
        assert committed is not None
        failed = [(tp.topic, tp.partition, tp.error) for tp in committed if tp.error]
        assert not failed, f"{where}: commit failed: {failed[:10]}"
        assert all(tp.offset == round_ + 1 for tp in committed), where


def committed_offsets(broker: BrokerProcess) -> dict[Key, int]:
    """The group's committed offsets of all 2,000 partitions (one OffsetFetch)."""
    asker = Consumer({"bootstrap.servers": broker.kafka_address, "group.id": GROUP,
                      "enable.auto.commit": False})
    try:
        answer = asker.committed([TopicPartition(t, p) for t, p in every_partition()],
                                 timeout=30)
    finally:
        asker.close()
    assert not [tp for tp in answer if tp.error], [tp for tp in answer if tp.error][:10]
    return {(tp.topic, tp.partition): tp.offset for tp in answer}


def read_everything(broker: BrokerProcess, rounds: int) -> None:
    """Every partition read from its beginning holds exactly the ``rounds`` records
    produced to it, at their offsets; kafka-python's ListOffsets agrees on the ends."""
    reader = Consumer({"bootstrap.servers": broker.kafka_address, "group.id": "mp-reader",
                       "enable.auto.commit": False})
    reader.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in every_partition()])
    stored: dict[Key, dict[int, tuple[bytes | None, bytes | None]]] = {}
    count = 0
    deadline = time.monotonic() + 60
    try:
        while count < rounds * PARTITIONS:
            assert time.monotonic() < deadline, f"read back {count} of {rounds * PARTITIONS}"
            for message in reader.consume(1000, 0.2):
                assert message.error() is None, message.error()
                topic, partition, offset = message.topic(), message.partition(), message.offset()
                assert topic is not None and partition is not None and offset is not None
                stored.setdefault((topic, partition), {})[offset] = (message.key(),
                                                                     message.value())
                count += 1
    finally:
        reader.close()
    for topic, partition in every_partition():
        expected = {r: (record_key(topic, partition), record_value(r, topic, partition))
                    for r in range(rounds)}
        assert stored.get((topic, partition)) == expected, (topic, partition)

    # kafka-python too: its ListOffsets give every partition's ends, then one consumer
    # assigned all 2,000 partitions reads them again from the beginning.
    other = KafkaConsumer(bootstrap_servers=broker.kafka_address, request_timeout_ms=30_000,
                          enable_auto_commit=False)
    try:
        tps = [KpTP(t, p) for t, p in every_partition()]
        assert set(other.beginning_offsets(tps).values()) == {0}
        assert set(other.end_offsets(tps).values()) == {rounds}
        other.assign(tps)
        other.seek_to_beginning()
        again: dict[Key, dict[int, tuple[bytes | None, bytes | None]]] = {}
        count = 0
        deadline = time.monotonic() + 60
        while count < rounds * PARTITIONS:
            assert time.monotonic() < deadline, f"kafka-python read {count}"
            for tp, records in other.poll(timeout_ms=200, max_records=2000).items():
                for r in records:
                    again.setdefault((tp.topic, tp.partition), {})[r.offset] = (r.key, r.value)
                    count += 1
    finally:
        other.close()
    assert again == stored, "kafka-python read other records than confluent-kafka"


def wait_marked_idle(broker: BrokerProcess, since: int, at_least: int) -> None:
    """Wait until the broker logged, after ``since`` characters of its log, that it
    marked ``at_least`` idle partitions clean (their files released, Kafka's recovery
    point): a consumer then reopens them all at once."""
    deadline = time.monotonic() + 20
    marked = 0
    while marked < at_least:
        assert time.monotonic() < deadline, f"{marked} idle partitions marked clean in 20 s"
        time.sleep(0.1)
        marked = sum(int(line.split(" marked ")[1].split()[0])
                     for line in broker.read_log()[since:].splitlines()
                     if " idle partitions clean " in line)


def log_faults(log: str) -> list[str]:
    """The lines of a broker log that name a fault: a traceback, or a file the broker
    could not open (EMFILE: the open-files bound did not hold)."""
    faults = [line for line in log.splitlines()
              if "Too many open files" in line or "cannot reopen" in line]
    if "Traceback" in log:
        faults.append(log[log.index("Traceback"):][:3000])
    return faults


@pytest.mark.timeout(240)
def test_kafka_clients_on_two_thousand_partitions_through_a_kill(
    broker: list[BrokerProcess],
) -> None:
    started = time.monotonic()
    peaks: dict[str, int] = {}  # the most files the broker held, by phase
    first = broker[0]
    with PeakFds(first) as peak:
        create_topics(first)
        check_metadata_confluent(first, "created")
        check_metadata_kafka_python(first)
        check_metadata_aiokafka(first)
    peaks["create"] = peak.most

    producer = Producer({"bootstrap.servers": first.kafka_address, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5})
    with PeakFds(first) as peak:
        produce_everywhere(producer, 0)
    peaks["produce 0"] = peak.most

    with PeakFds(first) as peak:
        stays, leaves = new_member(first), new_member(first)
        consume_round([stays, leaves], 0, "round 0")
        assert set(committed_offsets(first).values()) == {1}
        leaves.close()
    peaks["group 0"] = peak.most
    within_bounds(first, "before the kill")

    first.kill()  # the clients stay, and reconnect to the same ports
    again = start(first.data_dir, port=first.port, kafka_port=first.kafka_port)
    broker.append(again)
    since = len(again.read_log())
    with PeakFds(again) as peak:
        check_metadata_confluent(again, "after the kill")
        assert set(committed_offsets(again).values()) == {1}, "commits lost in the kill"
        joins = new_member(again)
        produce_everywhere(producer, 1)
        del producer  # destroyed now, not after the broker is gone
        consume_round([stays, joins], 1, "round 1 after the kill", WHILE_DOWN)
        assert set(committed_offsets(again).values()) == {2}
        stays.close()
        joins.close()
    peaks["after the kill"] = peak.most
    wait_marked_idle(again, since, PARTITIONS * 3 // 4)
    with PeakFds(again) as peak:
        read_everything(again, 2)
    peaks["read back"] = peak.most
    within_bounds(again, "after the kill")
    print(f"{PARTITIONS} partitions, two rounds and a kill in "
          f"{time.monotonic() - started:.1f} s; most open files by phase: {peaks}")

    # The open-files bound holds in every phase (the limit is RLIMIT_NOFILE itself: a
    # broker reaching it fails opens with EMFILE, and answers KAFKA_STORAGE_ERROR).
    faults = log_faults(again.read_log())
    assert not faults and max(peaks.values()) < MAX_FDS - 100, (
        f"most open files by phase {peaks} (limit {MAX_FDS}); {len(faults)} faults in the "
        f"log, the first: {faults[:3]}")
    assert again.stop() == 0
