"""kill -9 of the broker under a consumer group of real Kafka clients, round after round.

One broker on one data directory and on the same ports all along (its clients reconnect
to the address they know). Each round runs, against the broker the last check left
running:

- an idempotent confluent-kafka producer (acks=all) writing small keyless records to
  the six partitions of ``gsoak``, every acknowledged one noted (partition, offset,
  value);
- two or three confluent-kafka members of group ``gs`` (``subscribe()``, auto-commit
  off), each committing its position every few records, most with
  ``commit(asynchronous=False)`` and some with pipelined async commits, every commit the
  broker acknowledged noted; members join and leave while the round runs (rebalances),
  with the round's assignor (eager or cooperative);

and then, at a random moment, SIGKILLs the broker. Every other round, on average, the
start after the kill is killed too, at a random moment of its recovery. The broker starts
again on the same directory and ports, with the round's flags (sync mode, journal,
memtable size), while the round's clients keep running (commits are held back from the
kill to the check), and the check after each start asserts:

- every acknowledged record is at its offset with its value; offsets have no gap and no
  value is in the log twice;
- every record a member received is in the log at the offset it was received at (a
  consumer never saw what the broker later lost);
- for every partition, the group's committed offset is at least the last commit
  acknowledged before the kill, and at most the log's end;

then lets the round's members commit again until each partition they hold has a commit
acknowledged by the new broker (the group recovered, not just the process), closes them,
and checks the log for a traceback. After the last round a fresh member of the group
reads from the committed offsets to the end: with what the members received before, it
covers every acknowledged record (at least once).

The default is a few rounds; the long run: ``SOAK_ROUNDS=40 .venv/bin/pytest
tests/kafka/test_group_kill_soak_e2e.py`` (``SOAK_SEED`` repeats a run; the seed is in
every failure's message).
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from broker_process import BrokerProcess
from partition_reading import read_partition
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc

ROUNDS = int(os.environ.get("SOAK_ROUNDS", "5"))
SEED = int(os.environ.get("SOAK_SEED", str(random.SystemRandom().randrange(1 << 31))))
TOPIC, PARTITIONS, GROUP = "gsoak", 6, "gs"
KILL_AFTER_S = (0.3, 2.5)  # the round runs this long before its kill
MEMBERS = (1, 3)  # the members alive at once, least and most
CHURN_EVERY_S = (0.2, 0.9)  # a member joins or leaves this often
COMMIT_EVERY = (5, 40)  # a member commits after this many records (or 0.2 s)
STRATEGIES = ("range", "roundrobin", "cooperative-sticky")
ASYNC_COMMITS = 0.3  # the share of members whose commits are async (pipelined)
FLAG_SETS: list[dict[str, object]] = [
    {},
    {"memtable_mb": 1},
    {"journal": False, "memtable_mb": 1},
    {"sync": "interval", "sync_interval_ms": 20},
    {"sync": "none"},
]
SESSION_TIMEOUT_MS = 2000
RECOVERED_S = 30.0  # the group commits again this soon after a start, or it is a fault


@dataclass
class Seen:
    """What the broker acknowledged and what the members received, over every round."""

    produced: dict[int, dict[int, bytes]] = field(default_factory=dict)  # p -> o -> value
    consumed: dict[int, dict[int, bytes]] = field(default_factory=dict)
    commits: dict[int, int] = field(default_factory=dict)  # p -> highest acknowledged
    commit_log: list[tuple[float, int, int, str]] = field(default_factory=list)
    regressions: list[str] = field(default_factory=list)  # acked commits below an acked one
    conflicts: list[str] = field(default_factory=list)  # one offset, two values received
    producer_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acked_produce(self, partition: int, offset: int, value: bytes) -> None:
        with self.lock:
            self.produced.setdefault(partition, {})[offset] = value

    def received(self, partition: int, offset: int, value: bytes) -> None:
        with self.lock:
            earlier = self.consumed.setdefault(partition, {}).setdefault(offset, value)
            if earlier != value:
                self.conflicts.append(f"{TOPIC}-{partition}@{offset}: {earlier[:16]!r} "
                                      f"then {value[:16]!r}")

    def acked_commit(self, member: str, partition: int, offset: int) -> None:
        with self.lock:
            self.commit_log.append((time.monotonic(), partition, offset, member))
            last = self.commits.get(partition, -1)
            if offset < last:
                self.regressions.append(f"{member}: {TOPIC}-{partition} committed {offset} "
                                        f"after {last} was acknowledged")
            self.commits[partition] = max(last, offset)


@dataclass
class Round:
    """One round's switches (stop; commits held back around the kill) and its commits."""

    stop: threading.Event = field(default_factory=threading.Event)
    commits_open: threading.Event = field(default_factory=threading.Event)
    in_flight: int = 0
    since_start: dict[int, int] = field(default_factory=dict)  # p -> commits since a start
    lock: threading.Lock = field(default_factory=threading.Lock)


