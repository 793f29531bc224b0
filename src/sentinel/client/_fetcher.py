"""The consumer's data path: per-partition positions, prefetching and decoding.

``Fetcher`` keeps one ``PartitionFetch`` per assigned partition and, on the client's
event loop, one task per partition that long-polls ``Fetch`` from the partition's
fetch offset and appends the raw answer (whole RecordBatch v2 batches) to the
partition's buffer, staying at most about two answers ahead of the application.
``collect`` (called by ``poll`` on the application's thread) decodes buffered
batches one at a time and hands out records from each partition's position,
skipping those before it (an answer starts with the batch holding the fetch offset).

Two offsets per partition::

    position      the next record poll() returns; what commit() commits
    fetch_offset  where the next Fetch starts (ahead of position by what is buffered)

``seek`` moves both, drops the buffer and restarts the partition's task (so a
long-poll at the old offset does not hold it up); answers to fetches started before
are recognised by ``generation`` and dropped.

Locking: ``lock`` guards every ``PartitionFetch``; the loop's tasks take it to store
an answer, ``collect`` to take a chunk and to advance positions. Decoding runs without
it. ``collect``/``seek`` are for one application thread at a time (as Kafka's
consumer, it is not meant to be polled from several threads at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass, field

from sentinel.client._channel import unary
from sentinel.client._decode import decode_consumer_records
from sentinel.client._metadata import LEADER_MOVED, Metadata
from sentinel.client.errors import (
    ClientClosedError,
    ClientStateError,
    OffsetOutOfRangeError,
    SentinelClientError,
    UnresolvableBrokerError,
)
from sentinel.client.types import ConsumerRecord, TopicPartition
from sentinel.errors import SentinelError
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.record import iter_batches, parse_header

__all__ = ["FetchConfig", "Fetcher", "PartitionFetch"]

log = logging.getLogger(__name__)

EARLIEST = -2
LATEST = -1


Committed = Callable[[list[TopicPartition]], Awaitable[dict[TopicPartition, int]]]
"""The group's committed offsets of some partitions (absent: none committed)."""


@dataclass(frozen=True, slots=True)
class FetchConfig:
    """How the fetcher reads. See ``Consumer`` for the meaning."""

    fetch_max_bytes: int
    fetch_max_wait_ms: int
    auto_offset_reset: str  # earliest | latest | none
    request_timeout_ms: int
    retry_backoff_ms: float


@dataclass(slots=True, eq=False)
class PartitionFetch:
    """The fetch state of one assigned partition (guarded by the fetcher's lock)."""

    tp: TopicPartition
    position: int | None = None  # None: to be resolved (committed offset or reset)
    fetch_offset: int = 0
    generation: int = 0
    chunks: deque[bytes] = field(default_factory=deque)  # raw Fetch answers
    buffered: int = 0  # bytes in ``chunks``
    # The collector's own state (no lock): valid while ``decode_gen == generation``.
    decode_gen: int = -1
    batches: Iterator[memoryview] | None = None  # batches of the chunk being read
    records: list[ConsumerRecord] = field(default_factory=list)  # decoded, not returned
    index: int = 0  # next of ``records`` to return
    batch_end: int = -1  # the offset after the batch ``records`` came from
    high_watermark: int = -1
    log_start_offset: int = -1
    paused: bool = False
    error: BaseException | None = None  # raised by the next poll
    task: asyncio.Task[None] | None = None
    space: asyncio.Event | None = None  # set when the buffer has room again

    def drop_buffer(self) -> None:
        """Forget the fetched data (lock held); the collector sees the new generation."""
        self.chunks.clear()
        self.buffered = 0

    def reset_decoding(self, generation: int) -> None:
        """The collector starts over for ``generation`` (the collector's thread)."""
        self.decode_gen = generation
        self.batches = None
        self.records = []
        self.index = 0
        self.batch_end = -1


