"""Per-record futures that cost almost nothing until someone looks at them.

A producer hands out one future per record, hundreds of thousands a second, but the
records of a batch all succeed or fail together. So the state lives once per batch
(``BatchResult``: a condition, the base offset, the error) and a record's future
(``RecordFuture``) is three slots pointing into it: no ``threading.Condition``, no
lists, no ``RecordMetadata`` until ``result()`` builds it. Completing a batch is O(1)
plus the work for the records whose futures have waiters or callbacks.

``RecordFuture`` is a ``concurrent.futures.Future`` as far as its users can tell:
``result``, ``exception``, ``done``, ``add_done_callback``, and also
``concurrent.futures.wait`` / ``as_completed``, which reach into ``_condition``,
``_state`` and ``_waiters``: those are properties here, backed by the batch. A record
handed to the producer cannot be taken back, so ``cancel()`` returns False.

Thread-safety: a batch is completed once, on the producer's IO thread, under its
condition; readers check ``state`` without the lock first (a plain attribute read,
atomic under the GIL) and fall back to the condition.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures._base import FINISHED, PENDING
from typing import Any, Generic, Protocol, TypeVar

from sentinel.client.types import RecordMetadata

__all__ = ["AsyncBatchResult", "BatchResult", "BatchSink", "RecordFuture"]

log = logging.getLogger(__name__)


class BatchSink(Protocol):
    """Where a batch's outcome goes: the records' futures, sync or asyncio."""

    def complete(self, base_offset: int, log_append_time: int) -> None:
        """Every record of the batch was stored from ``base_offset`` (-1: unknown)."""
        ...

    def fail(self, exc: BaseException) -> None:
        """The batch was not (or not knowingly) stored."""
        ...

    def wait(self, timeout: float | None) -> bool:
        """Block until the batch is done (sync sinks only); False on timeout."""
        ...


class BatchResult:
    """One batch's outcome, shared by its records' ``RecordFuture``s."""

    __slots__ = (
        "base_offset",
        "condition",
        "exception",
        "interested",
        "log_append_time",
        "partition",
        "state",
        "topic",
    )

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.condition = threading.Condition()
        self.state = PENDING
        self.base_offset = -1
        self.log_append_time = -1
        self.exception: BaseException | None = None
        # Futures with waiters or callbacks; appended to under the condition.
        self.interested: list[RecordFuture] = []

    def complete(self, base_offset: int, log_append_time: int) -> None:
        self._finish(base_offset, log_append_time, None)

    def fail(self, exc: BaseException) -> None:
        self._finish(-1, -1, exc)

    def _finish(self, base_offset: int, log_append_time: int, exc: BaseException | None) -> None:
        with self.condition:
            if self.state == FINISHED:
                return
            self.base_offset = base_offset
            self.log_append_time = log_append_time
            self.exception = exc
            self.state = FINISHED
            interested = self.interested
            for future in interested:
                for waiter in future._waiter_list or ():
                    if exc is None:
                        waiter.add_result(future)
                    else:
                        waiter.add_exception(future)
            self.condition.notify_all()
        for future in interested:
            future._run_callbacks()

    def wait(self, timeout: float | None) -> bool:
        if self.state == FINISHED:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.condition:
            while self.state != FINISHED:
                if deadline is None:
                    self.condition.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self.condition.wait(remaining)
        return True


T = TypeVar("T")


class _FromBatch(Generic[T]):
    """A ``Future`` internal that ``RecordFuture`` reads from its batch; read-only."""

    __slots__ = ("_get",)

    def __init__(self, get: Callable[[RecordFuture], T]) -> None:
        self._get = get

    def __get__(self, obj: RecordFuture, owner: type | None = None) -> T:
        return self._get(obj)

    def __set__(self, obj: RecordFuture, value: T) -> None:
        raise AttributeError("a RecordFuture's state belongs to its batch")


class RecordFuture(Future[RecordMetadata]):
    """The future of one produced record; resolves to its ``RecordMetadata``."""

    __slots__ = ("_batch", "_delta", "_timestamp")

    # Set on the instance only when someone waits or registers a callback.
    _waiter_list: list[Any] | None = None
    _callbacks: list[Callable[[Future[RecordMetadata]], object]] | None = None

    def __init__(self, batch: BatchResult, delta: int, timestamp: int) -> None:
        # Future.__init__ is skipped on purpose: it makes a Condition per record.
        self._batch = batch
        self._delta = delta
        self._timestamp = timestamp

    def _metadata(self) -> RecordMetadata:
        b = self._batch
        offset = b.base_offset + self._delta if b.base_offset >= 0 else -1
        ts = b.log_append_time if b.log_append_time >= 0 else self._timestamp
        return RecordMetadata(b.topic, b.partition, offset, ts)

    # --- the public Future API ------------------------------------------------------

    def cancel(self) -> bool:
        """A record handed to the producer cannot be taken back: always False."""
        return False

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return self._batch.state != FINISHED

    def done(self) -> bool:
        return self._batch.state == FINISHED

    def result(self, timeout: float | None = None) -> RecordMetadata:
        b = self._batch
        if b.state != FINISHED and not b.wait(timeout):
            raise TimeoutError(f"record not acknowledged within {timeout} s")
        if b.exception is not None:
            raise b.exception
        return self._metadata()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        b = self._batch
        if b.state != FINISHED and not b.wait(timeout):
            raise TimeoutError(f"record not acknowledged within {timeout} s")
        return b.exception

    def add_done_callback(self, fn: Callable[[Future[RecordMetadata]], object]) -> None:
        """Call ``fn(future)`` when the record is acknowledged or fails.

        Callbacks run on the producer's IO thread: keep them short, and do not block
        there on the producer (``flush``, a ``send`` that waits for buffer space).
        """
        b = self._batch
        if b.state != FINISHED:
            with b.condition:
                if b.state != FINISHED:
                    if self._callbacks is None:
                        if self._waiter_list is None:
                            b.interested.append(self)
                        self._callbacks = []
                    self._callbacks.append(fn)
                    return
        self._call(fn)

    def set_running_or_notify_cancel(self) -> bool:
        raise RuntimeError("a RecordFuture is completed by its producer")

    def set_result(self, result: RecordMetadata) -> None:
        raise RuntimeError("a RecordFuture is completed by its producer")

    def set_exception(self, exception: BaseException | None) -> None:
        raise RuntimeError("a RecordFuture is completed by its producer")

    def _call(self, fn: Callable[[Future[RecordMetadata]], object]) -> None:
        try:
            fn(self)
        except Exception:
            log.exception("exception calling callback for %r", self)

    def _run_callbacks(self) -> None:
        for fn in self._callbacks or ():
            self._call(fn)

    # --- what concurrent.futures.wait / as_completed / repr read --------------------
    # (backed by the batch; see ``_FromBatch``)

    def _get_waiters(self) -> list[Any]:
        # Called under the batch's condition by wait() and as_completed().
        if self._waiter_list is None:
            if self._callbacks is None:
                self._batch.interested.append(self)
            self._waiter_list = []
        return self._waiter_list

    def _get_result(self) -> RecordMetadata | None:
        b = self._batch
        return self._metadata() if b.state == FINISHED and b.exception is None else None

    _condition = _FromBatch[threading.Condition](lambda f: f._batch.condition)
    _state = _FromBatch[str](lambda f: f._batch.state)
    _waiters = _FromBatch[list[Any]](_get_waiters)
    _result = _FromBatch[RecordMetadata | None](_get_result)
    _exception = _FromBatch[BaseException | None](lambda f: f._batch.exception)


class AsyncBatchResult:
    """One batch's outcome for ``AsyncProducer``: an asyncio future per record.

    Lives on the producer's event loop; ``complete`` and ``fail`` run there.
    """

    __slots__ = ("_done", "futures", "partition", "timestamps", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.futures: list[asyncio.Future[RecordMetadata]] = []
        self.timestamps: list[int] = []
        self._done = False

    def complete(self, base_offset: int, log_append_time: int) -> None:
        if self._done:
            return
        self._done = True
        topic, partition = self.topic, self.partition
        for delta, (future, ts) in enumerate(zip(self.futures, self.timestamps, strict=True)):
            if not future.done():
                offset = base_offset + delta if base_offset >= 0 else -1
                stamp = log_append_time if log_append_time >= 0 else ts
                future.set_result(RecordMetadata(topic, partition, offset, stamp))

    def fail(self, exc: BaseException) -> None:
        if self._done:
            return
        self._done = True
        for future in self.futures:
            if not future.done():
                future.set_exception(exc)

    def wait(self, timeout: float | None) -> bool:
        raise RuntimeError("an asyncio batch is awaited, not waited for")
