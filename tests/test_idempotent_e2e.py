"""The idempotent producer against a real broker: requests that overtake each other, a
fault-free run at a few thousand records a second, and kill -9 with retries exhausted
or not. The log holds every acknowledged record, and no record twice."""

from __future__ import annotations

import random
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent import futures as cf
from dataclasses import dataclass, field
from typing import Any

import grpc

from broker_process import BrokerProcess
from metrics_polling import wait_for
from sentinel.client import Admin, Producer, errors
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc
from sentinel.record import build_batch, decode_records, iter_batches, parse_header

TS = 1_700_000_000_000


@dataclass(frozen=True)
class Stored:
    partition: int
    producer_id: int
    epoch: int
    sequence: int
    value: bytes


def read_back(broker: BrokerProcess, topic: str, partitions: int) -> list[Stored]:
    """Every record of the topic, with its producer id, epoch and sequence."""
    stored: list[Stored] = []
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        for partition in range(partitions):
            request = pb.ConsumeRequest(topic=topic, partition=partition, offset=0)
            for message in stub.Consume(request, timeout=30):
                for view in iter_batches(message.record_batches):
                    header = parse_header(view)
                    for record in decode_records(view):
                        delta = record.offset - header.base_offset
                        stored.append(
                            Stored(
                                partition,
                                header.producer_id,
                                header.producer_epoch,
                                header.base_sequence + delta,
                                record.value or b"",
                            )
                        )
    return stored


def assert_exactly_once(stored: list[Stored], acknowledged: set[bytes]) -> None:
    by_sequence = Counter((s.partition, s.producer_id, s.epoch, s.sequence) for s in stored)
    twice = [key for key, n in by_sequence.items() if n > 1]
    assert not twice, f"{len(twice)} (partition, producer id, epoch, sequence) twice: {twice[:5]}"
    by_value = Counter(s.value for s in stored)
    copies = {value: n for value, n in by_value.items() if n > 1}
    assert not copies, f"{len(copies)} records stored twice, e.g. {next(iter(copies))!r}"
    missing = acknowledged - by_value.keys()
    assert not missing, f"{len(missing)} acknowledged records are missing"


def produce_requests_by_code(broker: BrokerProcess) -> dict[str, float]:
    text = urllib.request.urlopen(broker.metrics_url, timeout=5).read().decode()
    codes: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("sentinel_requests_total{") and 'method="Produce"' in line:
            labels, _, value = line.rpartition(" ")
            code = labels.split('code="', 1)[1].split('"', 1)[0]
            codes[code] = codes.get(code, 0.0) + float(value)
    return codes


def test_requests_that_overtake_each_other_are_appended_in_sequence_order(
    broker: BrokerProcess,
) -> None:
    def request(seq: int, epoch: int = 0) -> pb.ProduceRequest:
        values = [(None, b"s%d-%d" % (epoch, seq + i), (), TS) for i in range(5)]
        data = build_batch(values, producer_id=42, producer_epoch=epoch, base_sequence=seq)
        return pb.ProduceRequest(topic="order", partition=0, record_batches=data, acks=pb.ACKS_ALL)

    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        stub.CreateTopic(pb.CreateTopicRequest(name="order", partitions=1))
        # A new producer's second batch first, then its first; then the same in a
        # known producer's stream, and in a new epoch.
        for later, earlier in ((request(5), request(0)), (request(15), request(10))):
            overtaking = stub.Produce.future(later, timeout=30)
            time.sleep(0.1)
            first = stub.Produce(earlier, timeout=30)
            second = overtaking.result()
            assert second.base_offset == first.base_offset + 5
        overtaking = stub.Produce.future(request(5, epoch=1), timeout=30)
        time.sleep(0.1)
        stub.Produce(request(0, epoch=1), timeout=30)
        overtaking.result()
    stored = read_back(broker, "order", 1)
    assert [s.sequence for s in stored if s.epoch == 0] == list(range(20))
    assert [s.sequence for s in stored if s.epoch == 1] == list(range(10))
    assert_exactly_once(stored, set())


@dataclass
class Writer:
    """A thread that sends numbered records through one producer until told to stop."""

    name: str
    producer: Producer
    topic: str
    rate: float  # records a second
    partitions: int = 0  # >0: record n goes to partition n % partitions (deep pipelines)
    acknowledged: set[bytes] = field(default_factory=set)
    failed: list[BaseException] = field(default_factory=list)  # records failed to us
    blocked: int = 0  # sends refused at once: the buffer stayed full (broker away)
    sent: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        started = time.monotonic()
        while not self.stop.is_set():
            due = started + self.sent / self.rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            value = b"%s-%07d" % (self.name.encode(), self.sent)
            self.sent += 1
            try:
                partition = self.sent % self.partitions if self.partitions else None
                future = self.producer.send(self.topic, value, partition=partition)
            except errors.ClientTimeoutError:  # buffer full while the broker is away
                self.blocked += 1
                continue
            future.add_done_callback(self._done(value))

    def _done(self, value: bytes) -> Callable[[cf.Future[Any]], None]:
        def note(future: cf.Future[Any]) -> None:
            with self.lock:
                if future.exception() is None:
                    self.acknowledged.add(value)
                else:
                    self.failed.append(future.exception())  # type: ignore[arg-type]

        return note


