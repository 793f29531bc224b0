"""Consumers: ``Consumer`` (blocking) and ``AsyncConsumer`` (asyncio).

A consumer reads the partitions it is assigned: by hand (``assign``), or as a member
of a consumer group (``subscribe``, which needs a ``group_id``), where the broker
deals the subscribed topics' partitions among the members and rebalances when one
joins or leaves. ``poll`` (or iterating the consumer) returns records from the
partitions' positions; the position of a partition starts at the group's committed
offset, else at ``auto_offset_reset`` (``"latest"``: only new records; ``"earliest"``: from the
start; ``"none"``: ``poll`` raises ``OffsetOutOfRangeError``).

Prefetch: on the IO loop, one long-poll ``FetchMany`` per broker covers every assigned
partition it leads (``fetch_max_bytes`` per partition's answer, ``fetch_max_wait_ms``
at most), as a Kafka consumer's one Fetch per broker does; each partition keeps up to
about two answers buffered, and ``poll`` decodes them on the caller's thread.

Commits: ``commit()`` commits the positions (the offsets after the records returned
so far), or the offsets given. With ``enable_auto_commit`` the positions are also
committed every ``auto_commit_interval_ms``, before a rebalance takes partitions
away, and on ``close``; what is auto-committed is the position as of the start of the
latest ``poll``, so a record is committed only once the application has come back
for more (at-least-once).

``on_assign`` / ``on_revoke`` run on a worker thread in ``Consumer`` (so they may
call ``commit``, ``seek`` and the like) and on the loop in ``AsyncConsumer``
(coroutine functions are awaited).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import (
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
)
from typing import Any, TypeVar

from sentinel.client._channel import LoopThread
from sentinel.client._common import AT_EXIT_TIMEOUT_S, ClosingContext
from sentinel.client._consumer_base import (
    RECHECK_S,
    CommitCallback,
    ConsumerBase,
    Deserializer,
    commit_done,
    log,
    set_paused,
)
from sentinel.client._consumer_core import TopicPartitionArg, as_timestamps, as_tp
from sentinel.client._fetcher import EARLIEST, LATEST
from sentinel.client._group import RebalanceCallback
from sentinel.client.async_consumer import AsyncConsumer
from sentinel.client.errors import (
    ClientClosedError,
    SentinelClientError,
)
from sentinel.client.types import ConsumerRecord, OffsetAndTimestamp, TopicPartition
from sentinel.errors import InvalidArgumentError

__all__ = ["AsyncConsumer", "Consumer", "Deserializer"]

T = TypeVar("T")


class Consumer(ConsumerBase, ClosingContext):
    """Reads records from assigned or subscribed partitions; blocking.

    Not meant for concurrent use from several threads (as Kafka's consumer), except
    ``close`` and the callbacks' own calls.

    The first argument is the bootstrap address (``"host:port,..."`` or a list; or
    ``bootstrap_servers=``), or a confluent-kafka style config dict
    (``Consumer({"bootstrap.servers": "h:p", "group.id": "g",
    "auto.offset.reset": "earliest"}, topics=["t"])``; an unknown or unsupported key
    raises ``ClientConfigError`` naming it).

    ``for record in consumer:`` yields record after record, blocking for the next;
    ``poll`` returns what has come within a timeout.

    Options: ``key_deserializer`` / ``value_deserializer`` (called on each key /
    value that is not None: the records then carry what they return),
    ``consumer_timeout_ms`` (None: iteration waits for ever; else it stops after
    that long without a record, as kafka-python's),
    ``group_id`` (None: no group, no commits), ``topics`` (subscribe to them
    with a group, else assign all their partitions), ``auto_offset_reset``
    (``"latest"``, ``"earliest"``, ``"none"``), ``enable_auto_commit`` (True),
    ``auto_commit_interval_ms`` (5000), ``session_timeout_ms`` (10000),
    ``heartbeat_interval_ms`` (3000), ``rebalance_timeout_ms`` (the session timeout),
    ``max_poll_records`` (500), ``fetch_max_bytes`` (1 MiB per partition and answer),
    ``fetch_max_wait_ms`` (500), ``assignor`` (``"roundrobin"`` or ``"range"``),
    ``on_assign`` / ``on_revoke``, ``client_id``, ``request_timeout_ms`` (30000),
    ``retry_backoff_ms`` (100), ``allow_auto_create_topics`` (False: subscribing to a
    topic that does not exist waits for it to be created, as librdkafka; True: the
    broker creates it if its --auto-create-topics is on, as Kafka's consumer option),
    ``group_instance_id`` (None; Kafka's ``group.instance.id``, KIP-345: a static
    member. Restarted with the same id within the session timeout, it takes its own
    place back: the same partitions, no rebalance for the others. It does not leave
    the group when closed, as Kafka's static members do not: its partitions wait for it
    until the session timeout. A newer instance with the same id fences this one:
    ``poll`` raises ``FencedInstanceIdError`` and the membership stops).
    """

    _callbacks_on_thread = True

    def _open(self, topics: list[str]) -> None:
        self._data = threading.Condition(self._fetcher.lock)
        self._woken = False  # under the fetcher's lock
        self._fetcher.on_data = self._data.notify_all
        self._io = LoopThread("sentinel-consumer-io")
        self._close_at_exit()
        try:
            self._io.run(self._core.start())
            if topics:
                if self.config.group_id is not None:
                    self.subscribe(topics)
                else:
                    self._run(self._core.assign_topics(topics))
        except BaseException:
            self.close()
            raise

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._closed:
            coro.close()
            raise ClientClosedError("the consumer is closed")
        return self._io.run(coro, timeout)

    # --- assignment -------------------------------------------------------------------

    def subscribe(
        self,
        topics: Iterable[str],
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
    ) -> None:
        """Join the consumer group for ``topics`` (replacing an earlier subscription)."""
        topic_list = [topics] if isinstance(topics, str) else list(topics)
        self._run(self._core.subscribe(topic_list, on_assign, on_revoke))

    def unsubscribe(self) -> None:
        """Leave the group (committing first with auto-commit) and drop the partitions."""
        self._run(self._core.unsubscribe())

    def assign(self, partitions: Iterable[TopicPartitionArg]) -> None:
        """Read exactly these partitions, outside any group membership."""
        self._run(self._core.assign([as_tp(p) for p in partitions]))

    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer reads now."""
        with self._fetcher.lock:
            return set(self._fetcher.partitions)

    def subscription(self) -> set[str]:
        """The topics subscribed to (empty when assigned by hand)."""
        group = self._core.group
        return set(group.topics) if group is not None else set()

    def wait_for_assignment(self, timeout: float = 30.0) -> set[TopicPartition]:
        """Block until the group has assigned this member its partitions."""
        group = self._core.group
        if group is None:
            return self.assignment()

        async def joined() -> None:
            await group.joined.wait()

        self._run(joined(), timeout)
        return self.assignment()

    # --- reading ----------------------------------------------------------------------

    def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list[ConsumerRecord]:
        """Records from the assigned partitions, waiting up to ``timeout`` s for some."""
        records = self._collect(max_records or self.config.max_poll_records, max(0.0, timeout))
        return self._deserialize(records)

    def _collect(self, limit: int, timeout: float | None) -> list[ConsumerRecord]:
        """Up to ``limit`` records, waiting up to ``timeout`` s (None: until some come)."""
        if self._closed:
            raise ClientClosedError("the consumer is closed")
        core, fetcher = self._core, self._fetcher
        core.note_poll()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            core.raise_group_error()
            records = fetcher.collect(limit)
            if records:
                return records
            with fetcher.lock:
                if fetcher.has_buffered():
                    continue
                if self._closed:
                    raise ClientClosedError("the consumer is closed")
                if self._woken:
                    self._woken = False
                    return []
                if deadline is None:  # wake now and then for a group error
                    self._data.wait(RECHECK_S)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._data.wait(remaining)

    def wakeup(self) -> None:
        """Make the ``poll`` waiting now (or the next one, if none waits) return at once,
        with no records if none have come (Kafka's ``wakeup``, which raises instead); a
        ``for record in consumer`` loop then ends, as after ``consumer_timeout_ms``.

        Safe from any thread and from a signal handler: it only hands a call to the
        client's IO thread, and never takes a lock the interrupted thread may hold."""
        if not self._closed:
            with contextlib.suppress(RuntimeError):  # its loop closed: nothing waits
                self._io.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        """(on the IO thread) The other half of ``wakeup``."""
        with self._fetcher.lock:
            self._woken = True
            self._data.notify_all()

    def __iter__(self) -> Iterator[ConsumerRecord]:
        return self

    def __next__(self) -> ConsumerRecord:
        """The next record, blocking until one comes (``for record in consumer:``).

        Each record counts as consumed once the next is asked for, as with ``poll``.
        Iteration stops when the consumer is closed (from another thread, say), or
        after ``consumer_timeout_ms`` without a record, if that was given.
        """
        if self._closed:
            raise StopIteration
        try:
            records = self._collect(1, self._iter_timeout_s)
        except ClientClosedError:
            raise StopIteration from None
        if not records:
            raise StopIteration
        return self._deserialize(records)[0]

    def position(self, tp: TopicPartitionArg) -> int:
        """The offset of the next record ``poll`` returns from ``tp``."""
        return self._run(self._core.resolve_position(as_tp(tp)))

    def seek(self, tp: TopicPartitionArg, offset: int) -> None:
        """Read ``tp`` from ``offset`` on."""
        if offset < 0:
            raise InvalidArgumentError(f"offset must be >= 0, got {offset}")
        target = as_tp(tp)
        self._fetcher.seek(target, offset)
        self._io.call_soon(self._fetcher.restart, target)

    def seek_to_beginning(self, tps: Iterable[TopicPartitionArg] | None = None) -> None:
        """Read ``tps`` (default: all assigned) from their first offset."""
        self._run(self._core.seek_to(self._targets(tps), EARLIEST))

    def seek_to_end(self, tps: Iterable[TopicPartitionArg] | None = None) -> None:
        """Read only records written to ``tps`` (default: all assigned) from now on."""
        self._run(self._core.seek_to(self._targets(tps), LATEST))

    def _targets(self, tps: Iterable[TopicPartitionArg] | None) -> list[TopicPartition]:
        return list(self.assignment()) if tps is None else [as_tp(tp) for tp in tps]

    def pause(self, tps: Iterable[TopicPartitionArg]) -> None:
        """Stop returning (and fetching) records of ``tps`` until ``resume``."""
        set_paused(self._fetcher, [as_tp(tp) for tp in tps], True, None)

    def resume(self, tps: Iterable[TopicPartitionArg]) -> None:
        """Undo ``pause``."""
        set_paused(self._fetcher, [as_tp(tp) for tp in tps], False, self._io.call_soon)

    def highwater(self, tp: TopicPartitionArg) -> int | None:
        """The partition's high watermark as of its latest fetch (None: not fetched)."""
        part = self._fetcher.partitions.get(as_tp(tp))
        return None if part is None or part.high_watermark < 0 else part.high_watermark

    # --- offsets of any partition, assigned or not ------------------------------------

    def beginning_offsets(
        self, partitions: Iterable[TopicPartitionArg]
    ) -> dict[TopicPartition, int]:
        """Each partition's first offset (its log start), as kafka-python's."""
        return self._run(self._core.edge_offsets([as_tp(p) for p in partitions], EARLIEST))

    def end_offsets(self, partitions: Iterable[TopicPartitionArg]) -> dict[TopicPartition, int]:
        """Each partition's high watermark: the offset the next record written gets."""
        return self._run(self._core.edge_offsets([as_tp(p) for p in partitions], LATEST))

    def offsets_for_times(
        self, timestamps: Mapping[TopicPartitionArg, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """Per partition, the offset and timestamp of the first record whose timestamp
        is at or after the time given (ms), or None if there is none, as kafka-python's."""
        return self._run(self._core.offsets_for_times(as_timestamps(timestamps)))

    # --- commits ----------------------------------------------------------------------

    def commit(self, offsets: Mapping[TopicPartitionArg, int] | None = None) -> None:
        """Commit ``offsets`` (the next offset to read, per partition), or the positions."""
        chosen = None if offsets is None else {as_tp(tp): o for tp, o in offsets.items()}
        self._run(self._core.commit(chosen))

    def commit_async(
        self,
        offsets: Mapping[TopicPartitionArg, int] | None = None,
        callback: CommitCallback | None = None,
    ) -> concurrent.futures.Future[dict[TopicPartition, int]]:
        """Commit without waiting; ``callback(offsets, error)`` runs on the IO thread."""
        if self._closed:
            raise ClientClosedError("the consumer is closed")
        chosen = (
            self._fetcher.positions()
            if offsets is None
            else {as_tp(tp): o for tp, o in offsets.items()}
        )
        future = asyncio.run_coroutine_threadsafe(self._core.commit(chosen), self._io.loop)
        if callback is not None:
            future.add_done_callback(lambda f: commit_done(f, chosen, callback))
        return future

    def committed(self, tp: TopicPartitionArg) -> int | None:
        """The group's committed offset of ``tp`` (None: nothing committed)."""
        target = as_tp(tp)
        return self._run(self._core.committed([target])).get(target)

    # --- closing ----------------------------------------------------------------------

    def close_at_exit(self) -> None:
        self.close(AT_EXIT_TIMEOUT_S)

    def close(self, timeout: float | None = 30.0) -> None:
        """Commit (with auto-commit), leave the group, release everything. Idempotent."""
        if self._closed:
            return
        try:
            self._io.run(self._core.close(commit=True), timeout)
        except SentinelClientError as exc:
            log.warning("consumer close: %s", exc)
        finally:
            self._closed = True
            self._closed_now()
            with self._fetcher.lock:
                self._data.notify_all()
            self._io.stop()
