"""kill -9 at random moments of a mixed workload, round after round on one data directory.

Each round starts the broker on the directory the last round's kill left, runs these at
once, then kills the broker with SIGKILL at a random moment and starts it again:

- a Kafka producer (librdkafka, acks=all, no retries), keyless 100 B - 2 KiB records
  spread over the partitions of ``soak`` by the sticky partitioner;
- a gRPC producer appending records of up to 300 KiB (large values: value separation)
  to ``soak-g``, acks=all;
- commits of group ``g``'s offsets from outside group membership (generation -1);
- topics created, written once and some of them deleted.

Every other round, on average, the start after the kill is killed too, at a random
moment of its recovery (replaying WALs and the journal, flushing what they held), before
the start that is checked. Broker flags move between rounds (sync mode, journal on or
off, a 1 MiB memtable and a small memtable budget, few partitions with open files), so
that flushes, releases of memory, partitions closed and reopened, journal replays and
WAL rolls are under way when the kill lands. After each restart everything acknowledged
in any round so far is checked: every record at its offset, offsets without gaps, no
record twice, every acknowledged commit kept (or a later one), every topic whose
creation was acknowledged there unless its deletion was too, none whose deletion was
acknowledged; and the log has no traceback.

The default is a few rounds; the long run is one command away:
``SOAK_ROUNDS=200 .venv/bin/pytest tests/test_kill_soak_e2e.py`` (``SOAK_SEED`` repeats a
run; the seed is in every failure's message).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from confluent_kafka import KafkaError, Message, Producer

from broker_process import BrokerProcess
from partition_reading import read_partition
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc
from sentinel.record import build_batch

ROUNDS = int(os.environ.get("SOAK_ROUNDS", "3"))
SEED = int(os.environ.get("SOAK_SEED", str(random.SystemRandom().randrange(1 << 31))))
KAFKA_TOPIC, KAFKA_PARTITIONS = "soak", 24
GRPC_TOPIC, GRPC_PARTITIONS = "soak-g", 4
GROUP = "g"
# Topics made by the churn and not deleted stay at most this many: each is recovered by
# every later start, and a long run must not slow its own starts down.
LIVE_CHURN_TOPICS = 12
# The round's workload runs at most this long before its kill (a kill lands in it).
KILL_AFTER_S = (0.3, 2.5)
# The flag sets a round draws from (with the harness's own: retention passes every 1 s).
FLAG_SETS: list[dict[str, object]] = [
    {},
    {"memtable_mb": 1, "memtable_budget_mb": 4},
    {"memtable_mb": 1, "max_open_partitions": 8, "max_active_partitions": 8},
    {"no_journal": True, "memtable_mb": 1},
    {"sync": "interval", "sync_interval_ms": 20, "memtable_mb": 1},
    {"sync": "none", "memtable_budget_mb": 2},
]


@dataclass
class Acknowledged:
    """What the broker acknowledged, over every round (what a restart must keep)."""

    records: dict[tuple[str, int], dict[int, bytes]] = field(default_factory=dict)
    commits: dict[int, int] = field(default_factory=dict)  # soak partition -> offset
    commits_tried: dict[int, int] = field(default_factory=dict)  # highest sent
    created: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    delete_tried: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        with self.lock:
            self.records.setdefault((topic, partition), {})[offset] = value


def _flags(flag_set: dict[str, object]) -> dict[str, object]:
    """``FLAG_SETS``' spelling to the harness's (``no_journal`` -> ``journal=False``)."""
    flags = dict(flag_set)
    if flags.pop("no_journal", False):
        flags["journal"] = False
    return flags


def _kafka_producer(broker: BrokerProcess, rng: random.Random, seen: Acknowledged,
                    round_: int, stop: threading.Event) -> None:
    producer = Producer({
        "bootstrap.servers": broker.kafka_address, "acks": "all",
        "enable.idempotence": False, "retries": 0,
        "linger.ms": 2, "batch.size": 16384, "message.timeout.ms": 4000,
        "socket.timeout.ms": 4000, "reconnect.backoff.max.ms": 200,
    })

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is None:
            offset, partition, value = message.offset(), message.partition(), message.value()
            assert offset is not None and partition is not None and value is not None
            seen.record(KAFKA_TOPIC, partition, offset, value)

    seq = 0
    deadline = time.monotonic() + 30
    while not stop.is_set() and time.monotonic() < deadline:
        value = b"k%d-%d-" % (round_, seq) + rng.randbytes(rng.randrange(100, 2048))
        try:
            producer.produce(KAFKA_TOPIC, value, on_delivery=delivered)
        except BufferError:
            producer.poll(0.05)
            continue
        seq += 1
        if seq % 50 == 0:
            producer.poll(0)
            time.sleep(0.002)  # a steady stream, not a queue of everything at once
    producer.flush(8)  # the kill's casualties fail within message.timeout.ms


def _grpc_calls(broker: BrokerProcess, rng: random.Random, seen: Acknowledged,
                round_: int, stop: threading.Event) -> None:
    """Large-value produces, commits and topic churn, one call at a time."""
    channel = grpc.insecure_channel(broker.address)
    stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
    seq = 0
    deadline = time.monotonic() + 30
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            seq += 1
            action = rng.random()
            try:
                if action < 0.55:
                    size = rng.choice((200, 5000, 70_000, 300_000))
                    value = b"g%d-%d-" % (round_, seq) + rng.randbytes(size)
                    partition = rng.randrange(GRPC_PARTITIONS)
                    batch = build_batch([(None, value, (), int(time.time() * 1000))])
                    answer = stub.Produce(
                        pb.ProduceRequest(topic=GRPC_TOPIC, partition=partition,
                                          record_batches=batch, acks=pb.ACKS_ALL),
                        timeout=4,
                    )
                    seen.record(GRPC_TOPIC, partition, answer.base_offset, value)
                elif action < 0.85:
                    partition = rng.randrange(4)
                    with seen.lock:
                        offset = seen.commits_tried.get(partition, 0) + rng.randrange(1, 50)
                        seen.commits_tried[partition] = offset
                    stub.CommitOffsets(
                        pb.CommitOffsetsRequest(
                            group_id=GROUP, generation=-1,
                            offsets=[pb.PartitionOffset(topic=KAFKA_TOPIC,
                                                        partition=partition, offset=offset)],
                        ),
                        timeout=4,
                    )
                    with seen.lock:
                        seen.commits[partition] = max(seen.commits.get(partition, 0), offset)
                elif action < 0.95 and len(seen.created - seen.delete_tried) < LIVE_CHURN_TOPICS:
                    name = f"churn-{round_}-{seq}"
                    stub.CreateTopic(pb.CreateTopicRequest(name=name, partitions=2), timeout=4)
                    with seen.lock:
                        seen.created.add(name)
                    batch = build_batch([(None, name.encode(), (), int(time.time() * 1000))])
                    stub.Produce(pb.ProduceRequest(topic=name, partition=1,
                                                   record_batches=batch, acks=pb.ACKS_ALL),
                                 timeout=4)
                    seen.record(name, 1, 0, name.encode())
                elif seen.created - seen.delete_tried:
                    with seen.lock:
                        name = rng.choice(sorted(seen.created - seen.delete_tried))
                        seen.delete_tried.add(name)
                    stub.DeleteTopic(pb.DeleteTopicRequest(name=name), timeout=4)
                    with seen.lock:
                        seen.deleted.add(name)
            except grpc.RpcError:
                if stop.is_set():
                    return
                time.sleep(0.05)  # the broker died: the round ends soon
    finally:
        channel.close()


def _check(broker: BrokerProcess, seen: Acknowledged, where: str) -> None:
    channel = grpc.insecure_channel(broker.address)
    stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
    try:
        topics = {t.name for t in stub.ListTopics(pb.ListTopicsRequest(), timeout=10).topics}
        for name in seen.created - seen.delete_tried:
            assert name in topics, f"{where}: topic {name} (creation acknowledged) is gone"
        for name in seen.deleted:
            assert name not in topics, f"{where}: topic {name} (deletion acknowledged) is back"
        for (topic, partition), acked in sorted(seen.records.items()):
            if topic in seen.delete_tried:
                continue
            stored, _end = read_partition(stub, topic, partition)
            for offset, value in acked.items():
                got = stored.get(offset)
                assert got == value, (
                    f"{where}: {topic}-{partition} offset {offset}: acknowledged "
                    f"{value[:24]!r}..., stored {None if got is None else got[:24]}"
                )
            offsets = sorted(stored)
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), (
                f"{where}: {topic}-{partition} has a gap in its offsets"
            )
            values = list(stored.values())
            assert len(values) == len(set(values)), f"{where}: {topic}-{partition}: a record twice"
        committed = stub.FetchOffsets(
            pb.FetchOffsetsRequest(
                group_id=GROUP,
                partitions=[pb.TopicPartitions(topic=KAFKA_TOPIC, partitions=list(range(4)))],
            ),
            timeout=10,
        )
        found = {o.partition: o.offset for o in committed.offsets}
        for partition, offset in seen.commits.items():
            got = found.get(partition, -1)
            tried = seen.commits_tried[partition]
            assert offset <= got <= tried, (
                f"{where}: group {GROUP} {KAFKA_TOPIC}-{partition}: committed {got}, "
                f"acknowledged {offset} (highest sent {tried})"
            )
    finally:
        channel.close()


def _run_round(broker: BrokerProcess, rng: random.Random, seen: Acknowledged,
               round_: int) -> None:
    stop = threading.Event()
    actors: list[Callable[..., None]] = [_kafka_producer, _grpc_calls]
    threads = [
        threading.Thread(target=actor, args=(broker, random.Random(rng.random()), seen,
                                            round_, stop), daemon=True)
        for actor in actors
    ]
    for thread in threads:
        thread.start()
    time.sleep(rng.uniform(*KILL_AFTER_S))
    broker.kill()
    stop.set()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive(), f"a workload thread of round {round_} hangs"


@pytest.mark.timeout(60 + 40 * ROUNDS)
def test_kill_9_at_random_moments_keeps_everything_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    seen = Acknowledged()
    data = tmp_path / "broker"
    broker = BrokerProcess(data).start()
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
            stub.CreateTopic(pb.CreateTopicRequest(name=KAFKA_TOPIC, partitions=KAFKA_PARTITIONS))
            stub.CreateTopic(pb.CreateTopicRequest(name=GRPC_TOPIC, partitions=GRPC_PARTITIONS))
        broker.kill()
        for round_ in range(ROUNDS):
            flag_set = rng.choice(FLAG_SETS)
            where = f"seed {SEED} round {round_} flags {flag_set}"
            print(where, flush=True)  # shown with a failure, whatever fails
            broker = BrokerProcess(data, **_flags(flag_set)).start()
            _run_round(broker, rng, seen, round_)
            if rng.random() < 0.5:  # a kill while the next start recovers
                interrupted = BrokerProcess(data, **_flags(flag_set)).launch()
                time.sleep(rng.uniform(0.05, 1.5))
                interrupted.kill()
            log_before = broker.read_log()  # (every start of ``data`` logs to one file)
            broker = BrokerProcess(data, **_flags(flag_set))
            broker.log_path.write_text("")
            broker.start()
            _check(broker, seen, where)
            log = broker.read_log()
            assert "Traceback" not in log, f"{where}: the restart logged a traceback:\n{log}"
            assert "Traceback" not in log_before, f"{where}: a traceback:\n{log_before}"
            broker.kill()  # the next round starts from a kill too
        assert sum(map(len, seen.records.values())) > 0, "nothing was acknowledged"
    finally:
        broker.kill()
