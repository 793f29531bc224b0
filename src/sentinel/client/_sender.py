"""The producer's IO side: the sender task that drains the accumulator and sends its
batches as ``Produce`` calls, and the send-side bookkeeping both flavours share.

``ProducerCore`` is shared by ``Producer`` (whose ``send`` runs on the caller's thread
while the core runs on a ``LoopThread``) and ``AsyncProducer`` (both on one loop). The
accumulator, the partitioner and the sender's deadline are guarded by ``lock``; the
hot path, ``append``, takes it once per record and wakes the sender only when a batch
is full or when a new batch's linger deadline is earlier than the sender's next one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence

import grpc
import grpc.aio

from sentinel.client._accumulator import Accumulator, Outcome, ProducerBatch
from sentinel.client._channel import Connections, with_retries
from sentinel.client._future import BatchSink
from sentinel.client._metadata import LEADER_MOVED, Metadata
from sentinel.client._producer_config import ACKS_PB, ProducerConfig, new_producer_id
from sentinel.client.errors import (
    BrokerUnavailableError,
    ClientClosedError,
    DuplicateSequenceError,
    RequestTimedOutError,
    SentinelClientError,
    ServerError,
    error_from_rpc,
)
from sentinel.errors import SentinelError
from sentinel.partitioning import Partitioner, RoundRobinPartitioner, StickyPartitioner
from sentinel.proto_gen import sentinel_pb2 as pb

__all__ = ["ProducerCore"]

log = logging.getLogger(__name__)


class ProducerCore:
    """Accumulator + sender task + metadata, on one event loop."""

    def __init__(
        self,
        config: ProducerConfig,
        sink_factory: Callable[[str, int], BatchSink],
        *,
        producer_id: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.space = threading.Condition(self.lock)  # sync senders waiting for buffer
        self.space_waiters = 0
        self.on_space: Callable[[], None] | None = None  # async flavour's hook
        self.producer_id = (
            (producer_id if producer_id is not None else new_producer_id())
            if config.enable_idempotence
            else -1
        )
        self.acc = Accumulator(
            batch_size=config.batch_size,
            linger_s=config.linger_ms / 1000.0,
            compression=config.compression,
            max_in_flight=config.max_in_flight,
            retries=config.retries,
            retry_backoff_s=config.retry_backoff_ms / 1000.0,
            producer_id=self.producer_id,
            sink_factory=sink_factory,
        )
        rng = rng or random.Random(os.urandom(16))
        self.partitioner: Partitioner = (
            RoundRobinPartitioner()
            if config.partitioner == "round_robin"
            else StickyPartitioner(rng)
        )
        # keyless records' partition per topic, while the sticky partitioner keeps it
        self._sticky: dict[str, int] | None = (
            {} if isinstance(self.partitioner, StickyPartitioner) else None
        )
        self.connections = Connections(config.bootstrap)
        self.metadata = Metadata(self.connections, list(config.bootstrap))
        self._linger_s = config.linger_ms / 1000.0
        self._timeout_s = config.request_timeout_ms / 1000.0
        self._acks_pb = ACKS_PB[config.acks]
        self._deadline: float | None = None  # when the sender drains next (None: idle)
        self._wake_pending = False
        self._event: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- on the loop -----------------------------------------------------------------

    def start(self) -> None:
        """Start the sender task (call on the loop)."""
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name="sentinel-producer-sender")

    def wake(self) -> None:
        """Make the sender drain now (call on the loop)."""
        if self._event is not None:
            self._event.set()

    async def partition_count(self, topic: str, refresh: bool = False) -> int:
        """``topic``'s partition count; a broker that cannot be reached is retried
        (the caller bounds the wait with max_block_ms), a missing topic is not."""

        async def ask() -> int:
            return await self.metadata.partition_count(
                topic,
                auto_create=self.config.auto_create_topics,
                refresh=refresh,
                timeout=self._timeout_s,
            )

        return await with_retries(
            ask,
            attempts=self.config.retries + 1,
            backoff_s=self.config.retry_backoff_ms / 1000.0,
            retry_on=(BrokerUnavailableError, RequestTimedOutError),
        )

    async def _run(self) -> None:
        assert self._event is not None and self._loop is not None
        event, loop = self._event, self._loop
        while True:
            event.clear()
            with self.lock:
                self._wake_pending = False
                batches, wake_at = self.acc.drain(time.monotonic())
                self._after_close()
                self._deadline = wake_at
                finished = self._closing and len(self.acc) == 0
            for batch in batches:
                self._dispatch(batch)
            if finished:
                return
            handle = None
            if wake_at is not None:
                handle = loop.call_later(max(0.0, wake_at - time.monotonic()), event.set)
            await event.wait()
            if handle is not None:
                handle.cancel()

    def _dispatch(self, batch: ProducerBatch) -> None:
        assert self._loop is not None
        try:
            request = pb.ProduceRequest(
                topic=batch.tp.topic,
                partition=batch.tp.partition,
                record_batches=Accumulator.encode(batch),
                acks=self._acks_pb,
                timeout_ms=self.config.request_timeout_ms,
            )
            call = self.metadata.stub_for(batch.tp).Produce(request, timeout=self._timeout_s)
        except Exception as exc:  # the batch cannot be sent (bad field, closed channel)
            error = exc if isinstance(exc, SentinelError) else ServerError(repr(exc))
            with self.lock:
                self.acc.failed(batch, error, time.monotonic())
                self._released()
            batch.sink.fail(error)
            return
        task = self._loop.create_task(self._await(batch, call))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _await(
        self,
        batch: ProducerBatch,
        call: grpc.aio.UnaryUnaryCall[pb.ProduceRequest, pb.ProduceResponse],
    ) -> None:
        error: SentinelClientError | None = None
        resp: pb.ProduceResponse | None = None
        try:
            resp = await call
        except grpc.aio.AioRpcError as exc:
            error = error_from_rpc(exc)
        except asyncio.CancelledError:
            with self.lock:
                self.acc.abandon(batch)
            batch.sink.fail(ClientClosedError("the producer closed before the broker answered"))
            raise
        except Exception as exc:  # not a status: a bug in gRPC or here; fail the batch
            log.exception("Produce to %s failed", batch.tp)
            error = ServerError(f"the Produce call failed: {exc!r}")
        with self.lock:
            if self.config.acks == 0:
                self.acc.abandon(batch)
                outcome = Outcome.DONE
            elif error is None:
                outcome = self.acc.succeeded(batch)
            else:
                outcome = self.acc.failed(batch, error, time.monotonic())
            self._released()
        if self.config.acks == 0:
            # As Kafka's acks=0: no offsets, no errors, no retries; the futures resolve
            # once the broker has the batch (so flush() means "sent").
            if error is not None:
                log.warning("acks=0 batch for %s refused: %s", batch.tp, error)
            batch.sink.complete(-1, -1)
        elif outcome is Outcome.DONE:
            if resp is not None:
                batch.sink.complete(resp.base_offset, resp.log_append_time_ms)
            elif isinstance(error, DuplicateSequenceError):
                batch.sink.complete(-1, -1)
        elif outcome is Outcome.FAILED:
            assert error is not None
            batch.sink.fail(error)
        elif isinstance(error, LEADER_MOVED):
            # The leader moved, is being elected, or its broker is gone: route the retry
            # by the hint, else by fresh metadata (any live broker answers it).
            self.metadata.note_leader(batch.tp, getattr(error, "leader", None))
            self._refresh_soon(batch.tp.topic)
        self.wake()

    def _refresh_soon(self, topic: str) -> None:
        assert self._loop is not None

        async def refresh() -> None:
            try:
                await self.metadata.fetch([topic], auto_create=self.config.auto_create_topics)
            except SentinelClientError as exc:
                log.debug("metadata refresh for %s failed: %s", topic, exc)

        task = self._loop.create_task(refresh())
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    def _released(self) -> None:
        """Buffer space was freed (lock held): wake whoever waits for it."""
        if self.space_waiters:
            self.space.notify_all()
        if self.on_space is not None:
            self.on_space()

    async def shutdown(self) -> None:
        """Stop sending: fail what was not sent, cancel what is in flight, close channels."""
        self._closing = True
        with self.lock:
            unsent = list(self.acc.fail_all())
            self._released()
        closed = ClientClosedError("the producer was closed before the record was sent")
        for batch in unsent:
            batch.sink.fail(closed)
        for task in list(self._calls):
            task.cancel()
        if self._calls:
            await asyncio.gather(*self._calls, return_exceptions=True)
        if self._task is not None:
            self.wake()
            try:
                await asyncio.wait_for(self._task, 5.0)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        await self.connections.close()

    # --- on the sender's thread (the caller's, or the loop) ---------------------------

    def append(  # noqa: PLR0917 - the hot path: positional is cheaper
        self,
        topic: str,
        partition: int | None,
        num_partitions: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]],
        timestamp: int,
    ) -> tuple[ProducerBatch, int, bool]:
        """Add a record (lock held by the caller); returns (batch, delta, wake sender?)."""
        if partition is None:
            if key is None and self._sticky is not None:
                # The sticky choice only changes when a batch closes: cache it until then.
                partition = self._sticky.get(topic)
                if partition is None or partition >= num_partitions:
                    partition = self.partitioner.partition(topic, None, num_partitions)
                    self._sticky[topic] = partition
            else:
                partition = self.partitioner.partition(topic, key, num_partitions)
        now = time.monotonic()
        acc = self.acc
        batch, delta, started = acc.append(topic, partition, key, value, headers, timestamp, now)
        wake = False
        if acc.closed_batches:
            self._after_close()
            wake = True
        elif started:
            deadline = self._deadline
            wake = deadline is None or deadline > now + self._linger_s
        if wake and not self._wake_pending:
            self._wake_pending = True
            return batch, delta, True
        return batch, delta, False

    def _after_close(self) -> None:
        """Tell the partitioner which batches closed (lock held): sticky moves on."""
        closed = self.acc.closed_batches
        if not closed:
            return
        counts = self.metadata.partitions
        for batch in closed:
            count = counts.get(batch.tp.topic)
            if count:
                self.partitioner.on_new_batch(batch.tp.topic, batch.tp.partition, count)
            if self._sticky is not None:
                self._sticky.pop(batch.tp.topic, None)
        closed.clear()

    def begin_flush(self) -> tuple[list[ProducerBatch], bool]:
        """Close every open batch (lock held by the caller): the batches to wait for."""
        self.acc.close_open()
        targets = self.acc.incomplete()
        wake = bool(targets) and not self._wake_pending
        if wake:
            self._wake_pending = True
        return targets, wake

    @property
    def closing(self) -> bool:
        return self._closing