class GroupMember:
    """One confluent-kafka member polling and committing in a thread of its own."""

    def __init__(self, name: str, bootstrap: str, strategy: str, rng: random.Random,
                 seen: Seen, round_: Round) -> None:
        self.name, self.bootstrap, self.strategy = name, bootstrap, strategy
        self.rng, self.seen, self.round = rng, seen, round_
        self.leave = threading.Event()
        self.asynchronous = rng.random() < ASYNC_COMMITS
        self.assigned: set[int] = set()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            consumer = Consumer({
                "bootstrap.servers": self.bootstrap, "group.id": GROUP,
                "client.id": self.name, "auto.offset.reset": "earliest",
                "enable.auto.commit": False, "session.timeout.ms": SESSION_TIMEOUT_MS,
                "heartbeat.interval.ms": 250, "partition.assignment.strategy": self.strategy,
                "reconnect.backoff.max.ms": 200, "socket.timeout.ms": 4000,
                "on_commit": self._committed,
            })
            try:
                consumer.subscribe([TOPIC])
                self._consume(consumer)
            finally:
                consumer.close()  # LeaveGroup
        except BaseException as error:  # shown by the test: a member must not die
            self.error = error

    def _consume(self, consumer: Consumer) -> None:
        uncommitted, last_commit = 0, time.monotonic()
        every = self.rng.randrange(*COMMIT_EVERY)
        deadline = time.monotonic() + 120
        while not self.leave.is_set() and time.monotonic() < deadline:
            message = consumer.poll(0.05)
            if message is not None and message.error() is None:
                partition, offset, value = message.partition(), message.offset(), message.value()
                assert partition is not None and offset is not None and value is not None
                self.seen.received(partition, offset, value)
                uncommitted += 1
            self.assigned = {tp.partition for tp in consumer.assignment()}
            due = uncommitted >= every or time.monotonic() - last_commit > 0.2
            if due and self.assigned and self.round.commits_open.is_set():
                self._commit(consumer)
                uncommitted, last_commit = 0, time.monotonic()

    def _commit(self, consumer: Consumer) -> None:
        if self.asynchronous:  # acknowledged in _committed, called by a later poll()
            with contextlib.suppress(KafkaException):  # (nothing to commit)
                consumer.commit(asynchronous=True)
            return
        with self.round.lock:
            self.round.in_flight += 1
        try:
            answer = consumer.commit(asynchronous=False)
        except KafkaException:
            return  # nothing to commit, a rebalance, the broker down: not acknowledged
        finally:
            with self.round.lock:
                self.round.in_flight -= 1
        self._acknowledged(answer or [])

    def _committed(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's commit callback: the answer to an async commit (and to a sync one,
        noted by ``_commit`` already)."""
        if self.asynchronous and error is None:
            self._acknowledged(partitions)

    def _acknowledged(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            if tp.error is None and tp.offset >= 0:
                self.seen.acked_commit(self.name, tp.partition, tp.offset)
                with self.round.lock:
                    self.round.since_start[tp.partition] = (
                        self.round.since_start.get(tp.partition, 0) + 1)


def _producer(bootstrap: str, rng: random.Random, seen: Seen, round_no: int,
              round_: Round) -> None:
    producer = Producer({
        "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
        "linger.ms": 2, "message.timeout.ms": 15000, "socket.timeout.ms": 4000,
        "reconnect.backoff.max.ms": 200,
    })

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            if error.fatal():
                with seen.lock:
                    seen.producer_errors.append(str(error))
            return
        partition, offset, value = message.partition(), message.offset(), message.value()
        assert partition is not None and offset is not None and value is not None
        seen.acked_produce(partition, offset, value)

    seq = 0
    deadline = time.monotonic() + 120
    while not round_.stop.is_set() and time.monotonic() < deadline:
        value = b"r%d-%d-" % (round_no, seq) + rng.randbytes(rng.randrange(10, 300))
        try:
            producer.produce(TOPIC, value, on_delivery=delivered)
        except BufferError:
            producer.poll(0.05)
            continue
        except KafkaException as error:  # fatal (idempotence broken): noted, then stop
            with seen.lock:
                seen.producer_errors.append(str(error))
            break
        seq += 1
        producer.poll(0)
        time.sleep(0.002)  # a steady stream
    producer.flush(30)


def _churn(bootstrap: str, strategy: str, rng: random.Random, seen: Seen, round_no: int,
           round_: Round, members: list[GroupMember], churn_open: threading.Event) -> None:
    """Members join and leave while ``churn_open`` (the broker is up), from start to stop."""
    live = [m for m in members if not m.leave.is_set()]
    seq = len(members)
    deadline = time.monotonic() + 120
    while not round_.stop.wait(rng.uniform(*CHURN_EVERY_S)) and time.monotonic() < deadline:
        if not churn_open.is_set():
            continue
        live = [m for m in live if not m.leave.is_set()]
        joins = len(live) < MEMBERS[1] and (len(live) <= MEMBERS[0] or rng.random() < 0.5)
        if joins:
            seq += 1
            member = GroupMember(f"r{round_no}-m{seq}", bootstrap, strategy,
                                 random.Random(rng.random()), seen, round_)
            members.append(member)
            live.append(member)
        else:
            live.pop(rng.randrange(len(live))).leave.set()


def _committed(broker: BrokerProcess) -> dict[int, int]:
    """The group's committed offsets, asked through the Kafka door (OffsetFetch)."""
    asker = Consumer({"bootstrap.servers": broker.kafka_address, "group.id": GROUP,
                      "enable.auto.commit": False})
    try:
        answer = asker.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)],
                                 timeout=20)
    finally:
        asker.close()
    return {tp.partition: tp.offset for tp in answer}


