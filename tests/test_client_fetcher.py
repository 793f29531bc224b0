"""The consumer's fetch driver (``client/_fetcher`` + ``_fetch_calls``) against a fake
broker on the test's own event loop: one FetchMany for every fetchable partition, its
answers stored, a long-poll sent again after a seek, per-partition refusals recovered
from as a Fetch's, the prefetch bound, and the fall back to Fetch for a broker without
FetchMany."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
import pytest

from sentinel.client import errors
from sentinel.client._fetch_calls import partition_error
from sentinel.client._fetcher import FetchConfig, Fetcher
from sentinel.client.types import TopicPartition
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.record import BatchBuilder

TS = 1_700_000_000_000
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
WAIT_S = 5.0


def batch(base_offset: int, count: int) -> bytes:
    builder = BatchBuilder(base_offset=base_offset)
    for i in range(count):
        builder.append(None, b"r%d" % (base_offset + i), (), TS + i)
    return builder.build()


class FakeBroker:
    """A stub whose calls wait until the test answers them, and the metadata that
    routes every partition to it."""

    def __init__(self) -> None:
        self.calls: asyncio.Queue[tuple[str, Any, asyncio.Future[Any]]] = asyncio.Queue()
        self.leaders: list[tuple[TopicPartition, str | None]] = []

    # --- the stub
    def FetchMany(self, request: pb.FetchManyRequest, timeout: float) -> asyncio.Future[Any]:
        return self._call("FetchMany", request)

    def Fetch(self, request: pb.FetchRequest, timeout: float) -> asyncio.Future[Any]:
        return self._call("Fetch", request)

    def _call(self, method: str, request: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.calls.put_nowait((method, request, future))
        return future

    async def next_call(self) -> tuple[str, Any, asyncio.Future[Any]]:
        while True:
            method, request, future = await asyncio.wait_for(self.calls.get(), WAIT_S)
            if not future.cancelled():
                return method, request, future

    def pending(self) -> int:
        return self.calls.qsize()

    # --- the metadata
    def leader_address(self, tp: TopicPartition) -> str | None:
        return None

    def stub_at(self, address: str | None) -> FakeBroker:
        return self

    def note_leader(self, tp: TopicPartition, address: str | None) -> None:
        self.leaders.append((tp, address))

    async def fetch(self, topics: Any = (), **kwargs: Any) -> None:
        return None


def positions(request: pb.FetchManyRequest) -> dict[int, int]:
    return {p.partition: p.offset for p in request.positions}


def rpc_error(status: grpc.StatusCode, details: str, *trailing: tuple[str, str]) -> Exception:
    return grpc.aio.AioRpcError(
        status, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details=details
    )


async def started(
    broker: FakeBroker, count: int, max_bytes: int = 1 << 20, reset: str = "earliest"
) -> Fetcher:
    """A fetcher owning t-0..t-(count-1), each at offset 0."""
    config = FetchConfig(
        fetch_max_bytes=max_bytes,
        fetch_max_wait_ms=500,
        auto_offset_reset=reset,
        request_timeout_ms=1000,
        retry_backoff_ms=10,
    )
    fetcher = Fetcher(config, broker)  # type: ignore[arg-type]
    fetcher.bind(asyncio.get_running_loop())
    tps = [TopicPartition("t", p) for p in range(count)]
    fetcher.assign(tps)
    for tp in tps:  # before the driver first runs: no position lookups
        fetcher.seek(tp, 0)
        fetcher.restart(tp)
    return fetcher


async def test_one_fetch_many_covers_every_partition_and_its_answers_are_stored() -> None:
    broker = FakeBroker()
    fetcher = await started(broker, 3)
    method, request, answer = await broker.next_call()
    assert method == "FetchMany"
    assert positions(request) == {0: 0, 1: 0, 2: 0}
    assert request.max_wait_ms == 500 and request.min_bytes == 1
    assert [p.max_bytes for p in request.positions] == [1 << 20] * 3
    assert broker.pending() == 0  # one call for the broker, not one per partition
    answer.set_result(
        pb.FetchManyResponse(
            partitions=[
                pb.FetchedPartition(topic="t", partition=0, high_watermark=0),
                pb.FetchedPartition(
                    topic="t", partition=1, record_batches=batch(0, 3), high_watermark=3
                ),
                pb.FetchedPartition(topic="t", partition=2, high_watermark=0),
            ]
        )
    )
    method, request, _answer = await broker.next_call()
    assert positions(request) == {0: 0, 1: 3, 2: 0}
    assert [(r.partition, r.offset) for r in fetcher.collect(10)] == [(1, 0), (1, 1), (1, 2)]
    await fetcher.close()


async def test_a_seek_sends_a_long_poll_again_from_the_new_offset() -> None:
    broker = FakeBroker()
    fetcher = await started(broker, 2)
    _method, _request, first = await broker.next_call()
    fetcher.seek(TopicPartition("t", 1), 7)
    fetcher.restart(TopicPartition("t", 1))
    method, request, _answer = await broker.next_call()
    assert first.cancelled()
    assert method == "FetchMany"
    assert positions(request) == {0: 0, 1: 7}
    await fetcher.close()


async def test_an_answer_for_an_older_generation_is_dropped() -> None:
    """A seek while a call that was expected to bring data is out: that call is left to
    answer, its batches for the seeked partition are not stored."""
    broker = FakeBroker()
    fetcher = await started(broker, 1)
    _method, _request, first = await broker.next_call()
    first.set_result(pb.FetchManyResponse(partitions=[
        pb.FetchedPartition(topic="t", partition=0, high_watermark=9),  # known data: 0..9
    ]))  # fmt: skip
    _method, request, second = await broker.next_call()
    assert positions(request) == {0: 0}
    fetcher.seek(TopicPartition("t", 0), 5)
    fetcher.restart(TopicPartition("t", 0))
    await asyncio.sleep(0.05)
    assert not second.done()  # not cancelled: its answer comes at once
    second.set_result(pb.FetchManyResponse(partitions=[
        pb.FetchedPartition(
            topic="t", partition=0, record_batches=batch(0, 9), high_watermark=9
        ),
    ]))  # fmt: skip
    _method, request, _third = await broker.next_call()
    assert positions(request) == {0: 5}
    assert fetcher.collect(100) == []
    await fetcher.close()


async def test_per_partition_refusals_are_recovered_from_as_a_fetchs() -> None:
    broker = FakeBroker()
    fetcher = await started(broker, 3)
    _method, _request, answer = await broker.next_call()
    out_of_range = pb.PartitionError(
        code=1, reason="OFFSET_OUT_OF_RANGE", message="gone",
        status=grpc.StatusCode.OUT_OF_RANGE.value[0],
        metadata={"sentinel-log-start-offset": "4", "sentinel-log-end-offset": "9"},
    )  # fmt: skip
    not_leader = pb.PartitionError(
        code=6, reason="NOT_LEADER_OR_FOLLOWER", message="moved",
        status=grpc.StatusCode.UNAVAILABLE.value[0], metadata={"sentinel-leader": "h:2"},
    )  # fmt: skip
    answer.set_result(
        pb.FetchManyResponse(
            partitions=[
                pb.FetchedPartition(topic="t", partition=0, error=out_of_range),
                pb.FetchedPartition(topic="t", partition=1, error=not_leader),
                pb.FetchedPartition(topic="t", partition=2, high_watermark=0),
            ]
        )
    )
    seen: dict[int, int] = {}
    while seen.get(0) != 4 or 1 not in seen:  # each comes back once it recovered
        _method, request, answer = await broker.next_call()
        seen.update(positions(request))
        answer.cancel()
    assert (TopicPartition("t", 1), "h:2") in broker.leaders
    await fetcher.close()


async def test_with_reset_none_an_out_of_range_partition_raises_through_collect() -> None:
    broker = FakeBroker()
    fetcher = await started(broker, 1, reset="none")
    _method, _request, answer = await broker.next_call()
    error = pb.PartitionError(
        code=1, reason="OFFSET_OUT_OF_RANGE", message="gone",
        status=grpc.StatusCode.OUT_OF_RANGE.value[0],
        metadata={"sentinel-log-start-offset": "4", "sentinel-log-end-offset": "9"},
    )  # fmt: skip
    answer.set_result(pb.FetchManyResponse(partitions=[
        pb.FetchedPartition(topic="t", partition=0, error=error),
    ]))  # fmt: skip
    for _ in range(100):
        await asyncio.sleep(0.01)
        if fetcher.partitions[TopicPartition("t", 0)].error is not None:
            break
    with pytest.raises(errors.OffsetOutOfRangeError) as info:
        fetcher.collect(10)
    assert (info.value.log_start, info.value.log_end) == (4, 9)
    await fetcher.close()


async def test_a_full_buffer_leaves_its_partition_out_until_drained() -> None:
    broker = FakeBroker()
    data = batch(0, 20)
    fetcher = await started(broker, 2, max_bytes=len(data))
    _method, _request, answer = await broker.next_call()
    answer.set_result(pb.FetchManyResponse(partitions=[
        pb.FetchedPartition(topic="t", partition=0, record_batches=data, high_watermark=20),
        pb.FetchedPartition(topic="t", partition=1, high_watermark=0),
    ]))  # fmt: skip
    _method, request, _pending = await broker.next_call()
    assert positions(request) == {1: 0}  # partition 0 has an answer's worth buffered
    assert len(fetcher.collect(100)) == 20  # drained (the driver is woken)
    _method, request, _answer = await broker.next_call()
    assert positions(request) == {0: 20, 1: 0}  # the long-poll was sent again with it
    await fetcher.close()


async def test_a_broker_without_fetch_many_gets_one_fetch_per_partition() -> None:
    broker = FakeBroker()
    fetcher = await started(broker, 2)
    method, _request, answer = await broker.next_call()
    assert method == "FetchMany"
    answer.set_exception(rpc_error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!"))
    fetches = [await broker.next_call(), await broker.next_call()]
    assert sorted((m, r.partition, r.offset) for m, r, _f in fetches) == [
        ("Fetch", 0, 0),
        ("Fetch", 1, 0),
    ]
    _m, _r, future = next(f for f in fetches if f[1].partition == 1)
    future.set_result(
        pb.FetchResponse(topic="t", partition=1, record_batches=batch(0, 2), high_watermark=2)
    )
    method, request, _future = await broker.next_call()
    assert (method, request.partition, request.offset) == ("Fetch", 1, 2)
    assert [(r.partition, r.offset) for r in fetcher.collect(10)] == [(1, 0), (1, 1)]
    await fetcher.close()


async def test_too_many_partitions_for_the_broker_halves_the_call() -> None:
    broker = FakeBroker()
    fetcher = await started(broker, 4)
    _method, request, answer = await broker.next_call()
    assert len(request.positions) == 4
    refusal = ("sentinel-error", "POLICY_VIOLATION")
    answer.set_exception(
        rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "past --max-partitions", refusal)
    )
    _method, request, _answer = await broker.next_call()
    assert len(request.positions) == 2
    await fetcher.close()


def test_a_partition_error_is_the_error_a_fetch_of_it_alone_raises() -> None:
    error = partition_error(
        pb.PartitionError(
            code=6,
            reason="NOT_LEADER_OR_FOLLOWER",
            message="moved",
            status=grpc.StatusCode.UNAVAILABLE.value[0],
            metadata={"sentinel-leader": "h:9"},
        )
    )
    assert isinstance(error, errors.NotLeaderError)
    assert (error.leader, error.status, error.retriable) == ("h:9", UNAVAILABLE, True)
    unknown = partition_error(
        pb.PartitionError(code=3, reason="UNKNOWN_TOPIC_OR_PARTITION", message="no", status=5)
    )
    assert isinstance(unknown, errors.UnknownTopicOrPartitionError)
    odd = partition_error(pb.PartitionError(code=-1, reason="SOMETHING_NEW", status=999))
    assert isinstance(odd, errors.ServerError)
    assert odd.status == grpc.StatusCode.UNKNOWN
