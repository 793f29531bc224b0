"""A stop cancels the periodic retention task, then waits for the pass it handed to
its worker thread. If the cancel came while that pass was still queued behind another
job, it cancelled the pass too, and the stop's wait raised ``CancelledError``: the
broker exited 1 with a traceback at SIGTERM (a cluster kill test in CI, once in ~3,700
tests). The pass now runs to its end whatever the task's cancel, and the stop waits."""

from __future__ import annotations

import asyncio
import threading

from sentinel.broker.retention import Retention
from sentinel.clock import SystemClock


async def test_a_stop_while_a_pass_waits_for_the_worker_waits_for_it() -> None:
    retention = Retention([], SystemClock(), replicated=None)
    ran = threading.Event()
    release = threading.Event()
    real_enforce = retention.enforce

    def enforce(topics: object = None, idle_s: float | None = None) -> int:
        ran.set()
        return real_enforce([], None)

    retention.enforce = enforce  # type: ignore[method-assign]
    # The worker's one thread is busy: the periodic pass waits in its queue.
    busy = retention._worker.submit(release.wait, 10)
    task = asyncio.create_task(retention.run_forever(lambda: 0.0))
    for _ in range(200):  # until the pass is handed over (bounded, no sleep-and-hope)
        if retention._pass is not None:
            break
        await asyncio.sleep(0.005)
    assert retention._pass is not None and not retention._pass.running()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)  # let the cancel's callbacks run, as a stop's later steps do
    release.set()
    await asyncio.wait_for(retention.stop(), 10)  # raised CancelledError before
    assert busy.done()
    assert ran.is_set()  # the queued pass ran to its end