def _check(broker: BrokerProcess, seen: Seen, commits_before: dict[int, int],
           where: str) -> tuple[dict[int, int], dict[int, int]]:
    """Records, what the members received and the committed offsets; the log's ends
    and the committed offsets."""
    with seen.lock:
        produced = {p: dict(o) for p, o in seen.produced.items()}
        consumed = {p: dict(o) for p, o in seen.consumed.items()}
    ends: dict[int, int] = {}
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        for partition in range(PARTITIONS):
            stored, ends[partition] = read_partition(stub, TOPIC, partition)
            for kind, expected in (("acknowledged", produced.get(partition, {})),
                                   ("received by a member", consumed.get(partition, {}))):
                for offset, value in expected.items():
                    got = stored.get(offset)
                    assert got == value, (
                        f"{where}: {TOPIC}-{partition}@{offset}: {kind} {value[:24]!r}, "
                        f"stored {None if got is None else got[:24]!r}"
                    )
            offsets = sorted(stored) or [0]
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), (
                f"{where}: {TOPIC}-{partition} has a gap in its offsets")
            assert not stored or offsets[-1] + 1 == ends[partition], (
                f"{where}: {TOPIC}-{partition} ends at {offsets[-1] + 1}, high watermark "
                f"{ends[partition]}")
            values = list(stored.values())
            assert len(values) == len(set(values)), f"{where}: {TOPIC}-{partition}: a record twice"
    committed = _committed(broker)
    for partition in range(PARTITIONS):
        got, acked = committed.get(partition, -1), commits_before.get(partition)
        if acked is not None:
            assert got >= acked, (
                f"{where}: group {GROUP} {TOPIC}-{partition}: committed {got}, but "
                f"{acked} was acknowledged before the kill")
        assert got <= ends[partition], (
            f"{where}: group {GROUP} {TOPIC}-{partition}: committed {got} beyond the log's "
            f"end {ends[partition]}")
    return ends, committed


