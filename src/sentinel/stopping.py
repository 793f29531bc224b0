"""Stopping asyncio tasks within a bound.

A stop that cancels a task and then awaits it hangs for good if the task does not end:
CPython 3.11's ``asyncio.wait_for`` can swallow a cancellation that lands as its inner
future completes (gh-86296), and a task that catches ``CancelledError`` to clean up can
wait on something that never comes. A broker's stop (SIGTERM, a test's teardown) must
end all the same, and go on to make its files durable and close them.

``cancel_and_wait`` cancels each task again while it runs on (a swallowed cancellation
is then taken at the task's next ``await``), and after ``timeout`` seconds gives up on
the tasks left, logging each one's stack: the stop goes on, and the log says what was
awaited. The stack is the whole chain of awaits (``task_stack``): ``Task.print_stack``
shows only a suspended task's outermost coroutine, which says nothing of what it waits
for deep down (a commit, a peer's answer). A task that ended with an exception has it
logged, not raised: the stop's remaining steps matter more than one task's failure,
which was its own to report.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from types import CoroutineType, FrameType
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
        stack = task_stack(task) if isinstance(task, asyncio.Task) else repr(task)
        log.error(
            "%s: a task did not end within %g s of its cancellation; going on without it\n%s",
            what, timeout, stack,
        )  # fmt: skip
    return not pending


#: How deep ``task_stack`` follows a chain of awaits (a bound against a cycle).
MAX_AWAIT_DEPTH = 64


def task_stack(task: asyncio.Task[Any]) -> str:
    """Where ``task`` waits: one line per frame of its chain of awaits, outermost first
    (the coroutine, the coroutine it awaits, and so on down to the innermost one), and
    the future the chain ends on when it is one. Frames without a line
    number (Cython coroutines such as gRPC's) are named without one."""
    lines = [repr(task)]
    awaited: object = task.get_coro()
    for _ in range(MAX_AWAIT_DEPTH):
        frame = _frame_of(awaited)
        if frame is None:
            break
        code = frame.f_code
        where = f"line {frame.f_lineno}" if frame.f_lineno is not None else "line ?"
        lines.append(f"  {code.co_filename}, {where}, in {code.co_name}")
        awaited = _awaited_by(awaited)
        if awaited is None:
            break
    if isinstance(awaited, asyncio.Future):
        lines.append(f"  awaiting {awaited!r}")
    return "\n".join(lines)


def _frame_of(obj: object) -> FrameType | None:
    for name in ("cr_frame", "gi_frame", "ag_frame"):
        frame = getattr(obj, name, None)
        if isinstance(frame, FrameType):
            return frame
    return None


def _awaited_by(obj: object) -> object | None:
    if isinstance(obj, CoroutineType):
        return obj.cr_await
    for name in ("gi_yieldfrom", "ag_await"):
        if hasattr(obj, name):
            awaited: object | None = getattr(obj, name)
            return awaited
    return None