def run_writers(writers: list[Writer], during: Callable[[], None]) -> None:
    threads = [threading.Thread(target=w.run, daemon=True) for w in writers]
    for thread in threads:
        thread.start()
    try:
        during()
    finally:
        for writer in writers:
            writer.stop.set()
        for thread in threads:
            thread.join(30)
        for writer in writers:
            writer.producer.flush(60)


def test_a_fault_free_run_sees_no_out_of_order_sequence(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker(sync="always")
    with Admin(broker.address) as admin:
        admin.create_topic("steady", partitions=3)
    producers = [
        Producer(broker.address, acks=acks, linger_ms=1, enable_idempotence=True)
        for acks in ("all", 1, "all")
    ]
    writers = [
        Writer(f"p{i}", producer, "steady", rate=1_000.0, partitions=3)
        for i, producer in enumerate(producers)
    ]
    try:
        run_writers(writers, lambda: time.sleep(2.0))
    finally:
        for producer in producers:
            producer.close()
    assert all(not w.failed for w in writers), [w.failed[:3] for w in writers]
    codes = produce_requests_by_code(broker)
    assert codes.get("OUT_OF_ORDER_SEQUENCE", 0) == 0, codes
    assert codes.get("OK", 0) > 100  # many requests: pipelined, not one big batch
    acknowledged = set().union(*(w.acknowledged for w in writers))
    assert len(acknowledged) == sum(w.sent for w in writers)
    assert_exactly_once(read_back(broker, "steady", 3), acknowledged)


def kill_9_rounds(
    start_broker: Callable[..., BrokerProcess],
    rounds: int,
    exhaust: bool,
    **producer_options: Any,
) -> tuple[list[Writer], set[bytes]]:
    """``rounds`` times: writers send, the broker is killed with SIGKILL at a random
    moment and started again; with ``exhaust``, only once some batch has run out of
    retries, so that the batches queued behind it outlive the restart."""
    broker = start_broker(sync="always")
    with Admin(broker.address) as admin:
        admin.create_topic("crash", partitions=3)
    rng = random.Random(6)
    writers: list[Writer] = []
    for round_ in range(rounds):
        producers = [
            Producer(broker.address, acks=acks, linger_ms=1, **producer_options)
            for acks in ("all", 1)
        ]
        mine = [
            Writer(f"r{round_}p{i}", producer, "crash", rate=800.0, partitions=3)
            for i, producer in enumerate(producers)
        ]
        writers.extend(mine)

        def crash(mine: list[Writer] = mine) -> None:
            time.sleep(rng.uniform(0.3, 0.6))
            broker.kill()  # SIGKILL while sends are in flight
            time.sleep(rng.uniform(0.1, 0.4))
            if exhaust:
                wait_for(lambda: any(w.failed for w in mine), timeout=30)
            broker.start()
            time.sleep(0.5)

        try:
            run_writers(mine, crash)
        finally:
            for producer in producers:
                producer.close()
    acknowledged = set().union(*(w.acknowledged for w in writers))
    assert_exactly_once(read_back(broker, "crash", 3), acknowledged)
    return writers, acknowledged


def test_kill_9_with_retries_exhausted_stores_nothing_twice(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    writers, acknowledged = kill_9_rounds(
        start_broker,
        rounds=2,
        exhaust=True,
        # Each batch retries for 1.4 s or more, one batch at a time: the oldest runs
        # out while the broker is down and the next outlives the restart (the issue's
        # case: those were re-numbered into a new epoch and stored a second time).
        retries=3,
        retry_backoff_ms=200,
        request_timeout_ms=400,
        max_block_ms=100,
    )
    assert any(w.failed for w in writers)  # some batches did fail for good
    assert acknowledged


def test_kill_9_with_retries_left_stores_everything_once(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    writers, acknowledged = kill_9_rounds(
        start_broker, rounds=2, exhaust=False, retries=40, retry_backoff_ms=20, max_block_ms=30_000
    )
    assert all(not w.failed for w in writers), [w.failed[:3] for w in writers]
    assert len(acknowledged) == sum(w.sent for w in writers)
