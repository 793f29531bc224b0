"""The idempotent producer's numbering rules against a model broker: a batch that may
have been stored is never re-sent under a new epoch or sequence (KIP-360), so whatever
the faults, the log holds every acknowledged record once and no record twice."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent import futures as cf
from dataclasses import dataclass, field
from typing import Any

import grpc
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.client import Producer, errors
from sentinel.client._accumulator import Accumulator, Outcome, ProducerBatch
from sentinel.client._future import BatchResult
from sentinel.client.types import TopicPartition
from sentinel.log.errors import OutOfOrderSequenceError as LogOutOfOrder
from sentinel.log.producer_state import ProducerEntry, apply_batch, check_append
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc
from sentinel.record import decode_records, parse_header

TP = TopicPartition("t", 0)
TS = 1_700_000_000_000


def make_acc(**overrides: object) -> Accumulator:
    options: dict[str, object] = {
        "batch_size": 1000,
        "linger_s": 0.0,
        "compression": 0,
        "max_in_flight": 5,
        "retries": 2,
        "retry_backoff_s": 0.1,
        "producer_id": 77,
        "sink_factory": BatchResult,
    }
    options.update(overrides)
    return Accumulator(**options)  # type: ignore[arg-type]


def send(acc: Accumulator, values: list[bytes], now: float = 0.0) -> None:
    for value in values:
        acc.append(*TP, None, value, (), TS, now)
    acc.close_open()


def drain(acc: Accumulator, now: float) -> list[ProducerBatch]:
    batches, _ = acc.drain(now)
    for batch in batches:
        Accumulator.encode(batch)
    return batches


def numbering(batch: ProducerBatch) -> tuple[int, int]:
    header = parse_header(batch.data or b"")
    return header.producer_epoch, header.base_sequence


UNAVAILABLE = errors.BrokerUnavailableError("connection lost")
OUT_OF_ORDER = errors.OutOfOrderSequenceError("gap", reason="OUT_OF_ORDER_SEQUENCE")


def test_batches_queued_for_retry_keep_their_epoch_when_one_fails_for_good() -> None:
    acc = make_acc(batch_size=60, retries=1)
    send(acc, [b"r%02d" % i for i in range(4)])  # four batches
    sent = drain(acc, 0.0)
    assert len(sent) == 4
    first = {id(b): numbering(b) for b in sent}
    for batch in sent:  # the broker died: nobody knows what it stored
        assert acc.failed(batch, UNAVAILABLE, 0.0) is Outcome.RETRY
    (head,) = drain(acc, 1.0)
    assert acc.failed(head, UNAVAILABLE, 1.0) is Outcome.FAILED  # retries exhausted
    send(acc, [b"new"], now=1.0)
    for batch in sent[1:]:  # retried alone, oldest first, in their own numbering
        (again,) = drain(acc, 5.0)
        assert again is batch and numbering(again) == first[id(batch)]
        # the head was not stored: the broker sees a gap, so this one cannot go in
        assert acc.failed(again, OUT_OF_ORDER, 5.0) is Outcome.FAILED
    (fresh,) = drain(acc, 6.0)  # nothing unresolved: now the new epoch
    assert numbering(fresh) == (1, 0)


def test_a_resolved_gap_keeps_the_numbering_of_what_follows() -> None:
    acc = make_acc(batch_size=60, retries=1)
    send(acc, [b"r%02d" % i for i in range(2)])  # two batches
    a, b = drain(acc, 0.0)
    numbered = numbering(b)
    assert acc.failed(a, UNAVAILABLE, 0.0) is Outcome.RETRY
    assert acc.failed(b, UNAVAILABLE, 0.0) is Outcome.RETRY
    (again,) = drain(acc, 1.0)
    assert acc.failed(again, UNAVAILABLE, 1.0) is Outcome.FAILED
    (retried,) = drain(acc, 2.0)
    assert retried is b and numbering(b) == numbered  # not re-stamped into epoch 1
    assert acc.succeeded(b) is Outcome.DONE  # a was stored after all
    send(acc, [b"next"], now=2.0)
    (after,) = drain(acc, 3.0)
    assert numbering(after)[0] == 1  # a new epoch all the same: cheap and always safe


# --- a model of the broker, and random faults -------------------------------------


@dataclass
class ModelBroker:
    """One partition: the log's producer-state rules, requests handled in order."""

    entry: ProducerEntry | None = None
    log: list[bytes] = field(default_factory=list)

    def handle(self, data: bytes, store: bool) -> BaseException | None:
        header = parse_header(data)
        try:
            if check_append(self.entry, header) is not None:
                return None  # a duplicate: answered with the original offset
        except LogOutOfOrder:
            return OUT_OF_ORDER
        if not store:
            return UNAVAILABLE  # lost before it reached the log
        self.entry = apply_batch(self.entry, header, len(self.log), TS)
        self.log.extend(r.value or b"" for r in decode_records(data))
        return None