def _wait(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def _run_round(broker: BrokerProcess, rng: random.Random, seen: Seen, round_no: int,
               flags: dict[str, object], where: str) -> BrokerProcess:
    """One round from a running broker to the running broker it leaves (``flags``: the
    flags of the starts after this round's kill)."""
    round_ = Round()
    round_.commits_open.set()
    churn_open = threading.Event()
    churn_open.set()
    strategy = rng.choice(STRATEGIES)
    members = [GroupMember(f"r{round_no}-m{i}", broker.kafka_address, strategy,
                           random.Random(rng.random()), seen, round_)
               for i in range(rng.randint(2, 3))]
    bootstrap = broker.kafka_address
    threads = [
        threading.Thread(target=_producer, daemon=True, args=(
            bootstrap, random.Random(rng.random()), seen, round_no, round_)),
        threading.Thread(target=_churn, daemon=True, args=(
            bootstrap, strategy, random.Random(rng.random()), seen, round_no, round_, members,
            churn_open)),
    ]
    for thread in threads:
        thread.start()
    time.sleep(rng.uniform(*KILL_AFTER_S))

    broker = kill_restart_check(broker, rng, flags, seen, round_, churn_open, where)

    def recovered() -> bool:
        held = set().union(*(m.assigned for m in members if not m.leave.is_set()))
        with round_.lock:
            return len(held) == PARTITIONS and all(round_.since_start.get(p) for p in held)

    _wait(recovered, f"{where}: every partition has a commit acknowledged after the start "
          f"(commits since: {round_.since_start})", RECOVERED_S)
    round_.stop.set()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), f"{where}: a client thread hangs"
    for member in members:
        member.leave.set()
    for member in members:
        member.thread.join(60)
        assert not member.thread.is_alive(), f"{where}: member {member.name} hangs"
        assert member.error is None, f"{where}: member {member.name} failed: {member.error!r}"
    return broker


def kill_restart_check(broker: BrokerProcess, rng: random.Random, flags: dict[str, object],
                       seen: Seen, round_: Round, churn_open: threading.Event,
                       where: str) -> BrokerProcess:
    """The round's kill: commits and churn held back, SIGKILL, a start on the same ports
    (every other one, on average, killed in its recovery first), everything acknowledged
    before the kill checked; then commits and a moment of churn again, counting the
    commits the new broker's group acknowledges (``Round.since_start``)."""
    churn_open.clear()
    round_.commits_open.clear()
    with seen.lock:
        commits_before = dict(seen.commits)  # acknowledged before the kill
    broker.kill()
    broker = BrokerProcess(broker.data_dir, port=broker.port, kafka_port=broker.kafka_port,
                           **flags)  # the same ports: the round's clients reconnect
    if rng.random() < 0.5:  # a kill while the next start recovers
        broker.launch()
        time.sleep(rng.uniform(0.05, 1.5))
        broker.kill()
    broker.start()
    _wait(lambda: round_.in_flight == 0, f"{where}: commits in flight end", 60)
    _check(broker, seen, commits_before, where)

    # The group recovers: every partition a live member holds gets a commit from the
    # new broker's group (new records keep coming, so each one has something to commit).
    with round_.lock:
        round_.since_start.clear()
    round_.commits_open.set()
    churn_open.set()
    time.sleep(rng.uniform(0.2, 1.0))
    churn_open.clear()
    return broker


