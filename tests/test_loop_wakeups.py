"""Waking asyncio waiters from sync threads: one loop wake-up for a wave's waiters."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from sentinel.fs import MemFS
from sentinel.loop_wakeups import LoopWakeups
from sentinel.storage.engine import Engine
from sentinel.storage.options import EngineOptions
from sentinel.storage.sync_scheduler import SyncScheduler
from sentinel.storage.wal import SyncMode, WalOptions
from sentinel.storage.write_batch import WriteBatch


def test_waiters_posted_together_cost_one_wakeup() -> None:
    async def main() -> None:
        wakeups = LoopWakeups.of_running_loop()
        assert LoopWakeups.of_running_loop() is wakeups
        pairs = [wakeups.waiter() for _ in range(500)]
        failure = OSError(28, "No space left on device")
        gate = threading.Event()

        def post_all() -> None:
            gate.wait(10)
            for index, (_future, waiter) in enumerate(pairs):
                waiter(failure if index == 7 else None)

        poster = threading.Thread(target=post_all)
        poster.start()
        before = wakeups.wakeups
        gate.set()
        poster.join(10)  # the loop blocked here: every post comes before any drain
        results = await asyncio.gather(*(f for f, _w in pairs), return_exceptions=True)
        assert results[7] is failure
        assert results[:7] + results[8:] == [None] * 499
        # Every post before the drain ran shares its wake-up: one for the 500.
        assert wakeups.wakeups - before == 1

    asyncio.run(main())


def test_a_cancelled_waiter_is_skipped_and_the_rest_resolved() -> None:
    async def main() -> None:
        wakeups = LoopWakeups.of_running_loop()
        (gone, gone_waiter), (kept, kept_waiter) = wakeups.waiter(), wakeups.waiter()
        gone.cancel()
        threading.Thread(target=lambda: (gone_waiter(None), kept_waiter(None))).start()
        await asyncio.wait_for(kept, 10)
        assert gone.cancelled()

    asyncio.run(main())


def test_a_post_after_the_loop_closed_is_dropped() -> None:
    loop = asyncio.new_event_loop()
    wakeups = LoopWakeups(loop)
    future, waiter = wakeups.waiter()
    loop.close()
    waiter(None)  # nobody waits any more: no error, nothing kept
    assert not future.done()


def test_engine_waiters_are_answered_and_durable() -> None:
    """Twenty engines' durability waits, registered with ``when_durable``: every waiter
    is answered, at most one wake-up each, and what they waited for survives a crash."""
    fs = MemFS()
    scheduler = SyncScheduler(1)
    options = EngineOptions(
        sync_scheduler=scheduler, background=False, wal=WalOptions(sync_mode=SyncMode.ALWAYS)
    )
    engines = [Engine.open(f"/e{i}", options, fs=fs) for i in range(20)]

    async def main() -> int:
        wakeups = LoopWakeups.of_running_loop()
        futures = []
        for i, engine in enumerate(engines):
            lsn = engine.write_nowait(WriteBatch().put(b"k", b"v%d" % i))
            future, waiter = wakeups.waiter()
            assert engine.when_durable(lsn, waiter)
            futures.append(future)
        await asyncio.wait_for(asyncio.gather(*futures), 30)
        # Durable now: no waiter is registered, none is called.
        assert not engines[0].when_durable(engines[0].wal.last_lsn, _never)
        return wakeups.wakeups

    assert 1 <= asyncio.run(main()) <= 20
    fs.crash()
    for i in range(20):
        reopened = Engine.open(f"/e{i}", EngineOptions(background=False), fs=fs)
        assert reopened.get(b"k") == b"v%d" % i
        reopened.close()
    scheduler.shutdown()


def _never(error: BaseException | None) -> None:
    raise AssertionError("a waiter of a durable LSN was called")


def test_then_runs_on_the_loop_before_the_answer_even_when_cancelled() -> None:
    """A waiter's ``then`` (a partition log's high watermark and unpin) runs on the
    loop's thread, before its future is resolved, and also for a cancelled one."""

    async def main() -> None:
        wakeups = LoopWakeups.of_running_loop()
        loop_thread = threading.get_ident()
        ran: list[tuple[str, BaseException | None, int, bool]] = []
        futures = []
        posts = []
        for name in ("kept", "cancelled"):

            def then(error: BaseException | None, name: str = name) -> None:
                done = futures[0].done() if name == "kept" else False
                ran.append((name, error, threading.get_ident(), done))

            future, waiter = wakeups.waiter(then)
            futures.append(future)
            posts.append(waiter)
        futures[1].cancel()
        failure = OSError(5, "Input/output error")
        poster = threading.Thread(target=lambda: [post(failure) for post in posts])
        # Both posts arrive while the loop is blocked (the join), so one drain answers
        # both: awaiting the first answer before the second post arrived left the
        # second's ``then`` not run yet at the assertion (a race seen in a full run).
        poster.start()
        poster.join(10)
        with contextlib.suppress(OSError):
            await asyncio.wait_for(futures[0], 10)
        assert ran == [
            ("kept", failure, loop_thread, False),
            ("cancelled", failure, loop_thread, False),
        ]
        assert futures[0].exception() is failure

    asyncio.run(main())
