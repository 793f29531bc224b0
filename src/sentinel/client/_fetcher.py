"""The consumer's data path: per-partition positions, prefetching and decoding.

``Fetcher`` keeps one ``PartitionFetch`` per assigned partition and, on the client's
event loop, one driver task. As Kafka's consumer, it long-polls each broker with ONE
call, a ``FetchMany`` of every assigned partition that broker leads and that may be
fetched: its position is known, it is not paused, no error or recovery is pending and
its buffer holds less than ``fetch_max_bytes``. Each partition's answer (whole
RecordBatch v2 batches, about ``fetch_max_bytes`` at most) is appended to its buffer, so
a partition stays at most about two answers ahead of the application. Which calls to
make, and when a long-poll is cancelled and sent again so that a partition that became
fetchable meanwhile is not held back, is ``_fetch_plan``'s pure decision; the calls and
their answers are ``_fetch_calls``' (a broker without FetchMany gets one long-poll
``Fetch`` per partition instead). ``collect`` (``poll``, on the application's thread)
decodes the buffers into records (``_collector``).

Two offsets per partition::

    position      the next record poll() returns; what commit() commits
    fetch_offset  where the next fetch starts (ahead of position by what is buffered)

``seek`` moves both, drops the buffer and bumps ``generation``; ``restart`` wakes the
driver (a long-poll at the old offset is sent again). An answer is stored only if it
was fetched from the partition's current ``fetch_offset`` in its current generation.

Positions are resolved in batches (one FetchOffsets for the group's committed offsets,
then ListOffsets for the rest, ``RESOLVE_CONCURRENCY`` at a time). A partition's refusal
(in a FetchMany answer, or a failed call, for each of its partitions) is recovered from
by a task of that partition while it is left out of the fetches, as a Fetch's was: a
moved leader is looked up again, an offset out of range is reset by
``auto_offset_reset``, other retriable errors wait ``retry_backoff_ms``, the rest are
raised by the next poll. A refusal from before a seek is dropped.

Locking: ``lock`` guards every ``PartitionFetch``; the loop takes it to store an answer
and to read the partitions' state, ``collect`` to take a chunk and to advance
positions. ``collect``/``seek`` are for one application thread at a time (as Kafka's
consumer, it is not meant to be polled from several threads at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Collection

from sentinel.client._channel import unary
from sentinel.client._collector import Collector
from sentinel.client._fetch_calls import Answer, FetchCalls
from sentinel.client._fetch_plan import Ready
from sentinel.client._metadata import LEADER_MOVED, Metadata
from sentinel.client._partition_fetch import FetchConfig, PartitionFetch
from sentinel.client.errors import (
    ClientClosedError,
    ClientStateError,
    OffsetOutOfRangeError,
    SentinelClientError,
    UnresolvableBrokerError,
)
from sentinel.client.types import ConsumerRecord, OffsetAndTimestamp, TopicPartition
from sentinel.errors import SentinelError
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.record import iter_batches, parse_header

__all__ = ["FetchConfig", "Fetcher", "PartitionFetch"]

log = logging.getLogger(__name__)

EARLIEST = -2
LATEST = -1
RESOLVE_CONCURRENCY = 16
"""ListOffsets calls at once while positions are resolved."""
RESOLVED_BATCH = 100
"""Positions resolved between two looks of the driver while a batch resolves."""

Committed = Callable[[list[TopicPartition]], Awaitable[dict[TopicPartition, int]]]
"""The group's committed offsets of some partitions (absent: none committed)."""