def _read_to_the_end(broker: BrokerProcess, seen: Seen, ends: dict[int, int],
                     committed: dict[int, int]) -> None:
    """A fresh member of the group reads from the committed offsets to the log's end."""
    member = Consumer({"bootstrap.servers": broker.kafka_address, "group.id": GROUP,
                       "auto.offset.reset": "earliest", "enable.auto.commit": False,
                       "session.timeout.ms": SESSION_TIMEOUT_MS})
    try:
        member.subscribe([TOPIC])
        positions = {p: max(committed.get(p, -1), 0) for p in range(PARTITIONS)}
        deadline = time.monotonic() + 60
        while any(positions[p] < ends[p] for p in range(PARTITIONS)):
            assert time.monotonic() < deadline, (
                f"seed {SEED}: the last member stopped short: at {positions}, ends {ends}")
            message = member.poll(0.1)
            if message is not None and message.error() is None:
                partition, offset, value = message.partition(), message.offset(), message.value()
                assert partition is not None and offset is not None and value is not None
                seen.received(partition, offset, value)
                positions[partition] = max(positions[partition], offset + 1)
    finally:
        member.close()


@pytest.mark.timeout(90 + 60 * ROUNDS)
def test_kill_9_under_a_consumer_group_keeps_records_and_commits(tmp_path: Path) -> None:
    soak_rounds(tmp_path / "broker", SEED, ROUNDS, _run_round)


RoundRunner = Callable[[BrokerProcess, random.Random, Seen, int, dict[str, object], str],
                       BrokerProcess]


def soak_rounds(data_dir: Path, seed: int, rounds: int, run_round: RoundRunner) -> None:
    """The soak: ``rounds`` rounds of ``run_round`` (each ends with the broker started
    again and checked) on one broker, no traceback in the log after each; then a last
    kill and start, and a fresh member reads from the committed offsets to the end:
    every acknowledged record was read by someone (at least once)."""
    rng = random.Random(seed)
    seen = Seen()
    broker = BrokerProcess(data_dir).start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.kafka_address})
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(10)
        del admin  # (it would reconnect through every kill)
        logged = 0
        for round_no in range(rounds):
            flags = rng.choice(FLAG_SETS)
            where = f"seed {seed} round {round_no} flags {flags}"
            print(where, flush=True)  # shown with a failure, whatever fails
            broker = run_round(broker, rng, seen, round_no, flags, where)
            log = broker.read_log()
            assert "Traceback" not in log[logged:], f"{where}: a traceback:\n{log[logged:]}"
            logged = len(log)
        assert not seen.conflicts, f"seed {seed}: one offset, two values: {seen.conflicts}"
        assert not seen.regressions, f"seed {seed}: commits went back: {seen.regressions}"
        assert not seen.producer_errors, f"seed {seed}: producer: {seen.producer_errors}"
        assert seen.produced and seen.commits, "nothing was acknowledged"

        broker.kill()  # the last kill, then everyone is read back by a fresh member
        broker.start()
        ends, committed = _check(broker, seen, dict(seen.commits), f"seed {seed} after the soak")
        _read_to_the_end(broker, seen, ends, committed)
        for partition, acked in seen.produced.items():
            missing = sorted(set(acked) - set(seen.consumed.get(partition, {})))
            assert not missing, (
                f"seed {seed}: {TOPIC}-{partition}: acknowledged offsets nobody read: "
                f"{missing[:10]} ({len(missing)})")
        assert not seen.conflicts, f"seed {seed}: one offset, two values: {seen.conflicts}"
        assert "Traceback" not in broker.read_log(), f"seed {seed}: a traceback"
        print(f"seed {seed}: {rounds} rounds, {sum(map(len, seen.produced.values()))} records "
              f"and {len(seen.commit_log)} commits acknowledged, by "
              f"{len({m for *_, m in seen.commit_log})} members", flush=True)
    finally:
        broker.kill()
