"""kill -9 of the broker under a consumer group of kafka-python and aiokafka members.

The same attack as ``test_group_kill_soak_e2e`` (whose producer, checks and bookkeeping
this reuses), with the group's members made of the two Python Kafka clients instead of
librdkafka: each round's members are kafka-python 3.0 ``KafkaConsumer``s, aiokafka
``AIOKafkaConsumer``s, or both at once in one group (then with an assignor both know:
range, roundrobin or sticky; kafka-python alone may also use cooperative-sticky). They
subscribe with auto-commit off and commit the next offset of what they received, every
few records: kafka-python with ``commit()`` or pipelined ``commit_async()``, aiokafka with
``await commit()``, every commit the broker acknowledged noted. Members join and leave
while the round runs; the broker is SIGKILLed at a random moment (and, every other
round on average, again while it recovers), then starts on the same directory and ports
while the clients keep running. The check after each start asserts what the other soak
asserts (acknowledged records at their offsets, received records in the log, committed
offsets between the last acknowledged commit and the log's end); then every partition
must get a commit acknowledged by the new broker within ``soak.RECOVERED_S``, no member
may hang or die, and the log may hold no traceback.

Client defects are worked around, not asserted (a Kafka broker shows them too):

- kafka-python 3.0.12: if ``poll()``'s timeout ends while a JoinGroup/SyncGroup task is
  in flight and ``need_rejoin()`` is False by the next poll, ``join_group_async`` never
  awaits the finished task: the assignment is never applied and heartbeats stay off for
  ever (the broker then expires the member). The common trigger, a leader that
  assigned before its metadata knew the topic and rejoins on the metadata change, is
  avoided (each member fetches the topic's metadata before it subscribes); a rarer one
  (about one round in 250, in a rebalance when a member joins) is not, and then shows
  as a recovery timeout with a kafka-python member holding its previous assignment.
- kafka-python 3.0.12: the answers of async commits wait in a deque that
  ``_do_commit_offsets_async`` fills with ``appendleft`` and
  ``_invoke_completed_offset_commit_callbacks`` empties with ``popleft``: the callbacks
  of commits answered between two polls run newest first. A member notes an answer
  only if no later commit of its own was noted already (the later one holds).
- aiokafka 0.14: ``Fetcher.close()`` awaits the fetch tasks it cancelled, so ``stop()``
  raises ``CancelledError`` when one was sleeping its retry backoff after the broker
  went away; the member then closes its client itself.

The default is a few rounds of aiokafka groups; the long run, every kind of group:
``SOAK_ROUNDS=40 .venv/bin/pytest tests/kafka/test_group_kill_soak_other_clients_e2e.py``
(``SOAK_SEED`` repeats a run).
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
import traceback
from pathlib import Path

import aiokafka
import aiokafka.errors
import kafka.errors
import pytest
import test_group_kill_soak_e2e as soak
from aiokafka.coordinator.assignors.range import RangePartitionAssignor as AioRange
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor as AioRoundRobin
from aiokafka.coordinator.assignors.sticky.sticky_assignor import (
    StickyPartitionAssignor as AioSticky,
)
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from kafka.structs import OffsetAndMetadata

from broker_process import BrokerProcess
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition

ROUNDS = int(os.environ.get("SOAK_ROUNDS", "3"))
SEED = int(os.environ.get("SOAK_SEED", str(random.SystemRandom().randrange(1 << 31))))
TOPIC, GROUP = soak.TOPIC, soak.GROUP
KAFKA_PYTHON_ASSIGNORS: dict[str, type] = {
    "range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor,
    "sticky": StickyPartitionAssignor, "cooperative-sticky": CooperativeStickyAssignor,
}
AIOKAFKA_ASSIGNORS: dict[str, type] = {
    "range": AioRange, "roundrobin": AioRoundRobin, "sticky": AioSticky,
}
ALL_KINDS = (("kafka-python",), ("aiokafka",), ("kafka-python", "aiokafka"))
#: The default run (``make test``) forms aiokafka groups only: kafka-python's stuck
#: rejoin (above) fails about one round in 250 whatever the broker does, and a suite
#: that fails on a client's bug hides the broker's. The long runs draw every kind.
KINDS = ALL_KINDS if "SOAK_ROUNDS" in os.environ else (("aiokafka",),)


class Member:
    """One member in a thread of its own; it commits the next offset of the last record
    it received on each partition it holds (forgotten when the partition is revoked)."""

    kind = ""

    def __init__(self, name: str, bootstrap: str, strategy: str, rng: random.Random,
                 seen: soak.Seen, round_: soak.Round) -> None:
        self.name, self.bootstrap, self.strategy = name, bootstrap, strategy
        self.rng, self.seen, self.round = rng, seen, round_
        self.leave = threading.Event()
        self.asynchronous = rng.random() < soak.ASYNC_COMMITS
        self.every = rng.randrange(*soak.COMMIT_EVERY)
        self.assigned: set[int] = set()
        self.next_offsets: dict[int, int] = {}  # p -> the offset to commit
        self.error = ""
        self.thread = threading.Thread(target=self._thread, name=name, daemon=True)
        self.thread.start()

    def _thread(self) -> None:
        try:
            self._run()
        except BaseException:  # shown by the test: a member must not die
            self.error = traceback.format_exc()

    def _run(self) -> None:
        raise NotImplementedError

    def _received(self, batches: dict) -> int:  # type: ignore[type-arg]
        count = 0
        for tp, records in batches.items():
            for record in records:
                self.seen.received(tp.partition, record.offset, record.value)
                self.next_offsets[tp.partition] = record.offset + 1
                count += 1
        return count

    def _held(self, partitions: set[int]) -> None:
        self.assigned = partitions
        for partition in set(self.next_offsets) - partitions:
            del self.next_offsets[partition]

    def _revoked(self, revoked: object) -> None:
        for tp in revoked:  # type: ignore[attr-defined]
            self.next_offsets.pop(tp.partition, None)

    def _acknowledged(self, offsets: dict[int, int]) -> None:
        for partition, offset in offsets.items():
            self.seen.acked_commit(self.name, partition, offset)
            with self.round.lock:
                self.round.since_start[partition] = self.round.since_start.get(partition, 0) + 1

    def _sync_commit_starts(self) -> None:
        with self.round.lock:
            self.round.in_flight += 1

    def _sync_commit_ends(self) -> None:
        with self.round.lock:
            self.round.in_flight -= 1


class KafkaPythonMember(Member):
    kind = "kafka-python"
    sent = answered = 0  # async commits sent; the last one whose answer was noted

    def _run(self) -> None:
        member = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: object) -> None:
                member._revoked(revoked)

            def on_partitions_assigned(self, assigned: object) -> None:
                pass

        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=GROUP, client_id=self.name,
            auto_offset_reset="earliest", enable_auto_commit=False,
            session_timeout_ms=soak.SESSION_TIMEOUT_MS, heartbeat_interval_ms=250,
            partition_assignment_strategy=[KAFKA_PYTHON_ASSIGNORS[self.strategy]],
            reconnect_backoff_max_ms=200, retry_backoff_ms=100, request_timeout_ms=10000)
        try:
            while not self.leave.is_set():  # (kafka-python's stuck join: above)
                try:
                    consumer.partitions_for_topic(TOPIC)
                    break
                except kafka.errors.KafkaError:
                    time.sleep(0.1)  # the broker is down: again
            consumer.subscribe([TOPIC], listener=Listener())
            uncommitted, last_commit = 0, time.monotonic()
            deadline = time.monotonic() + 120
            while not self.leave.is_set() and time.monotonic() < deadline:
                try:
                    uncommitted += self._received(consumer.poll(timeout_ms=50))
                except kafka.errors.KafkaError:
                    time.sleep(0.05)  # the broker went away: poll again
                    continue
                self._held({tp.partition for tp in consumer.assignment()})
                due = uncommitted >= self.every or time.monotonic() - last_commit > 0.2
                if due and self.next_offsets and self.round.commits_open.is_set():
                    self._commit(consumer)
                    uncommitted, last_commit = 0, time.monotonic()
        finally:
            consumer.close(autocommit=False)  # LeaveGroup

    def _commit(self, consumer: KafkaConsumer) -> None:
        offsets = dict(self.next_offsets)
        request = {TopicPartition(TOPIC, p): OffsetAndMetadata(o, "", -1)
                   for p, o in offsets.items()}
        if self.asynchronous:  # answered through a later poll()
            self.sent += 1
            sent = self.sent

            def answered(_offsets: object, response: object) -> None:
                if not isinstance(response, Exception) and sent > self.answered:
                    self.answered = sent  # (kafka-python's callbacks newest first: above)
                    self._acknowledged(offsets)

            consumer.commit_async(request, callback=answered)
            return
        self._sync_commit_starts()
        try:
            consumer.commit(request)
        except kafka.errors.KafkaError:
            return  # a rebalance, the broker down: not acknowledged
        finally:
            self._sync_commit_ends()
        self._acknowledged(offsets)


class AiokafkaMember(Member):
    kind = "aiokafka"

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        member = self

        class Listener(aiokafka.ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: object) -> None:
                member._revoked(revoked)

            async def on_partitions_assigned(self, assigned: object) -> None:
                pass

        while True:
            consumer = aiokafka.AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=GROUP, client_id=self.name,
                auto_offset_reset="earliest", enable_auto_commit=False,
                session_timeout_ms=soak.SESSION_TIMEOUT_MS, heartbeat_interval_ms=250,
                partition_assignment_strategy=(AIOKAFKA_ASSIGNORS[self.strategy],),
                retry_backoff_ms=100, request_timeout_ms=10000)
            try:
                await consumer.start()
                break
            except aiokafka.errors.KafkaConnectionError:  # started as the broker died
                await consumer.stop()
                if self.leave.is_set():
                    return
                await asyncio.sleep(0.1)
        try:
            consumer.subscribe([TOPIC], listener=Listener())
            await self._consume(consumer)
        finally:
            try:
                await consumer.stop()  # LeaveGroup
            except asyncio.CancelledError:  # (aiokafka's Fetcher.close(): above)
                await consumer._client.close()

    async def _consume(self, consumer: aiokafka.AIOKafkaConsumer) -> None:
        uncommitted, last_commit = 0, time.monotonic()
        deadline = time.monotonic() + 120
        while not self.leave.is_set() and time.monotonic() < deadline:
            try:
                uncommitted += self._received(await consumer.getmany(timeout_ms=50))
            except aiokafka.errors.KafkaError:
                await asyncio.sleep(0.05)
                continue
            self._held({tp.partition for tp in consumer.assignment()})
            due = uncommitted >= self.every or time.monotonic() - last_commit > 0.2
            if due and self.next_offsets and self.round.commits_open.is_set():
                offsets = dict(self.next_offsets)
                self._sync_commit_starts()
                try:
                    await consumer.commit({aiokafka.TopicPartition(TOPIC, p): o
                                           for p, o in offsets.items()})
                except aiokafka.errors.KafkaError:
                    pass  # a rebalance, the broker down: not acknowledged
                else:
                    self._acknowledged(offsets)
                finally:
                    self._sync_commit_ends()
                uncommitted, last_commit = 0, time.monotonic()


def _member(kinds: tuple[str, ...], name: str, bootstrap: str, strategy: str,
            rng: random.Random, seen: soak.Seen, round_: soak.Round) -> Member:
    kind = KafkaPythonMember if rng.choice(kinds) == "kafka-python" else AiokafkaMember
    return kind(name, bootstrap, strategy, rng, seen, round_)


def _run_round(broker: BrokerProcess, rng: random.Random, seen: soak.Seen, round_no: int,
               flags: dict[str, object], where: str) -> BrokerProcess:
    """One round from a running broker to the running broker it leaves."""
    round_ = soak.Round()
    round_.commits_open.set()
    churn_open = threading.Event()
    churn_open.set()
    kinds = rng.choice(KINDS)
    strategy = rng.choice(sorted(KAFKA_PYTHON_ASSIGNORS if kinds == ("kafka-python",)
                                 else AIOKAFKA_ASSIGNORS))
    where = f"{where} {'+'.join(kinds)} {strategy}"
    bootstrap = broker.kafka_address
    members = [_member(kinds, f"r{round_no}-m{i}", bootstrap, strategy,
                       random.Random(rng.random()), seen, round_)
               for i in range(rng.randint(2, 3))]

    def churn(crng: random.Random) -> None:
        live, seq = list(members), len(members)
        while not round_.stop.wait(crng.uniform(*soak.CHURN_EVERY_S)):
            if not churn_open.is_set():
                continue
            live = [m for m in live if not m.leave.is_set()]
            if len(live) < soak.MEMBERS[1] and (len(live) <= soak.MEMBERS[0]
                                                or crng.random() < 0.5):
                seq += 1
                live.append(_member(kinds, f"r{round_no}-m{seq}", bootstrap, strategy,
                                    random.Random(crng.random()), seen, round_))
                members.append(live[-1])
            else:
                live.pop(crng.randrange(len(live))).leave.set()

    threads = [
        threading.Thread(target=soak._producer, daemon=True, args=(
            bootstrap, random.Random(rng.random()), seen, round_no, round_)),
        threading.Thread(target=churn, daemon=True, args=(random.Random(rng.random()),)),
    ]
    for thread in threads:
        thread.start()
    time.sleep(rng.uniform(*soak.KILL_AFTER_S))

    broker = soak.kill_restart_check(broker, rng, flags, seen, round_, churn_open, where)

    def live() -> list[Member]:
        return [m for m in members if not m.leave.is_set()]

    def recovered() -> bool:
        held = set().union(*(m.assigned for m in live()))
        with round_.lock:
            return len(held) == soak.PARTITIONS and all(round_.since_start.get(p) for p in held)

    try:
        soak._wait(recovered, "the group recovered", soak.RECOVERED_S)
    except AssertionError:  # the state at the timeout, not at the call
        with round_.lock:
            since = dict(round_.since_start)
        raise AssertionError(
            f"{where}: no commit acknowledged after the start on every partition within "
            f"{soak.RECOVERED_S} s (commits since: {since}; members: "
            f"{[(m.name, m.kind, sorted(m.assigned), m.next_offsets) for m in live()]})"
        ) from None
    round_.stop.set()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), f"{where}: a client thread hangs"
    for member in members:
        member.leave.set()
    for member in members:
        member.thread.join(60)
        assert not member.thread.is_alive(), f"{where}: {member.kind} {member.name} hangs"
        assert not member.error, f"{where}: {member.kind} {member.name} failed:\n{member.error}"
    return broker


@pytest.mark.timeout(90 + 60 * ROUNDS)
def test_kill_9_under_kafka_python_and_aiokafka_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(soak, "SEED", SEED)  # (in the shared checks' messages)
    soak.soak_rounds(tmp_path / "broker", SEED, ROUNDS, _run_round)