class Fetcher:
    """Assigned partitions, their positions, the fetch driver and decoding."""

    def __init__(
        self,
        config: FetchConfig,
        metadata: Metadata,
        *,
        committed: Committed | None = None,
    ) -> None:
        self.config = config
        self.metadata = metadata
        self.lock = threading.Lock()
        self.partitions: dict[TopicPartition, PartitionFetch] = {}
        self.on_data: Callable[[], None] = lambda: None  # lock held; wakes poll()
        self.committed = committed  # group's committed offsets, for new partitions
        self._loop: asyncio.AbstractEventLoop | None = None
        self._collector = Collector(self.lock, self.partitions, config.fetch_max_bytes, self._room)
        self._timeout = config.request_timeout_ms / 1000.0
        self._closed = False
        self._changed = asyncio.Event()  # the driver has something to look at
        self._driver: asyncio.Task[None] | None = None
        self._calls = FetchCalls(config, metadata, self._changed.set)
        self._tasks: set[asyncio.Task[None]] = set()  # batches of positions resolving

    # --- assignment (on the loop) ------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def assign(self, tps: list[TopicPartition]) -> None:
        """Own exactly ``tps`` from now on (on the loop); the driver fetches them."""
        wanted = dict.fromkeys(tps)
        with self.lock:
            gone = [p for tp, p in self.partitions.items() if tp not in wanted]
            for part in gone:
                del self.partitions[part.tp]
            for tp in wanted:
                if tp not in self.partitions:
                    self.partitions[tp] = PartitionFetch(tp)
        for part in gone:
            if part.job is not None:
                part.job.cancel()
        if self._closed:
            return
        if self._driver is None:
            assert self._loop is not None
            self._driver = self._loop.create_task(self._drive(), name="sentinel-fetcher")
        self._changed.set()

    def restart(self, tp: TopicPartition) -> None:
        """After a seek of ``tp`` (on the loop): end its recovery, if any, and let the
        driver fetch it from its new offset (a long-poll at the old one is re-sent)."""
        part = self.partitions.get(tp)
        if part is None:
            return
        if part.job is not None:
            part.job.cancel()
            part.job = None
        self._changed.set()

    def wake(self, tp: TopicPartition) -> None:
        """The buffer of ``tp`` has room again, it was resumed, or its error was raised
        (on the loop): the driver looks again."""
        self._changed.set()

    async def close(self) -> None:
        self._closed = True
        with self.lock:
            jobs = [p.job for p in self.partitions.values() if p.job is not None]
            self.partitions.clear()
        tasks = [*jobs, *self._tasks, *self._calls.tasks()]
        if self._driver is not None:
            tasks.append(self._driver)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- positions -----------------------------------------------------------------

    async def list_offset(self, tp: TopicPartition, timestamp: int) -> int:
        """ListOffsets: -2 earliest, -1 latest (the next offset to be written)."""
        return (await self.list_offset_and_timestamp(tp, timestamp)).offset

    async def list_offset_and_timestamp(
        self, tp: TopicPartition, timestamp: int
    ) -> OffsetAndTimestamp:
        """ListOffsets: -2 earliest, -1 latest (the next offset to be written), else the
        first record at or after ``timestamp`` ms (offset -1: none), at the partition's
        leader (assigned or not): found again (hint, else fresh metadata) while it
        moves, within the request timeout."""
        request = pb.ListOffsetsRequest(
            topic=tp.topic, partition=tp.partition, timestamp_ms=timestamp
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        attempt = 0
        while True:
            stub = self.metadata.stub_for(tp)
            remaining = max(0.05, deadline - loop.time())
            try:
                resp: pb.ListOffsetsResponse = await unary(
                    stub.ListOffsets(request, timeout=remaining)
                )
                return OffsetAndTimestamp(resp.offset, resp.timestamp_ms)
            except LEADER_MOVED as exc:
                attempt += 1
                pause = min(self.config.retry_backoff_ms / 1000.0 * attempt, 0.5)
                if isinstance(exc, UnresolvableBrokerError) or loop.time() + pause >= deadline:
                    raise
                self.metadata.note_leader(tp, getattr(exc, "leader", None))
                with contextlib.suppress(SentinelClientError):
                    await self.metadata.fetch([tp.topic], timeout=remaining)
                await asyncio.sleep(pause)

    async def _reset_offset(self, tp: TopicPartition) -> int:
        policy = self.config.auto_offset_reset
        if policy == "none":
            raise OffsetOutOfRangeError(
                f"no committed offset for {tp} and auto_offset_reset is 'none'",
                reason=None,
            )
        return await self.list_offset(tp, EARLIEST if policy == "earliest" else LATEST)

    async def _resolve(self, part: PartitionFetch) -> None:
        """Give ``part`` a position: the group's committed offset, else the reset policy."""
        offset: int | None = None
        if self.committed is not None:
            found = await self.committed([part.tp])
            offset = found.get(part.tp)
        if offset is None or offset < 0:
            offset = await self._reset_offset(part.tp)
        with self.lock:
            if part.position is None:
                self._seek_locked(part, offset)

    async def _resolve_all(self, parts: list[PartitionFetch]) -> None:
        """``_resolve`` for a batch (``resolving`` set): one FetchOffsets for all, then
        the reset policy for those without a committed offset. The driver is told every
        ``RESOLVED_BATCH`` partitions done (each fetchable once its own is), not at each
        one: a new partition sends the long-poll again with all of them. A partition
        whose lookup fails recovers as from a failed fetch."""
        backoff = self.config.retry_backoff_ms / 1000.0
        limit = asyncio.Semaphore(RESOLVE_CONCURRENCY)
        done = 0

        async def one(part: PartitionFetch, offset: int | None) -> None:
            nonlocal done
            generation = part.generation
            try:
                if offset is None or offset < 0:
                    async with limit:
                        if part.position is not None:  # seeked meanwhile
                            return
                        offset = await self._reset_offset(part.tp)
                with self.lock:
                    if part.position is None:
                        self._seek_locked(part, offset)
            except ClientClosedError:
                return
            except Exception as exc:  # recovered from or reported, as a failed fetch
                await self._failed(part, generation, exc, backoff)
            finally:
                part.resolving = False
                done += 1
                if done % RESOLVED_BATCH == 0:
                    self._changed.set()

        try:
            try:
                found = await self.committed([p.tp for p in parts]) if self.committed else {}
            except ClientClosedError:
                return
            except Exception as exc:  # every partition recovers (or reports) on its own
                await asyncio.gather(*(self._failed(p, p.generation, exc, backoff) for p in parts))
                return
            await asyncio.gather(*(one(p, found.get(p.tp)) for p in parts))
        finally:
            for part in parts:
                part.resolving = False
            self._changed.set()

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Move ``tp``'s position (lock not held); the caller restarts its fetching."""
        with self.lock:
            part = self.partitions.get(tp)
            if part is None:
                raise _not_assigned(tp)
            self._seek_locked(part, offset)

    @staticmethod
    def _seek_locked(part: PartitionFetch, offset: int) -> None:
        part.position = offset
        part.fetch_offset = offset
        part.generation += 1
        part.error = None
        part.drop_buffer()

    def positions(self) -> dict[TopicPartition, int]:
        """The known positions of the assigned partitions."""
        with self.lock:
            return {tp: p.position for tp, p in self.partitions.items() if p.position is not None}

    # --- the driver -------------------------------------------------------------------

    async def _drive(self) -> None:
        """The fetcher's one task: file the answers of the calls that ended, then make
        the calls ``_fetch_plan`` asks for; again whenever something changes."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                for call in self._calls.ended():
                    for answer in self._calls.settle(call):
                        self._file(answer)
                self._dispatch()
            except ClientClosedError:
                return
            except Exception:  # a bug: said, and the driver goes on after a pause
                log.exception("the fetch driver failed")
                await asyncio.sleep(self.config.retry_backoff_ms / 1000.0)
                self._changed.set()

    def _file(self, answer: Answer) -> None:
        r = answer.ready
        if answer.error is not None:
            self._recover(answer.part, r.generation, answer.error)
        elif answer.data is not None:
            self._store(answer.part, r.generation, r.offset, answer.data)

    def _dispatch(self) -> None:
        """Resolve the positions not known yet; cancel and send calls as planned."""
        max_bytes = self.config.fetch_max_bytes
        leader = self.metadata.leader_address
        ready: list[Ready] = []
        unresolved: list[PartitionFetch] = []
        with self.lock:
            for part in self.partitions.values():
                if not part.fetchable or part.buffered >= max_bytes:
                    continue
                if part.position is None:
                    unresolved.append(part)
                    continue
                offset = part.fetch_offset
                ready.append(
                    Ready(
                        part.tp,
                        leader(part.tp),
                        offset,
                        part.generation,
                        0 <= offset < part.high_watermark,
                        part.covered_by(),
                    )
                )
        if unresolved:
            for part in unresolved:
                part.resolving = True
            task = asyncio.get_running_loop().create_task(self._resolve_all(unresolved))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if ready:
            self._calls.carry_out(self._calls.plan(ready), self.partitions)

    def _recover(self, part: PartitionFetch, generation: int, exc: BaseException) -> None:
        """``part``'s fetch failed: it is left out of the fetches while a task of its own
        recovers (``_failed``)."""
        if (
            self._closed
            or self.partitions.get(part.tp) is not part
            or part.job is not None
            or part.generation != generation  # a seek since: the error is moot
        ):
            return
        assert self._loop is not None
        part.job = self._loop.create_task(self._recovering(part, generation, exc))

    async def _recovering(self, part: PartitionFetch, generation: int, exc: BaseException) -> None:
        try:
            if isinstance(exc, Exception):
                await self._failed(part, generation, exc, self.config.retry_backoff_ms / 1000.0)
        finally:
            if part.job is asyncio.current_task():
                part.job = None
            self._changed.set()

    async def _failed(
        self, part: PartitionFetch, generation: int, exc: Exception, backoff: float
    ) -> None:
        """A fetch (or position lookup) failed: recover, or report it through poll()."""
        try:
            if isinstance(exc, OffsetOutOfRangeError):
                await self._out_of_range(part, generation, exc)
                return
            if isinstance(exc, LEADER_MOVED):  # moved, being elected, or its broker gone
                self.metadata.note_leader(part.tp, getattr(exc, "leader", None))
                with contextlib.suppress(SentinelClientError):
                    await self.metadata.fetch([part.tp.topic])
            if not getattr(exc, "retriable", False):
                if not isinstance(exc, SentinelError):
                    log.exception("fetching %s failed", part.tp, exc_info=exc)
                self._fail(part, exc, generation)
        except SentinelClientError as again:
            log.info("%s: recovering from %s failed: %s", part.tp, exc, again)
        await asyncio.sleep(backoff)

    def _store(
        self,
        part: PartitionFetch,
        generation: int,
        offset: int,
        resp: pb.FetchResponse | pb.FetchedPartition,
    ) -> None:
        """File an answer (a ``FetchResponse`` or a FetchMany's ``FetchedPartition``)
        fetched from ``offset`` in ``generation``; dropped unless that is still where
        the partition fetches from."""
        data = resp.record_batches
        next_offset = offset
        if data:
            last = None
            for last in iter_batches(data, allow_partial_tail=True):  # noqa: B007
                pass
            if last is not None:
                next_offset = max(offset, parse_header(last).next_offset)
        next_offset = max(next_offset, resp.next_offset)
        with self.lock:
            if (
                part.generation != generation
                or part.fetch_offset != offset
                or self.partitions.get(part.tp) is not part
            ):
                return  # a seek happened meanwhile, or this was fetched twice
            part.high_watermark = resp.high_watermark
            part.log_start_offset = resp.log_start_offset
            part.fetch_offset = next_offset
            if data:
                part.chunks.append(data)
                part.buffered += len(data)
                self.on_data()

    async def _out_of_range(
        self, part: PartitionFetch, generation: int, exc: OffsetOutOfRangeError
    ) -> None:
        policy = self.config.auto_offset_reset
        if policy == "none":
            self._fail(part, exc, generation)
            return
        if policy == "earliest" and exc.log_start >= 0:
            target = exc.log_start
        elif policy == "latest" and exc.log_end >= 0:
            target = exc.log_end
        else:
            target = await self._reset_offset(part.tp)
        with self.lock:
            if part.generation == generation:
                log.info(
                    "%s: offset %s out of range, reset to %d", part.tp, part.fetch_offset, target
                )
                self._seek_locked(part, target)

    def _fail(self, part: PartitionFetch, exc: BaseException, generation: int = -1) -> None:
        """Report ``exc`` through the next poll; not if it came from a fetch or lookup
        of an older ``generation`` than the partition's now (a seek made it moot)."""
        with self.lock:
            if generation >= 0 and part.generation != generation:
                return
            part.error = exc
            self.on_data()

            part.error = exc
            self.on_data()

    # --- records for poll (the application's thread: ``_collector``) --------------------

    def collect(
        self, max_records: int, only: Collection[TopicPartition] = ()
    ) -> list[ConsumerRecord]:
        """Up to ``max_records`` buffered records (``Collector.collect``)."""
        return self._collector.collect(max_records, only)

    def has_buffered(self, only: Collection[TopicPartition] = ()) -> bool:
        """Whether ``collect`` would find something (a hint; ``Collector``)."""
        return self._collector.has_buffered(only)

    def _room(self, tp: TopicPartition) -> None:
        """From the application's thread: the driver may fetch ``tp`` again."""
        if self._loop is not None:
            _call_soon(self._loop, self.wake, tp)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., object], *args: object) -> None:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        fn(*args)
        return
    with contextlib.suppress(RuntimeError):  # loop closed
        loop.call_soon_threadsafe(fn, *args)


def _not_assigned(tp: TopicPartition) -> SentinelClientError:
    return ClientStateError(f"{tp} is not assigned to this consumer")
