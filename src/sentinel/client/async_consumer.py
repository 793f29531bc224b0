"""``AsyncConsumer``: the asyncio consumer (behaviour in ``consumer``'s docstring)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import (
    AsyncIterator,
    Collection,
    Iterable,
    Mapping,
)

from sentinel.client._common import AsyncClosingContext
from sentinel.client._consumer_base import (
    RECHECK_S,
    ConsumerBase,
    direct_call,
    set_paused,
)
from sentinel.client._consumer_core import TopicPartitionArg, as_timestamps, as_tp
from sentinel.client._fetcher import EARLIEST, LATEST
from sentinel.client._group import RebalanceCallback
from sentinel.client.errors import (
    ClientClosedError,
    ClientStateError,
    ClientTimeoutError,
)
from sentinel.client.types import ConsumerRecord, OffsetAndTimestamp, TopicPartition
from sentinel.errors import InvalidArgumentError

__all__ = ["AsyncConsumer"]


class AsyncConsumer(ConsumerBase, AsyncClosingContext):
    """The asyncio consumer: same options and behaviour as ``Consumer``; beside
    ``poll``, aiokafka's ``getone()``, ``getmany(timeout_ms=...)`` and
    ``async for record in consumer:``.

    Create it inside a running loop and ``await start()`` (or use ``async with``);
    every call must come from that loop.
    """

    _callbacks_on_thread = False

    def _open(self, topics: list[str]) -> None:
        self._topics = topics
        self._data = asyncio.Event()
        self._fetcher.on_data = self._data.set
        self._started = False

    async def start(self) -> None:
        """Start on the running loop (and subscribe/assign the ``topics`` given)."""
        if self._closed:
            raise ClientClosedError("the consumer is closed")
        if self._started:
            return
        self._started = True
        await self._core.start()
        if self._topics:
            if self.config.group_id is not None:
                await self.subscribe(self._topics)
            else:
                await self._core.assign_topics(self._topics)

    def _check(self) -> None:
        if self._closed:
            raise ClientClosedError("the consumer is closed")
        if not self._started:
            raise ClientStateError("call await consumer.start() first (or use async with)")

    async def subscribe(
        self,
        topics: Iterable[str],
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
    ) -> None:
        """Join the consumer group for ``topics`` (replacing an earlier subscription)."""
        self._check()
        topic_list = [topics] if isinstance(topics, str) else list(topics)
        await self._core.subscribe(topic_list, on_assign, on_revoke)

    async def unsubscribe(self) -> None:
        """Leave the group and drop the partitions."""
        self._check()
        await self._core.unsubscribe()

    async def assign(self, partitions: Iterable[TopicPartitionArg]) -> None:
        """Read exactly these partitions, outside any group membership."""
        self._check()
        await self._core.assign([as_tp(p) for p in partitions])

    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer reads now."""
        with self._fetcher.lock:
            return set(self._fetcher.partitions)

    async def wait_for_assignment(self, timeout: float = 30.0) -> set[TopicPartition]:
        """Wait until the group has assigned this member its partitions."""
        group = self._core.group
        if group is not None:
            try:
                await asyncio.wait_for(group.joined.wait(), timeout)
            except TimeoutError:
                raise ClientTimeoutError(f"no assignment within {timeout} s") from None
        return self.assignment()

    async def poll(
        self, timeout: float = 1.0, max_records: int | None = None
    ) -> list[ConsumerRecord]:
        """Records from the assigned partitions, waiting up to ``timeout`` s for some."""
        limit = max_records or self.config.max_poll_records
        return self._deserialize(await self._collect(limit, max(0.0, timeout), ()))

    async def _collect(
        self, limit: int, timeout: float | None, only: Collection[TopicPartition]
    ) -> list[ConsumerRecord]:
        """Up to ``limit`` records (from ``only`` these partitions, if given), waiting
        up to ``timeout`` s (None: until some come)."""
        self._check()
        core, fetcher = self._core, self._fetcher
        core.note_poll()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            core.raise_group_error()
            records = fetcher.collect(limit, only)
            if records:
                return records
            if fetcher.has_buffered(only):
                continue
            if self._closed:
                raise ClientClosedError("the consumer is closed")
            remaining = RECHECK_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return []
            self._data.clear()
            try:
                await asyncio.wait_for(self._data.wait(), min(remaining, RECHECK_S))
            except TimeoutError:
                continue  # look at the group's state, then at the deadline

    async def getone(self, *partitions: TopicPartitionArg) -> ConsumerRecord:
        """The next record (from ``partitions``, if given), waiting until one comes
        (as aiokafka's ``getone``)."""
        only = frozenset(as_tp(tp) for tp in partitions)
        return self._deserialize(await self._collect(1, None, only))[0]

    async def getmany(
        self,
        *partitions: TopicPartitionArg,
        timeout_ms: float = 0,
        max_records: int | None = None,
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Records by partition (from ``partitions``, if given), waiting up to
        ``timeout_ms`` for some (0: only what is here), as aiokafka's ``getmany``."""
        only = frozenset(as_tp(tp) for tp in partitions)
        limit = max_records or self.config.max_poll_records
        records = await self._collect(limit, max(0.0, timeout_ms / 1000), only)
        out: dict[TopicPartition, list[ConsumerRecord]] = {}
        for record in self._deserialize(records):
            out.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
        return out

    def __aiter__(self) -> AsyncIterator[ConsumerRecord]:
        return self

    async def __anext__(self) -> ConsumerRecord:
        """The next record (``async for record in consumer:``); stops when the consumer
        is closed, or after ``consumer_timeout_ms`` without a record if that was given."""
        if self._closed:
            raise StopAsyncIteration
        try:
            records = await self._collect(1, self._iter_timeout_s, ())
        except ClientClosedError:
            raise StopAsyncIteration from None
        if not records:
            raise StopAsyncIteration
        return self._deserialize(records)[0]

    async def position(self, tp: TopicPartitionArg) -> int:
        """The offset of the next record ``poll`` returns from ``tp``."""
        self._check()
        return await self._core.resolve_position(as_tp(tp))

    def seek(self, tp: TopicPartitionArg, offset: int) -> None:
        """Read ``tp`` from ``offset`` on."""
        self._check()
        if offset < 0:
            raise InvalidArgumentError(f"offset must be >= 0, got {offset}")
        self._core.seek_on_loop(as_tp(tp), offset)

    async def seek_to_beginning(self, tps: Iterable[TopicPartitionArg] | None = None) -> None:
        """Read ``tps`` (default: all assigned) from their first offset."""
        self._check()
        targets = list(self._fetcher.partitions) if tps is None else [as_tp(tp) for tp in tps]
        await self._core.seek_to(targets, EARLIEST)

    async def seek_to_end(self, tps: Iterable[TopicPartitionArg] | None = None) -> None:
        """Read only records written to ``tps`` (default: all assigned) from now on."""
        self._check()
        targets = list(self._fetcher.partitions) if tps is None else [as_tp(tp) for tp in tps]
        await self._core.seek_to(targets, LATEST)

    def pause(self, tps: Iterable[TopicPartitionArg]) -> None:
        """Stop returning (and fetching) records of ``tps`` until ``resume``."""
        set_paused(self._fetcher, [as_tp(tp) for tp in tps], True, None)

    def resume(self, tps: Iterable[TopicPartitionArg]) -> None:
        """Undo ``pause``."""
        set_paused(self._fetcher, [as_tp(tp) for tp in tps], False, direct_call)

    async def beginning_offsets(
        self, partitions: Iterable[TopicPartitionArg]
    ) -> dict[TopicPartition, int]:
        """Each partition's first offset (its log start), assigned or not."""
        self._check()
        return await self._core.edge_offsets([as_tp(p) for p in partitions], EARLIEST)

    async def end_offsets(
        self, partitions: Iterable[TopicPartitionArg]
    ) -> dict[TopicPartition, int]:
        """Each partition's high watermark (the offset the next record written gets)."""
        self._check()
        return await self._core.edge_offsets([as_tp(p) for p in partitions], LATEST)

    async def offsets_for_times(
        self, timestamps: Mapping[TopicPartitionArg, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """Per partition, the offset and timestamp of the first record at or after the
        time given (ms), or None if there is none, as aiokafka's."""
        self._check()
        return await self._core.offsets_for_times(as_timestamps(timestamps))

    async def commit(self, offsets: Mapping[TopicPartitionArg, int] | None = None) -> None:
        """Commit ``offsets`` (the next offset to read, per partition), or the positions."""
        self._check()
        chosen = None if offsets is None else {as_tp(tp): o for tp, o in offsets.items()}
        await self._core.commit(chosen)

    def commit_async(
        self, offsets: Mapping[TopicPartitionArg, int] | None = None
    ) -> asyncio.Task[dict[TopicPartition, int]]:
        """Commit in the background (the positions as of now, by default)."""
        self._check()
        chosen = (
            self._fetcher.positions()
            if offsets is None
            else {as_tp(tp): o for tp, o in offsets.items()}
        )
        return asyncio.get_running_loop().create_task(self._core.commit(chosen))

    async def committed(self, tp: TopicPartitionArg) -> int | None:
        """The group's committed offset of ``tp`` (None: nothing committed)."""
        self._check()
        target = as_tp(tp)
        return (await self._core.committed([target])).get(target)

    async def close(self) -> None:
        """Commit (with auto-commit), leave the group, release everything. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._data.set()
        if self._started:
            await self._core.close(commit=True)
        else:
            await self._core.connections.close()

    async def __aenter__(self) -> AsyncConsumer:
        await self.start()
        return self
