"""The broker's limits in-process: the in-flight request budget, the partition and
auto-create limits of the service and its registry, and the request fields every door
shares, on the in-memory filesystem."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sentinel.broker.group_driver import GroupError
from sentinel.broker.group_events import ErrorCode
from sentinel.broker.limits import (
    PolicyViolationError,
    TopicLimits,
    open_partitions_for_open_files,
    partitions_for_open_files,
)
from sentinel.broker.request_budget import RequestBudget, RequestThrottledError, _glibc_trim
from sentinel.broker.service import BrokerService
from sentinel.broker.topic_config import InvalidPartitionsError
from sentinel.broker.topics import UnknownTopicOrPartitionError
from sentinel.broker.validation import (
    Acks,
    InvalidCommitOffsetError,
    InvalidRequiredAcksError,
)
from sentinel.clock import SystemClock
from sentinel.config import BrokerConfig, ConfigError
from sentinel.fs import MemFS
from sentinel.record import build_batch
from sentinel.server.errors import refusal_for


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(main())  # type: ignore[arg-type]


# ------------------------------------------------------------ request budget


def test_budget_admits_in_order_and_waits_for_room() -> None:
    async def main() -> None:
        budget = RequestBudget(100, trim=lambda: None)
        first = await budget.reserve(60, timeout=1)
        order: list[str] = []

        async def later(name: str, size: int) -> None:
            reservation = await budget.reserve(size, timeout=5)
            order.append(name)
            await asyncio.sleep(0)
            reservation.release()

        big = asyncio.create_task(later("big", 70))
        await asyncio.sleep(0)
        small = asyncio.create_task(later("small", 10))  # fits, but waits behind "big"
        await asyncio.sleep(0.01)
        assert order == [] and budget.in_flight == 60
        first.release()
        await asyncio.gather(big, small)
        assert order == ["big", "small"]
        assert budget.available == 100

    run(main)


def test_budget_refuses_after_the_timeout_and_hands_on_its_place() -> None:
    async def main() -> None:
        budget = RequestBudget(100, trim=lambda: None)
        held = await budget.reserve(100, timeout=1)
        with pytest.raises(RequestThrottledError, match="--max-request-bytes-in-flight"):
            await budget.reserve(50, timeout=0.01)
        assert budget.in_flight == 100
        waiter = asyncio.create_task(budget.reserve(10, timeout=5))
        await asyncio.sleep(0)
        held.shrink(20)  # the request read turned out smaller than reserved
        reservation = await waiter
        assert budget.in_flight == 30
        reservation.release()
        held.release()
        held.release()  # twice is harmless
        assert budget.available == 100

    run(main)


def test_a_cancelled_waiter_leaves_no_trace() -> None:
    async def main() -> None:
        budget = RequestBudget(100, trim=lambda: None)
        held = await budget.reserve(90, timeout=1)
        waiter = asyncio.create_task(budget.reserve(50, timeout=5))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        held.release()
        assert budget.available == 100
        assert (await budget.reserve(100, timeout=0)).size == 100

    run(main)


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


def test_budget_gives_memory_back_after_large_requests() -> None:
    trims: list[int] = []

    async def main() -> None:
        budget = RequestBudget(128 << 20, trim=lambda: trims.append(1), trim_min_interval_s=0)
        for _ in range(3):
            async with await budget.reserve(20 << 20, timeout=1):
                pass
        assert len(trims) == 1  # after 32 MiB answered, with nothing in flight
        small = await budget.reserve(1, timeout=1)
        async with await budget.reserve(40 << 20, timeout=1):
            pass
        assert len(trims) == 1  # not while a request is in flight
        small.release()
        assert len(trims) == 2

    run(main)


def test_the_trim_frees_a_fresh_cycle_without_walking_every_object() -> None:
    # What the trim's collection is for: a cycle a cancelled call left behind is freed
    # before the pages go back. A full collection walks every object the broker holds
    # (90 ms on the event loop with 1,000 partitions): the trim collects the young
    # generations only.
    trim = _glibc_trim()
    assert trim is not None  # glibc: the broker's platform

    class Node:
        peer: Any = None

    first, second = Node(), Node()
    first.peer, second.peer = second, first
    gone = weakref.ref(first)
    del first, second
    collected: list[int] = []

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collected.append(info["generation"])

    gc.callbacks.append(watch)
    try:
        trim()
    finally:
        gc.callbacks.remove(watch)
    assert gone() is None
    assert collected and max(collected) < 2


def test_budget_trims_at_most_once_per_interval_in_a_stream() -> None:
    """Nothing in flight for a moment between the requests of a stream: a trim at each
    such moment would hand back pages the next requests fault in again."""
    trims: list[int] = []

    async def main() -> None:
        budget = RequestBudget(128 << 20, trim=lambda: trims.append(1), trim_min_interval_s=3600)
        for _ in range(40):  # 160 MiB, in flight one at a time
            async with await budget.reserve(4 << 20, timeout=1):
                await asyncio.sleep(0)
        assert trims == [1]  # the first 32 MiB; the rest waits for the interval
        assert budget.trim_pending

    run(main)


def test_a_trim_held_back_by_the_interval_comes_once_it_passed() -> None:
    trims: list[int] = []
    now = [0.0]  # the budget's clock; the loop's timer only wakes it to look again

    async def main() -> None:
        budget = RequestBudget(
            128 << 20, trim=lambda: trims.append(1), trim_min_interval_s=0.01,
            clock=lambda: now[0],
        )  # fmt: skip
        async with await budget.reserve(40 << 20, timeout=1):
            pass
        assert trims == [1]
        async with await budget.reserve(40 << 20, timeout=1):
            pass
        assert trims == [1] and budget.trim_pending  # due, but the interval has not passed
        now[0] = 1.0
        await _until(lambda: trims == [1, 1])  # the timer found it due and the time come
        small = await budget.reserve(1, timeout=1)
        async with await budget.reserve(40 << 20, timeout=1):
            pass
        now[0] = 2.0
        assert not budget.trim_pending and trims == [1, 1]  # not while a request is in flight
        small.release()  # idle, the interval passed: at once
        assert trims == [1, 1, 1]

    run(main)


def test_the_refusals_have_their_reasons() -> None:
    reasons = {
        RequestThrottledError("x"): "THROTTLING_QUOTA_EXCEEDED",
        PolicyViolationError("x"): "POLICY_VIOLATION",
        InvalidRequiredAcksError("x"): "INVALID_REQUIRED_ACKS",
        InvalidCommitOffsetError("x"): "INVALID_REQUEST",
        GroupError(ErrorCode.INVALID_SESSION_TIMEOUT): "INVALID_SESSION_TIMEOUT",
    }
    for exc, reason in reasons.items():
        refusal = refusal_for(exc)
        assert refusal is not None and refusal.reason == reason


# ------------------------------------------------------------ configuration


def test_partition_limit_follows_the_open_files_limit() -> None:
    assert partitions_for_open_files(512) == 256
    assert partitions_for_open_files(1024) == 512
    assert partitions_for_open_files(20_000) == 10_000  # the 10,000 by default
    assert partitions_for_open_files(1 << 20) == 10_000
    assert partitions_for_open_files(4) == 2
    assert open_partitions_for_open_files(1024) == (1024 - 512) // 2 == 256
    assert open_partitions_for_open_files(20_000) == 256
    assert open_partitions_for_open_files(600) == (600 - 300) // 2
    assert open_partitions_for_open_files(4) == 1


def test_config_refuses_a_budget_smaller_than_one_request() -> None:
    with pytest.raises(ConfigError, match="max_request_bytes_in_flight"):
        BrokerConfig(max_request_bytes=64 << 20, max_request_bytes_in_flight=32 << 20)
    with pytest.raises(ConfigError, match="session_timeout"):
        BrokerConfig(group_min_session_timeout_ms=10_000, group_max_session_timeout_ms=5_000)


# ------------------------------------------------------------ the service


def with_service(test: Callable[[BrokerService], Awaitable[None]], **settings: object) -> None:
    async def main() -> None:
        config = BrokerConfig(data_dir="/data", group_min_session_timeout_ms=500, **settings)  # type: ignore[arg-type]
        service = BrokerService(config, MemFS(), SystemClock())
        await service.start()
        try:
            await test(service)
        finally:
            await service.stop()

    asyncio.run(main())


BATCH = build_batch([(None, b"v", (), 1_700_000_000_000)])


def test_auto_create_is_bounded_per_request_and_broker_wide() -> None:
    async def test(service: BrokerService) -> None:
        assert service.limits == TopicLimits(8, 3)
        with pytest.raises(PolicyViolationError, match="--max-auto-create-per-request"):
            await service.topics([f"t{i}" for i in range(1000)], auto_create=True)
        assert list(service.registry) == []
        # Repeated names count once.
        await service.topics(["a", "b", "a", "b", "c"], auto_create=True)
        with pytest.raises(PolicyViolationError, match="--max-partitions"):
            await service.topics(["d", "e"], auto_create=True)  # 6 + 4 > 8: none created
        assert [t.name for t in service.registry] == ["a", "b", "c"]
        await service.produce("d", -1, BATCH)  # 8 partitions now
        with pytest.raises(PolicyViolationError):
            await service.produce("e", -1, BATCH)
        with pytest.raises(PolicyViolationError):
            await service.create_topic("f", 1)
        with pytest.raises(PolicyViolationError):
            await service.add_partitions("a", 3)
        # Without auto-create (a subscription that does not ask): unknown, nothing made.
        with pytest.raises(UnknownTopicOrPartitionError):
            await service.topics(["x"])

    with_service(test, max_partitions=8, max_auto_create_per_request=3, default_partitions=2)


def test_recovery_opens_more_partitions_than_the_limit() -> None:
    fs = MemFS()

    async def main() -> None:
        config = BrokerConfig(data_dir="/data", max_partitions=4)
        service = BrokerService(config, fs, SystemClock())
        await service.start()
        await service.create_topic("t", 4)
        await service.stop()
        lowered = BrokerService(BrokerConfig(data_dir="/data", max_partitions=2), fs, SystemClock())
        await lowered.start()
        assert len((await lowered.topic("t")).partitions) == 4
        with pytest.raises(PolicyViolationError):
            await lowered.create_topic("u", 1)
        await lowered.stop()

    asyncio.run(main())


def test_lax_fields_are_refused_by_the_service() -> None:
    async def test(service: BrokerService) -> None:
        with pytest.raises(UnknownTopicOrPartitionError):
            await service.produce("t", -5, BATCH)
        with pytest.raises(InvalidRequiredAcksError):
            await service.produce("t", 0, BATCH, acks=99)
        assert list(service.registry) == []  # neither created the topic
        outcome = await service.produce("t", 0, BATCH, acks=-1)  # Kafka's acks=all
        assert outcome.base_offset == 0
        assert Acks.parse(0) is Acks.NONE
        for partitions in (0, -2):
            with pytest.raises(InvalidPartitionsError):
                await service.create_topic("z", partitions)
        assert len((await service.create_topic("dflt", -1)).partitions) == 1
        for session_ms in (0, 499, 1_800_001):
            with pytest.raises(GroupError) as err:
                await service.join_group(
                    "g",
                    "",
                    client_id="c",
                    topics=["t"],
                    assignor="roundrobin",
                    session_timeout_ms=session_ms,
                    auto_create_topics=True,
                )
            assert err.value.code is ErrorCode.INVALID_SESSION_TIMEOUT
        (refused,) = await service.commit_offsets("g", "", -1, {("t", 0): _om(-2)})
        assert isinstance(refused.error, InvalidCommitOffsetError)  # per partition
        (committed,) = await service.commit_offsets("g", "", -1, {("t", 0): _om(-1)})
        assert committed.error is None
        joined = await service.join_group(
            "g2",
            "",
            client_id="c",
            topics=["new"],
            assignor="roundrobin",
            session_timeout_ms=1000,
            auto_create_topics=True,
        )
        assert service.registry.find("new") is not None
        assert joined.assignment is not None and joined.assignment.partitions == {"new": (0,)}

    with_service(test)


def _om(offset: int) -> object:
    from sentinel.broker.group_events import OffsetAndMetadata

    return OffsetAndMetadata(offset, "")
