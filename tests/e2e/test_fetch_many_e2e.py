"""``FetchMany`` against a real ``sentinel-server``: many partitions in one call, each
partition's refusal in its own result (as a Fetch of it alone would fail), the long-poll
bounded by ``max_wait_ms``, ``min_bytes``, the per-partition and per-response byte
limits, and the bound on positions per request (``--max-partitions``). Timing
assertions are one-sided or generous: they check what was waited for, not how fast the
machine is."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from broker_process import BrokerProcess
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc

GENEROUS_S = 10.0
"""The most any answer expected "at once" may take on a loaded machine."""


@pytest.fixture
def stub(broker: BrokerProcess) -> Iterator[pb_grpc.SentinelStub]:
    channel = grpc.insecure_channel(broker.address)
    stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
    stub.CreateTopic(pb.CreateTopicRequest(name="t", partitions=3), timeout=30)
    yield stub
    channel.close()


def produce(stub: pb_grpc.SentinelStub, partition: int, *values: bytes) -> None:
    """One batch per value (one Produce each)."""
    for value in values:
        stub.Produce(
            pb.ProduceRequest(topic="t", partition=partition, records=[pb.Record(value=value)]),
            timeout=30,
        )


def position(
    partition: int, offset: int, max_bytes: int = 0, topic: str = "t"
) -> pb.FetchPosition:
    return pb.FetchPosition(topic=topic, partition=partition, offset=offset, max_bytes=max_bytes)


def fetch_many(
    stub: pb_grpc.SentinelStub, *positions: pb.FetchPosition, **options: int
) -> tuple[pb.FetchManyResponse, float]:
    """The answer and how long it took."""
    started = time.monotonic()
    resp = stub.FetchMany(pb.FetchManyRequest(positions=positions, **options), timeout=60)
    return resp, time.monotonic() - started


def offsets(result: pb.FetchedPartition) -> list[int]:
    return [r.offset for r in result.records]


def test_several_partitions_and_a_refusal_per_partition(stub: pb_grpc.SentinelStub) -> None:
    produce(stub, 0, b"a", b"b")
    produce(stub, 1, b"c")
    resp, _ = fetch_many(
        stub,
        position(0, 0),
        position(1, 0),
        position(7, 0),  # no such partition
        position(0, 0, topic="nope"),  # no such topic
        position(2, 50),  # past the end of an empty partition
        position(0, 1),
        max_wait_ms=5000,
        decode_records=True,
    )
    got = [(p.topic, p.partition) for p in resp.partitions]
    assert got == [("t", 0), ("t", 1), ("t", 7), ("nope", 0), ("t", 2), ("t", 0)]
    first, second, unknown, no_topic, out_of_range, again = resp.partitions
    assert [r.value for r in first.records] == [b"a", b"b"]
    assert (first.high_watermark, first.next_offset, first.HasField("error")) == (2, 2, False)
    assert [r.value for r in second.records] == [b"c"]
    assert offsets(again) == [1]  # decoded from the offset asked, not the batch's start
    assert (unknown.error.reason, unknown.error.code) == ("UNKNOWN_TOPIC_OR_PARTITION", 3)
    assert unknown.error.status == grpc.StatusCode.NOT_FOUND.value[0]
    assert "7" in unknown.error.message and not unknown.record_batches
    assert no_topic.error.reason == "UNKNOWN_TOPIC_OR_PARTITION"
    assert (out_of_range.error.reason, out_of_range.error.code) == ("OFFSET_OUT_OF_RANGE", 1)
    assert out_of_range.error.status == grpc.StatusCode.OUT_OF_RANGE.value[0]
    assert dict(out_of_range.error.metadata) == {
        "sentinel-log-start-offset": "0",
        "sentinel-log-end-offset": "0",
    }


def test_the_same_refusal_as_a_fetch_of_the_partition_alone(stub: pb_grpc.SentinelStub) -> None:
    produce(stub, 0, b"a")
    resp, _ = fetch_many(stub, position(0, 9))
    (result,) = resp.partitions
    with pytest.raises(grpc.RpcError) as info:
        stub.Fetch(pb.FetchRequest(topic="t", partition=0, offset=9), timeout=30)
    call = info.value
    assert result.error.status == call.code().value[0]  # type: ignore[attr-defined]
    assert result.error.message == call.details()  # type: ignore[attr-defined]
    trailing = dict(call.trailing_metadata())  # type: ignore[attr-defined]
    assert trailing == {"sentinel-error": result.error.reason, **result.error.metadata}


def test_max_wait_is_honoured_when_nothing_arrives(stub: pb_grpc.SentinelStub) -> None:
    produce(stub, 1, b"x")
    resp, took = fetch_many(
        stub, position(0, 0), position(1, 1), position(2, 0), max_wait_ms=600
    )
    assert took >= 0.55  # waited (one-sided: a slow machine only waits longer)
    assert took < GENEROUS_S
    for result, offset in zip(resp.partitions, (0, 1, 0), strict=True):
        assert not result.HasField("error") and not result.record_batches
        assert result.next_offset == offset
    assert [p.high_watermark for p in resp.partitions] == [0, 1, 0]


def later(delay: float, action: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), action()), daemon=True)
    thread.start()
    return thread


def test_a_record_ends_the_long_poll_of_any_of_its_partitions(
    stub: pb_grpc.SentinelStub,
) -> None:
    thread = later(0.3, lambda: produce(stub, 2, b"late"))
    resp, took = fetch_many(
        stub, position(0, 0), position(1, 0), position(2, 0), max_wait_ms=30_000,
        decode_records=True,
    )  # fmt: skip
    thread.join()
    assert took < GENEROUS_S  # not the 30 s of max_wait
    assert [r.value for r in resp.partitions[2].records] == [b"late"]


def test_min_bytes_holds_the_answer_until_enough_is_there(stub: pb_grpc.SentinelStub) -> None:
    thread = later(0.1, lambda: produce(stub, 0, b"small"))
    resp, took = fetch_many(
        stub, position(0, 0), position(1, 0), max_wait_ms=1500, min_bytes=100_000,
        decode_records=True,
    )  # fmt: skip
    thread.join()
    assert took >= 1.4  # the record alone is short of min_bytes: max_wait ended it
    assert [r.value for r in resp.partitions[0].records] == [b"small"]

    thread = later(0.1, lambda: produce(stub, 1, b"x" * 3000, b"y" * 3000))
    resp, took = fetch_many(stub, position(1, 0), max_wait_ms=30_000, min_bytes=5000)
    thread.join()
    assert took < GENEROUS_S  # enough once both batches are there
    assert resp.partitions[0].next_offset == 2


def test_the_partition_and_response_byte_limits(stub: pb_grpc.SentinelStub) -> None:
    produce(stub, 0, b"a" * 1000, b"b" * 1000, b"c" * 1000)
    produce(stub, 1, b"d" * 1000, b"e" * 1000)
    whole, _ = fetch_many(stub, position(0, 0), position(1, 0))
    size = len(whole.partitions[0].record_batches) // 3  # the three batches are alike
    assert len(whole.partitions[1].record_batches) == 2 * size

    # A partition's limit: whole batches up to it; at least one, however small it is.
    limited = position(0, 0, max_bytes=2 * size + 10), position(1, 0, max_bytes=1)
    resp, _ = fetch_many(stub, *limited)
    assert [len(p.record_batches) for p in resp.partitions] == [2 * size, size]
    assert [p.next_offset for p in resp.partitions] == [2, 1]

    # The response's limit: partition 0 takes two batches, partition 1's first would
    # pass it and is left for the next fetch (its watermark still said).
    resp, _ = fetch_many(stub, position(0, 0), position(1, 0), max_bytes=2 * size + 10)
    first, second = resp.partitions
    assert len(first.record_batches) == 2 * size
    assert (second.record_batches, second.next_offset, second.high_watermark) == (b"", 0, 2)

    # A response limit below the first batch still returns that batch (KIP-74).
    resp, _ = fetch_many(stub, position(0, 0), position(1, 0), max_bytes=1)
    assert [len(p.record_batches) for p in resp.partitions] == [size, 0]


def test_positions_past_the_broker_limit_are_refused(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker(max_partitions=4)
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        stub.CreateTopic(pb.CreateTopicRequest(name="t", partitions=2), timeout=30)
        resp, _ = fetch_many(stub, *(position(i % 2, 0) for i in range(4)))
        assert len(resp.partitions) == 4
        with pytest.raises(grpc.RpcError) as info:
            fetch_many(stub, *(position(i % 2, 0) for i in range(5)))
        call = info.value
        assert call.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
        trailing = dict(call.trailing_metadata())  # type: ignore[attr-defined]
        assert trailing["sentinel-error"] == "POLICY_VIOLATION"
        assert "--max-partitions" in call.details()  # type: ignore[attr-defined]


def test_a_malformed_request_is_refused(broker: BrokerProcess) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        raw = channel.unary_unary("/sentinel.v1.Sentinel/FetchMany")
        with pytest.raises(grpc.RpcError) as info:
            raw(b"\x0a\xff\xff\xff", timeout=30)  # a field whose length runs past the end
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
