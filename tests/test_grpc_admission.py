"""The gRPC door's admission in-process: what a call holds in the request budget before
and after its message arrives, and when a call that never sends it is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from sentinel.broker.request_budget import RequestBudget, RequestThrottledError
from sentinel.server.grpc_admission import (
    SMALL_REQUEST_BYTES,
    Admission,
    RequestNotDeliveredError,
)

MAX = 1024 * 1024
CAPACITY = 2 * MAX


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(main())  # type: ignore[arg-type]


class Receiver:
    """gRPC's request receiver: yields ``message`` once ``arrive`` is set."""

    def __init__(self, message: bytes | None = None) -> None:
        self.message = message
        self.arrive = asyncio.Event()
        self.closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[bytes]:
        await self.arrive.wait()
        if self.message is not None:
            yield self.message

    async def aclose(self) -> None:
        self.closed = True


def admission(budget: RequestBudget, **kwargs: float) -> Admission:
    kwargs.setdefault("hold_s", 0.05)
    kwargs.setdefault("request_timeout_s", 5.0)
    return Admission(budget, MAX, **kwargs)


def test_a_small_rpc_holds_little_until_its_message_and_then_its_size() -> None:
    async def main() -> None:
        budget = RequestBudget(CAPACITY, trim=lambda: None)
        receiver = Receiver(b"x" * 10)
        task = asyncio.create_task(admission(budget).admit("ListTopics", receiver, 1.0))
        await asyncio.sleep(0.01)
        assert budget.in_flight == SMALL_REQUEST_BYTES
        receiver.arrive.set()
        held, raw = await task
        assert raw == b"x" * 10 and held.size == 10 and budget.in_flight == 10
        held.release()
        assert budget.in_flight == 0

    run(main)


def test_a_small_rpc_is_admitted_at_once_when_the_budget_is_full() -> None:
    async def main() -> None:
        budget = RequestBudget(CAPACITY, trim=lambda: None)
        full = await budget.reserve(CAPACITY, timeout=1)
        waiting = asyncio.create_task(budget.reserve(MAX, timeout=5))  # a large one queues
        receiver = Receiver(b"small")
        receiver.arrive.set()
        held, raw = await asyncio.wait_for(
            admission(budget).admit("FetchMetadata", receiver, 1.0), 0.5
        )
        assert raw == b"small" and held.size == 5
        held.release()
        full.release()
        (await waiting).release()
        assert budget.in_flight == 0

    run(main)


def test_a_small_rpc_whose_message_is_large_waits_for_room_for_all_of_it() -> None:
    async def main() -> None:
        budget = RequestBudget(CAPACITY, trim=lambda: None)
        other = await budget.reserve(CAPACITY - 100_000, timeout=1)
        receiver = Receiver(b"x" * 200_000)
        receiver.arrive.set()
        task = asyncio.create_task(admission(budget).admit("CreateTopic", receiver, 5.0))
        await asyncio.sleep(0.05)
        assert not task.done()  # read, then waits for 200,000 bytes of room
        other.release()
        held, _raw = await task
        assert held.size == 200_000 and budget.in_flight == 200_000
        held.release()
        other = await budget.reserve(CAPACITY, timeout=1)
        receiver = Receiver(b"x" * 200_000)
        receiver.arrive.set()
        with pytest.raises(RequestThrottledError):  # no room within the call's wait
            await admission(budget).admit("CreateTopic", receiver, 0.05)
        other.release()
        assert budget.in_flight == 0

    run(main)


def test_a_produce_holds_the_largest_request_until_hold_s_then_little() -> None:
    async def main() -> None:
        budget = RequestBudget(CAPACITY, trim=lambda: None)
        door = admission(budget, hold_s=0.1)
        stalled = [Receiver(), Receiver()]
        tasks = [asyncio.create_task(door.admit("Produce", r, 5.0)) for r in stalled]
        await asyncio.sleep(0.01)
        assert budget.in_flight == CAPACITY  # a burst of produces is read two at a time
        late = Receiver(b"p" * 100)
        late.arrive.set()
        admitted = asyncio.create_task(door.admit("Produce", late, 5.0))
        await asyncio.sleep(0.03)
        assert not admitted.done()
        held, raw = await asyncio.wait_for(admitted, 0.5)  # once the stalled ones let go
        assert raw == b"p" * 100 and held.size == 100
        assert budget.in_flight == 2 * SMALL_REQUEST_BYTES + 100
        held.release()
        for receiver, task in zip(stalled, tasks, strict=True):
            receiver.message = b"q" * (MAX // 2)  # a slow large message arrives in the end
            receiver.arrive.set()
            held, _raw = await task
            assert held.size == MAX // 2
            held.release()
        assert budget.in_flight == 0

    run(main)


@pytest.mark.parametrize("method", ["Produce", "ListTopics", "Consume"])
def test_a_message_that_never_arrives_is_refused_and_its_room_returned(method: str) -> None:
    async def main() -> None:
        budget = RequestBudget(CAPACITY, trim=lambda: None)
        receiver = Receiver()
        door = admission(budget, request_timeout_s=0.1)
        with pytest.raises(RequestNotDeliveredError, match=r"did not arrive within 0\.1 s"):
            await asyncio.wait_for(door.admit(method, receiver, 1.0), 1.0)
        await asyncio.sleep(0)
        assert budget.in_flight == 0 and receiver.closed

    run(main)


def test_a_cancelled_call_returns_its_room_and_closes_its_receiver() -> None:
    async def main() -> None:
        budget = RequestBudget(CAPACITY, trim=lambda: None)
        receiver = Receiver()
        task = asyncio.create_task(admission(budget).admit("Produce", receiver, 1.0))
        await asyncio.sleep(0.01)
        assert budget.in_flight == MAX
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        assert budget.in_flight == 0 and receiver.closed

    run(main)


def test_a_call_without_a_message_holds_nothing() -> None:
    async def main() -> None:
        budget = RequestBudget(CAPACITY, trim=lambda: None)
        receiver = Receiver(None)
        receiver.arrive.set()
        held, raw = await admission(budget).admit("ListTopics", receiver, 1.0)
        assert raw is None and held.size == 0 and budget.in_flight == 0

    run(main)