FAULT = st.sampled_from(["ok", "ok", "lost-before", "lost-after", "too-large"])


@settings(max_examples=200, deadline=None)
@given(
    retries=st.integers(0, 3),
    max_in_flight=st.integers(1, 5),
    steps=st.lists(st.tuples(st.integers(0, 3), FAULT, st.integers(0, 3)), max_size=40),
)
def test_no_fault_stores_a_record_twice_or_loses_an_acknowledged_one(
    retries: int, max_in_flight: int, steps: list[tuple[int, str, int]]
) -> None:
    acc = make_acc(batch_size=70, retries=retries, max_in_flight=max_in_flight)
    broker = ModelBroker()
    wire: list[ProducerBatch] = []  # in flight, in the order sent
    acked: set[bytes] = set()
    counter = 0
    now = 0.0

    def respond(fault: str) -> None:
        batch = wire.pop(0)
        data = batch.data or b""
        if fault == "too-large":
            error: BaseException | None = errors.MessageTooLargeError(
                "big", reason="MESSAGE_TOO_LARGE"
            )
        else:
            error = broker.handle(data, store=fault != "lost-before")
            if fault == "lost-after" and error is None:
                error = UNAVAILABLE  # stored, but the answer was lost
        if error is None:
            assert acc.succeeded(batch) is Outcome.DONE
            acked.update(r.value or b"" for r in decode_records(data))
        else:
            acc.failed(batch, error, now)

    for new_records, fault, answers in steps:
        for _ in range(new_records):
            acc.append(*TP, None, b"v%04d" % counter, (), TS, now)
            counter += 1
        now += 0.5
        wire.extend(drain(acc, now))
        for _ in range(min(answers, len(wire))):
            respond(fault)
    acc.close_open()
    for _ in range(10_000):  # then a healthy broker until everything is resolved
        if not len(acc):
            break
        now += 2.0
        wire.extend(drain(acc, now))
        while wire:
            respond("ok")
    assert not len(acc)
    assert len(broker.log) == len(set(broker.log)), "a record was stored twice"
    assert acked <= set(broker.log), "an acknowledged record is missing"


# --- the real producer against a broker that stores a batch and loses the answer --------


class ForgetfulBroker(pb_grpc.SentinelServicer):
    """One partition with the log's producer-state rules. The first send of every batch
    of epoch 0 is stored but answered UNAVAILABLE (the broker died after the write);
    the retry of sequence 1 is refused UNAVAILABLE again, so that batch runs out of
    retries while those behind it are waiting to be retried."""

    def __init__(self) -> None:
        self.model = ModelBroker()
        self.seen: Counter[tuple[int, int]] = Counter()
        self.lock = threading.Lock()

    def FetchMetadata(self, request: pb.MetadataRequest, context: Any) -> pb.MetadataResponse:
        topics = [
            pb.TopicInfo(name=name, partitions=[pb.PartitionInfo(partition=0, leader=0)])
            for name in request.topics
        ]
        return pb.MetadataResponse(
            brokers=[pb.Broker(node_id=0, host="127.0.0.1", port=1)], topics=topics
        )

    def Produce(self, request: pb.ProduceRequest, context: Any) -> pb.ProduceResponse:
        header = parse_header(request.record_batches)
        key = (header.producer_epoch, header.base_sequence)
        with self.lock:
            self.seen[key] += 1
            attempt = self.seen[key]
            if key == (0, 1) and attempt == 2:
                context.abort(grpc.StatusCode.UNAVAILABLE, "Socket closed")
            error = self.model.handle(request.record_batches, store=True)
        if error is not None:
            context.set_trailing_metadata((("sentinel-error", "OUT_OF_ORDER_SEQUENCE"),))
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "out of order")
        if header.producer_epoch == 0 and attempt == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "Stream removed")
        return pb.ProduceResponse(topic=request.topic, partition=0, base_offset=0)


def test_the_producer_never_stores_a_batch_twice_when_one_runs_out_of_retries() -> None:
    broker = ForgetfulBroker()
    server = grpc.server(cf.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_SentinelServicer_to_server(broker, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with Producer(
            f"127.0.0.1:{port}", retries=1, retry_backoff_ms=10, linger_ms=50, batch_size=1
        ) as producer:
            producer.send("t", b"warm-up").result(10)  # sequence 0; then five at once
            futures = [producer.send("t", b"r%d" % i) for i in range(5)]
            producer.flush(10)
            outcomes = [f.exception(10) for f in futures]
            after = producer.send("t", b"after").result(10)
    finally:
        server.stop(None)
    assert after is not None
    log = broker.model.log
    assert len(log) == len(set(log)), f"a record was stored twice: {log}"
    assert set(log) >= {b"r%d" % i for i, error in enumerate(outcomes) if error is None}
    assert any(error is not None for error in outcomes)  # one did run out of retries
    assert (1, 0) in broker.seen  # "after" went out in a new epoch
