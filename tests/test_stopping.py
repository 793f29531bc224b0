"""``cancel_and_wait``: a stop ends within its bound whatever its tasks do with their
cancellation (one swallowed, as 3.11's ``wait_for`` can; every one; a failure)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest

import sentinel.stopping as stopping_module
from sentinel.broker.service import BrokerService
from sentinel.clock import SystemClock
from sentinel.config import BrokerConfig
from sentinel.fs import MemFS
from sentinel.stopping import RECANCEL_S, cancel_and_wait


async def _sleeps() -> None:
    await asyncio.sleep(3600)


async def _swallows_one_cancellation() -> None:
    # What a wait_for that lost the race does: the task goes on.
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(3600)
    await asyncio.sleep(3600)


class Stubborn:
    """A task that runs on after every cancellation until ``release``d."""

    def __init__(self) -> None:
        self.seen = 0
        self.released = False
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        deadline = time.monotonic() + 60  # bounded, should a test fail to release it
        while time.monotonic() < deadline:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if self.released:
                    raise
                self.seen += 1

    async def release(self) -> None:
        self.released = True
        self.task.cancel()
        await asyncio.wait([self.task], timeout=5)


async def _fails() -> None:
    raise RuntimeError("the task's own failure")


async def test_tasks_that_take_their_cancellation_end_at_once() -> None:
    tasks = [asyncio.create_task(_sleeps()) for _ in range(3)]
    await asyncio.sleep(0)
    started = time.monotonic()
    assert await cancel_and_wait(tasks, "sleepers", timeout=5)
    assert time.monotonic() - started < RECANCEL_S
    assert all(t.cancelled() for t in tasks)


async def test_a_swallowed_cancellation_is_taken_by_the_next_one() -> None:
    task = asyncio.create_task(_swallows_one_cancellation())
    await asyncio.sleep(0)
    started = time.monotonic()
    assert await cancel_and_wait([task], "swallower", timeout=5)
    assert task.cancelled()
    assert time.monotonic() - started < 5 * RECANCEL_S


async def test_a_task_that_never_ends_is_left_after_the_bound_with_its_stack_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stubborn = Stubborn()
    await asyncio.sleep(0)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="sentinel.stopping"):
        assert not await cancel_and_wait([stubborn.task], "the stubborn one", timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 2
    assert stubborn.seen >= 2  # cancelled again while it ran on
    (record,) = caplog.records
    assert "the stubborn one" in record.getMessage()
    assert "Stubborn._run" in record.getMessage()  # its stack
    await stubborn.release()
    assert stubborn.task.cancelled()


async def test_a_failed_task_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    failed = asyncio.create_task(_fails())
    sleeper = asyncio.create_task(_sleeps())
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="sentinel.stopping"):
        assert await cancel_and_wait([failed, sleeper], "mixed", timeout=5)
    assert sleeper.cancelled()
    assert any("the task's own failure" in r.getMessage() for r in caplog.records)


async def test_cancelling_the_caller_still_cancels_it() -> None:
    stubborn = Stubborn()
    await asyncio.sleep(0)
    stopper = asyncio.create_task(cancel_and_wait([stubborn.task], "stubborn", timeout=30))
    await asyncio.sleep(RECANCEL_S / 2)
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    await stubborn.release()


async def test_a_broker_stop_ends_though_a_background_task_ignores_its_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: ``BrokerService.stop`` awaited each cancelled background task without a
    bound, and a task that ran on hung the stop (and a test's teardown) for good."""
    config = BrokerConfig(data_dir="/data", node_id=1, port=9555, sync_mode="always")
    fs = MemFS()
    svc = BrokerService(config, fs, SystemClock())
    await svc.start()
    await svc.create_topic("t", 1)
    monkeypatch.setattr(stopping_module, "STOP_TIMEOUT_S", 1.0)
    stubborn = Stubborn()
    svc._background.append(stubborn.task)
    stopping = asyncio.create_task(svc.stop())
    done, _ = await asyncio.wait([stopping], timeout=30)
    assert stopping in done and stopping.exception() is None
    assert stubborn.seen  # it was cancelled, and ran on
    # The stop went on past it: the data directory is released (a new broker opens it).
    again = BrokerService(config, fs, SystemClock())
    await again.start()
    assert again.partition("t", 0) is not None
    await again.stop()
    await stubborn.release()


async def _awaits_deep_down() -> None:
    await _sleeps()


async def test_a_task_stack_follows_its_awaits_down_to_what_it_waits_for() -> None:
    task = asyncio.create_task(_awaits_deep_down())
    await asyncio.sleep(0)
    try:
        lines = stopping_module.task_stack(task).splitlines()
        # Task.print_stack shows the outermost coroutine only; the chain names the sleep
        assert [line.rsplit(" in ", 1)[-1] for line in lines[1:4]] == [
            "_awaits_deep_down", "_sleeps", "sleep",
        ]
    finally:
        await cancel_and_wait([task], "deep", timeout=5)
