"""The producer's sender against a scripted in-process gRPC broker: retries resend the
same bytes, refusals reach the futures, metadata is refreshed on NOT_LEADER."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures as cf
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from sentinel.client import Producer, errors
from sentinel.errors import InvalidArgumentError
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc
from sentinel.record import iter_batches, parse_header

Refusal = tuple[grpc.StatusCode, str]


@dataclass
class ScriptedBroker(pb_grpc.SentinelServicer):
    """Answers Produce from a script of refusals, then stores batches by offset."""

    partitions: int = 1
    refusals: list[Refusal] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    metadata_calls: int = 0
    next_offset: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    gate: threading.Event = field(default_factory=threading.Event)

    def FetchMetadata(self, request: pb.MetadataRequest, context: Any) -> pb.MetadataResponse:
        with self.lock:
            self.metadata_calls += 1
        topics = [
            pb.TopicInfo(
                name=name,
                partitions=[
                    pb.PartitionInfo(partition=p, leader=0) for p in range(self.partitions)
                ],
            )
            for name in request.topics
        ]
        return pb.MetadataResponse(
            brokers=[pb.Broker(node_id=0, host="127.0.0.1", port=1)], topics=topics
        )

    def Produce(self, request: pb.ProduceRequest, context: Any) -> pb.ProduceResponse:
        self.gate.wait(10)
        with self.lock:
            self.received.append(request.record_batches)
            refusal = self.refusals.pop(0) if self.refusals else None
            if refusal is None:
                base = self.next_offset
                for view in iter_batches(request.record_batches):
                    self.next_offset += parse_header(view).record_count
        if refusal is not None:
            status, reason = refusal
            context.set_trailing_metadata((("sentinel-error", reason),))
            context.abort(status, f"scripted {reason}")
        return pb.ProduceResponse(
            topic=request.topic,
            partition=request.partition,
            base_offset=base,
            log_append_time_ms=-1,
        )


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedBroker, str]]:
    broker = ScriptedBroker()
    broker.gate.set()
    server = grpc.server(cf.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_SentinelServicer_to_server(broker, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield broker, f"127.0.0.1:{port}"
    server.stop(None)


def producer(address: str, **options: Any) -> Producer:
    options.setdefault("retry_backoff_ms", 10)
    options.setdefault("linger_ms", 0)
    return Producer(address, **options)


def test_a_retriable_refusal_resends_the_same_batch(scripted: tuple[ScriptedBroker, str]) -> None:
    broker, address = scripted
    broker.refusals = [(grpc.StatusCode.UNAVAILABLE, "NOT_LEADER_OR_FOLLOWER")] * 2
    with producer(address) as p:
        meta = p.send("t", b"hello").result(10)
        calls_before = broker.metadata_calls
    assert meta.offset == 0
    assert len(broker.received) == 3
    assert broker.received[0] == broker.received[1] == broker.received[2]
    header = parse_header(broker.received[0])
    assert header.producer_id == p.producer_id and header.base_sequence == 0
    assert calls_before >= 2  # the first lookup, then refreshes after NOT_LEADER


def test_a_refusal_that_is_not_retriable_fails_the_records(
    scripted: tuple[ScriptedBroker, str],
) -> None:
    broker, address = scripted
    broker.refusals = [(grpc.StatusCode.INVALID_ARGUMENT, "MESSAGE_TOO_LARGE")]
    with producer(address) as p:
        failed = p.send("t", b"big")
        with pytest.raises(errors.MessageTooLargeError):
            failed.result(10)
        ok = p.send("t", b"small").result(10)
    assert len(broker.received) == 2
    assert ok.offset == 0
    retried = parse_header(broker.received[1])
    assert (retried.producer_epoch, retried.base_sequence) == (1, 0)  # a new epoch


def test_retries_run_out(scripted: tuple[ScriptedBroker, str]) -> None:
    broker, address = scripted
    broker.refusals = [(grpc.StatusCode.UNAVAILABLE, "NOT_ENOUGH_REPLICAS")] * 10
    with producer(address, retries=2) as p, pytest.raises(errors.NotEnoughReplicasError):
        p.send("t", b"x").result(10)
    assert len(broker.received) == 3


def test_callbacks_run_and_flush_waits(scripted: tuple[ScriptedBroker, str]) -> None:
    _, address = scripted
    seen: list[int] = []
    done = threading.Event()
    with producer(address, linger_ms=50) as p:
        handles = [p.send("t", b"%d" % i) for i in range(100)]

        def note(f: cf.Future[Any]) -> None:
            seen.append(f.result().offset)
            if len(seen) == 100:
                done.set()

        for handle in handles:
            handle.add_done_callback(note)
        p.flush(10)
        assert all(h.done() for h in handles)
        assert done.wait(10)
    assert sorted(seen) == list(range(100))


def test_buffer_memory_blocks_send_until_space_or_timeout(
    scripted: tuple[ScriptedBroker, str],
) -> None:
    broker, address = scripted
    with producer(address, buffer_memory=1000, batch_size=500, max_block_ms=200) as p:
        p.send("t", b"first").result(10)  # metadata known
        broker.gate.clear()
        with pytest.raises(errors.ClientTimeoutError):
            for _ in range(100):
                p.send("t", b"x" * 100)
        broker.gate.set()
        p.flush(10)
        assert p.send("t", b"after").result(10).offset > 0


def test_a_batch_that_cannot_be_encoded_fails_alone(scripted: tuple[ScriptedBroker, str]) -> None:
    broker, address = scripted
    with producer(address) as p:
        bad = p.send("t", b"x", timestamp_ms=2**63 + 5)  # does not fit the batch header
        with pytest.raises(InvalidArgumentError):
            bad.result(10)
        assert p.send("t", b"fine").result(10).offset == 0
    header = parse_header(broker.received[-1])
    assert (header.producer_epoch, header.base_sequence) == (1, 0)
