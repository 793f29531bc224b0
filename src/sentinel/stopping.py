"""Stopping asyncio tasks within a bound.

A stop that cancels a task and then awaits it hangs for good if the task does not end:
CPython 3.11's ``asyncio.wait_for`` can swallow a cancellation that lands as its inner
future completes (gh-86296), and a task that catches ``CancelledError`` to clean up can
wait on something that never comes. A broker's stop (SIGTERM, a test's teardown) must
end all the same, and go on to make its files durable and close them.

``cancel_and_wait`` cancels each task again while it runs on (a swallowed cancellation
is then taken at the task's next ``await``), and after ``timeout`` seconds gives up on
the tasks left, logging each one's stack: the stop goes on, and the log says what was
awaited. A task that ended with an exception has it logged, not raised: the stop's
remaining steps matter more than one task's failure, which was its own to report.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

#: The default bound of ``cancel_and_wait``: longer than any task's own cleanup.
STOP_TIMEOUT_S = 10.0
#: How often a task that runs on after its cancellation is cancelled again.
RECANCEL_S = 0.2


async def cancel_and_wait(
    tasks: Iterable[asyncio.Future[Any]], what: str, timeout: float | None = None
) -> bool:
    """Cancel ``tasks`` and wait until they end, at most ``timeout`` s (default
    ``STOP_TIMEOUT_S``; ``what`` names them in the log). Whether every one ended.
    Cancelling the caller still cancels it."""
    if timeout is None:
        timeout = STOP_TIMEOUT_S
    every = list(tasks)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = {task for task in every if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_S, left))
    for task in every:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("%s: a task ended with %r", what, task.exception())
    for task in pending:
        stack = io.StringIO()
        if isinstance(task, asyncio.Task):
            task.print_stack(file=stack)
        log.error(
            "%s: a task did not end within %g s of its cancellation; going on without it\n%s",
            what, timeout, stack.getvalue(),
        )  # fmt: skip
    return not pending