class Fetcher:
    """Assigned partitions, their positions, prefetch tasks and decoding."""

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
        self._rotation = 0
        self._timeout = config.request_timeout_ms / 1000.0
        self._closed = False

    # --- assignment (on the loop) ------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def assign(self, tps: list[TopicPartition]) -> None:
        """Own exactly ``tps`` from now on (on the loop): start and stop their tasks."""
        wanted = dict.fromkeys(tps)
        with self.lock:
            gone = [p for tp, p in self.partitions.items() if tp not in wanted]
            for part in gone:
                del self.partitions[part.tp]
            for tp in wanted:
                if tp not in self.partitions:
                    self.partitions[tp] = PartitionFetch(tp)
            added = [self.partitions[tp] for tp in wanted if self.partitions[tp].task is None]
        for part in gone:
            if part.task is not None:
                part.task.cancel()
        for part in added:
            self._start(part)

    def _start(self, part: PartitionFetch) -> None:
        assert self._loop is not None
        if self._closed:
            return
        part.space = asyncio.Event()
        part.task = self._loop.create_task(self._run(part), name=f"sentinel-fetch-{part.tp}")

    def restart(self, tp: TopicPartition) -> None:
        """Restart ``tp``'s task (on the loop): after a seek, drop its long-poll."""
        part = self.partitions.get(tp)
        if part is None:
            return
        if part.task is not None:
            part.task.cancel()
        self._start(part)

    def wake(self, tp: TopicPartition) -> None:
        """The buffer of ``tp`` has room again, or it was resumed (on the loop)."""
        part = self.partitions.get(tp)
        if part is not None and part.space is not None:
            part.space.set()

    async def close(self) -> None:
        self._closed = True
        with self.lock:
            tasks = [p.task for p in self.partitions.values() if p.task is not None]
            self.partitions.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- positions -----------------------------------------------------------------

    async def list_offset(self, tp: TopicPartition, timestamp: int) -> int:
        """ListOffsets: -2 earliest, -1 latest (the next offset to be written), at the
        partition's leader: found again (hint, else fresh metadata) while it moves,
        within the request timeout."""
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
                return resp.offset
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

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Move ``tp``'s position (lock not held); the caller restarts its task."""
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

    # --- the fetch task -------------------------------------------------------------

    async def _run(self, part: PartitionFetch) -> None:
        backoff = self.config.retry_backoff_ms / 1000.0
        max_wait = self.config.fetch_max_wait_ms
        max_bytes = self.config.fetch_max_bytes
        assert part.space is not None
        space = part.space
        while True:
            generation = part.generation
            try:
                with self.lock:
                    blocked = part.buffered >= max_bytes or part.paused or part.error is not None
                    if blocked:
                        space.clear()
                    unresolved = part.position is None
                    offset, generation = part.fetch_offset, part.generation
                if blocked:
                    await space.wait()
                    continue
                if unresolved:
                    await self._resolve(part)
                    continue
                request = pb.FetchRequest(
                    topic=part.tp.topic,
                    partition=part.tp.partition,
                    offset=offset,
                    max_bytes=max_bytes,
                    max_wait_ms=max_wait,
                )
                stub = self.metadata.stub_for(part.tp)
                call = stub.Fetch(request, timeout=self._timeout + max_wait / 1000.0)
                resp: pb.FetchResponse = await unary(call)
                self._store(part, generation, offset, resp)
            except asyncio.CancelledError:
                raise
            except ClientClosedError:
                return
            except Exception as exc:  # every failure is recovered from or reported
                await self._failed(part, generation, exc, backoff)

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
                self._fail(part, exc)
        except SentinelClientError as again:
            log.info("%s: recovering from %s failed: %s", part.tp, exc, again)
        await asyncio.sleep(backoff)

    def _store(
        self, part: PartitionFetch, generation: int, offset: int, resp: pb.FetchResponse
    ) -> None:
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
            if part.generation != generation or self.partitions.get(part.tp) is not part:
                return  # a seek happened meanwhile
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
            self._fail(part, exc)
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

    def _fail(self, part: PartitionFetch, exc: BaseException) -> None:
        with self.lock:
            part.error = exc
            self.on_data()

    # --- collecting records (the application's thread) --------------------------------

    def collect(
        self, max_records: int, only: Collection[TopicPartition] = ()
    ) -> list[ConsumerRecord]:
        """Up to ``max_records`` buffered records, from the partitions (``only`` these,
        if given) in turn.

        Raises a partition's pending error (offset out of range with no reset policy,
        a non-retriable fetch error) once; the partition then stays stopped until a
        seek.
        """
        out: list[ConsumerRecord] = []
        with self.lock:
            parts = list(self.partitions.values())
        if only:
            parts = [part for part in parts if part.tp in only]
        if not parts:
            return out
        self._rotation = (self._rotation + 1) % len(parts)
        for part in parts[self._rotation :] + parts[: self._rotation]:
            if len(out) >= max_records:
                break
            if part.error is not None:
                with self.lock:
                    error, part.error = part.error, None
                if error is not None:
                    if out:
                        part.error = error  # report it next time; deliver these first
                        break
                    if self._loop is not None:  # the task tries again (until a seek)
                        _call_soon(self._loop, self.wake, part.tp)
                    raise error
            if not part.paused:
                self._collect_partition(part, out, max_records)
        return out

    def _collect_partition(
        self, part: PartitionFetch, out: list[ConsumerRecord], max_records: int
    ) -> None:
        with self.lock:
            generation = part.generation
        if part.decode_gen != generation:
            part.reset_decoding(generation)
        while len(out) < max_records:
            records = part.records
            if part.index < len(records):
                take = records[part.index : part.index + max_records - len(out)]
                with self.lock:
                    if part.generation != generation:
                        return  # a seek or reset meanwhile: these are stale
                    part.position = take[-1].offset + 1
                out.extend(take)
                part.index += len(take)
                continue
            if part.batch_end >= 0:
                with self.lock:
                    if part.generation != generation:
                        return
                    if part.position is not None and part.batch_end > part.position:
                        part.position = part.batch_end
                part.batch_end = -1
            if not self._next_batch(part, generation):
                return

    def _next_batch(self, part: PartitionFetch, generation: int) -> bool:
        """Decode the partition's next buffered batch into ``records``; False if none."""
        while True:
            if part.batches is not None:
                view = next(part.batches, None)
                if view is not None:
                    self._decode(part, view)
                    return True
                part.batches = None
            with self.lock:
                if not part.chunks or part.generation != generation:
                    return False
                chunk = part.chunks.popleft()
                part.buffered -= len(chunk)
                wake = part.buffered < self.config.fetch_max_bytes
            if wake and self._loop is not None:
                _call_soon(self._loop, self.wake, part.tp)
            part.batches = iter_batches(chunk, allow_partial_tail=True)

    def _decode(self, part: PartitionFetch, view: memoryview) -> None:
        position = part.position if part.position is not None else 0
        header = parse_header(view)
        part.index = 0
        part.records = []
        part.batch_end = header.next_offset
        if header.next_offset <= position or header.is_control:
            return
        part.records = decode_consumer_records(view, part.tp.topic, part.tp.partition, position)

    def has_buffered(self, only: Collection[TopicPartition] = ()) -> bool:
        """Whether ``collect`` (from ``only`` these, if given) would find something
        (lock held or not: a hint). Paused partitions' data does not count."""
        for part in self.partitions.values():
            if only and part.tp not in only:
                continue
            if part.error is not None:
                return True
            if part.paused:
                continue
            if part.chunks:
                return True
            if part.decode_gen == part.generation and (
                part.index < len(part.records) or part.batches is not None
            ):
                return True
        return False


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
