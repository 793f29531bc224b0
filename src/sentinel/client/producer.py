"""Producers: ``Producer`` (blocking API, futures from ``concurrent.futures``) and
``AsyncProducer`` (asyncio).

Both batch records per partition, up to ``batch_size`` bytes or ``linger_ms`` of age,
encode each batch once (Kafka RecordBatch v2, optionally compressed) and send it as
one ``Produce`` call to the partition's leader, with up to ``max_in_flight`` calls per
partition in flight. Keyed records go to ``murmur2(key) % partitions`` (as Kafka's
clients do); keyless ones stick to one partition per batch (``"murmur2"``, the
default) or go round-robin (``"round_robin"``).

Delivery: failed sends are retried ``retries`` times, ``retry_backoff_ms`` apart, in
order. With ``enable_idempotence`` (the default) every batch carries a random 63-bit
producer id, an epoch and per-partition sequence numbers, so the broker stores a
retried batch once and answers its retry with the original offset.

Threads (``Producer``): ``send`` appends to the partition's open batch on the
caller's thread under one lock and returns at once; an IO thread running an asyncio
loop sends the batches. ``send`` blocks only to learn a new topic's partition count,
or when ``buffer_memory`` bytes are waiting to be sent (for at most ``max_block_ms``).
Future callbacks run on the IO thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, cast

from sentinel.client._channel import LoopThread
from sentinel.client._common import AT_EXIT_TIMEOUT_S, AsyncClosingContext, ClosingContext
from sentinel.client._future import AsyncBatchResult, BatchResult, RecordFuture
from sentinel.client._kafka_config import resolve
from sentinel.client._producer_config import (
    Acks,
    HeadersArg,
    ProducerConfig,
    as_bytes,
    normalize_headers,
)
from sentinel.client._sender import ProducerCore
from sentinel.client.errors import (
    ClientClosedError,
    ClientTimeoutError,
    UnknownTopicOrPartitionError,
)
from sentinel.client.types import RecordMetadata

__all__ = ["AsyncProducer", "Producer", "Serializer"]

Serializer = Callable[[Any], bytes]


_time_ns = time.time_ns


def _now_ms() -> int:
    return _time_ns() // 1_000_000


def _check_partition(topic: str, partition: int, count: int) -> None:
    if not 0 <= partition < count:
        raise UnknownTopicOrPartitionError(
            f"topic {topic!r} has {count} partition{'' if count == 1 else 's'}; "
            f"there is no partition {partition}",
            reason="UNKNOWN_TOPIC_OR_PARTITION",
        )


class _ProducerBase:
    """The options and the core that ``Producer`` and ``AsyncProducer`` share; each
    flavour names its ``_sink_type`` and finishes its construction in ``_open``."""

    _sink_type: ClassVar[type[BatchResult] | type[AsyncBatchResult]]

    def __init__(
        self,
        bootstrap: str | Sequence[str] | Mapping[str, object] | None = None,
        *,
        bootstrap_servers: str | Sequence[str] | None = None,
        client_id: str = "sentinel-python",
        key_serializer: Serializer | None = None,
        value_serializer: Serializer | None = None,
        acks: Acks = 1,
        linger_ms: float = 5,
        batch_size: int = 64 * 1024,
        compression: str | None = None,
        partitioner: str = "murmur2",
        retries: int = 5,
        retry_backoff_ms: float = 100,
        enable_idempotence: bool = True,
        max_in_flight: int = 5,
        request_timeout_ms: int = 30_000,
        buffer_memory: int = 32 * 1024 * 1024,
        max_block_ms: int = 60_000,
        auto_create_topics: bool = True,
    ) -> None:
        given: dict[str, Any] = {
            "client_id": client_id,
            "key_serializer": key_serializer,
            "value_serializer": value_serializer,
            "acks": acks,
            "linger_ms": linger_ms,
            "batch_size": batch_size,
            "compression": compression,
            "partitioner": partitioner,
            "retries": retries,
            "retry_backoff_ms": retry_backoff_ms,
            "enable_idempotence": enable_idempotence,
            "max_in_flight": max_in_flight,
            "request_timeout_ms": request_timeout_ms,
            "buffer_memory": buffer_memory,
            "max_block_ms": max_block_ms,
            "auto_create_topics": auto_create_topics,
        }
        address, options = resolve("producer", bootstrap, bootstrap_servers, given, _DEFAULTS)
        self.client_id: str = options.pop("client_id")
        self._key_serializer: Serializer | None = options.pop("key_serializer")
        self._value_serializer: Serializer | None = options.pop("value_serializer")
        config = ProducerConfig.build(address, **options)
        self._core = ProducerCore(config, self._sink_type)
        self._counts = self._core.metadata.partitions
        self._buffer_memory = config.buffer_memory
        self._max_block_s = config.max_block_ms / 1000.0
        self._closed = False
        self._open()

    def _serialize(self, key: object, value: object) -> tuple[object, object]:
        """Apply the serializers (None, a tombstone or no key, stays None)."""
        if self._value_serializer is not None and value is not None:
            value = self._value_serializer(value)
        if self._key_serializer is not None and key is not None:
            key = self._key_serializer(key)
        return key, value

    def _open(self) -> None:
        raise NotImplementedError

    @property
    def producer_id(self) -> int:
        """The producer id stamped in every batch (-1 when not idempotent)."""
        return self._core.producer_id


_DEFAULTS: dict[str, Any] = _ProducerBase.__init__.__kwdefaults__ or {}


class Producer(_ProducerBase, ClosingContext):
    """Sends records to topics; thread-safe.

    ``send`` returns a ``concurrent.futures.Future`` of the record's
    ``RecordMetadata`` (topic, partition, offset, timestamp). Records are sent in
    batches: call ``flush()`` to wait for everything sent so far, ``close()`` (or use
    ``with``) to flush and release the connections.

    The first argument is the bootstrap address (``"host:port,host2:port2"`` or a list;
    ``bootstrap_servers=`` is the same, as kafka-python and aiokafka name it) or a
    confluent-kafka style config dict (``Producer({"bootstrap.servers": "h:p",
    "acks": "all", "linger.ms": 10})``: its keys map to the options below; an unknown
    or unsupported key raises ``ClientConfigError`` naming it). A producer left open
    is closed (flushed for up to 5 s) at interpreter exit.

    Options:

    - ``key_serializer`` / ``value_serializer``: called on each key / value that is
      not None to make its bytes (e.g. ``str.encode``,
      ``lambda v: json.dumps(v).encode()``). Without them keys and values must be
      bytes (or bytearray, memoryview): anything else raises ``RecordTypeError`` (a
      ``TypeError``) naming the option.
    - ``client_id`` ("sentinel-python"): the name this producer gives itself.
    - ``acks``: 0 (the broker acknowledges nothing: offsets are -1, errors are only
      logged, nothing is retried; futures resolve once the batch reached the broker),
      1 (the leader stored it; the default), ``"all"`` (every in-sync replica did).
    - ``linger_ms`` (5): how long a batch waits for more records before it is sent;
      ``batch_size`` (64 KiB): a batch is sent when it reaches this many bytes.
    - ``compression``: None, ``"gzip"``, ``"snappy"``, ``"lz4"`` or ``"zstd"``.
    - ``partitioner``: ``"murmur2"`` (keys hashed as Kafka does, keyless records
      sticky per batch) or ``"round_robin"``.
    - ``retries`` (5), ``retry_backoff_ms`` (100): retriable failures are retried,
      backing off from 100 ms, doubling up to 1 s.
    - ``enable_idempotence`` (True): producer id and sequence numbers in every batch
      so retries are stored once (not with acks=0).
    - ``max_in_flight`` (5): batches in flight per partition (at most 5 when idempotent).
    - ``request_timeout_ms`` (30000): per ``Produce`` call.
    - ``buffer_memory`` (32 MiB), ``max_block_ms`` (60000): ``send`` blocks while this
      many bytes wait to be sent, for at most that long.
    - ``auto_create_topics`` (True): ask for unknown topics to be created.
    """

    _sink_type = BatchResult

    def _open(self) -> None:
        self._lock = self._core.lock
        self._io = LoopThread("sentinel-producer-io")
        self._io.run(self._start())
        self._close_at_exit()

    def close_at_exit(self) -> None:
        self.close(AT_EXIT_TIMEOUT_S)

    async def _start(self) -> None:
        self._core.start()

    def send(  # noqa: PLR0917 - Kafka's positional order: topic, value, key, ...
        self,
        topic: str,
        value: object,
        key: object = None,
        headers: HeadersArg = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordFuture:
        """Queue a record; returns a future of its ``RecordMetadata``.

        Raises at once for a closed producer, a non-bytes key or value, an unknown
        topic or partition; send failures (after retries) come through the future.
        """
        if self._closed:
            raise ClientClosedError("the producer is closed")
        if self._value_serializer is not None or self._key_serializer is not None:
            key, value = self._serialize(key, value)
        if value is not None and value.__class__ is not bytes:
            value = as_bytes(value, "value")
        if key is not None and key.__class__ is not bytes:
            key = as_bytes(key, "key")
        hdrs = normalize_headers(headers) if headers else ()
        count = self._counts.get(topic)
        if count is None:
            count = self._partition_count(topic)
        if partition is not None and not 0 <= partition < count:
            count = self._partition_count(topic, refresh=True)
            _check_partition(topic, partition, count)
        ts = _time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
        core = self._core
        with self._lock:
            if core.acc.buffered_bytes >= self._buffer_memory:
                self._wait_for_space()
            batch, delta, wake = core.append(topic, partition, count, key, value, hdrs, ts)
        if wake:
            self._io.call_soon(core.wake)
        return RecordFuture(batch.sink, delta, ts)  # type: ignore[arg-type]  # a BatchResult

    def _partition_count(self, topic: str, refresh: bool = False) -> int:
        return self._io.run(self._core.partition_count(topic, refresh), self._max_block_s)

    def _wait_for_space(self) -> None:
        """Block (lock held) until buffered bytes drop below ``buffer_memory``."""
        core = self._core
        if self._io.in_loop_thread:
            return  # a callback on the IO thread cannot wait for the IO thread
        deadline = time.monotonic() + self._max_block_s
        core.space_waiters += 1
        try:
            while core.acc.buffered_bytes >= self._buffer_memory:
                if self._closed:
                    raise ClientClosedError("the producer is closed")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ClientTimeoutError(
                        f"no buffer space within max_block_ms ({self._max_block_s * 1000:.0f})"
                    )
                core.space.wait(remaining)
        finally:
            core.space_waiters -= 1

    def partitions_for(self, topic: str) -> int:
        """How many partitions ``topic`` has (asks the cluster if not known)."""
        count = self._counts.get(topic)
        return count if count is not None else self._partition_count(topic)

    def flush(self, timeout: float | None = None) -> None:
        """Send every record queued so far and wait for their outcomes.

        Raises ``ClientTimeoutError`` if they are not all done within ``timeout`` s;
        failures are reported through the records' futures, not here.
        """
        if self._io.in_loop_thread:
            raise ClientTimeoutError("flush() from a callback on the IO thread would deadlock")
        with self._lock:
            targets, wake = self._core.begin_flush()
        if wake:
            self._io.call_soon(self._core.wake)
        deadline = None if timeout is None else time.monotonic() + timeout
        for batch in targets:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not batch.sink.wait(remaining):
                raise ClientTimeoutError(f"flush did not finish within {timeout} s")

    def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout`` s), then fail what is left and release everything.

        Idempotent. Records not delivered by then fail with ``ClientClosedError``.
        """
        if self._closed:
            return
        try:
            if not self._io.in_loop_thread:
                with contextlib.suppress(ClientTimeoutError):
                    self.flush(timeout)
        finally:
            self._closed = True
            self._closed_now()
            with self._lock:
                if self._core.space_waiters:
                    self._core.space.notify_all()
            try:
                self._io.run(self._core.shutdown(), 30.0)
            finally:
                self._io.stop()


class AsyncProducer(_ProducerBase, AsyncClosingContext):
    """The asyncio producer: same options and behaviour as ``Producer``.

    ``await producer.send(...)`` queues the record (waiting, if need be, for the
    topic's metadata or for buffer space) and returns an ``asyncio.Future`` of its
    ``RecordMetadata``; ``await`` that future for the outcome, or use
    ``send_and_wait``. Create it inside a running loop, then ``await start()`` (or use
    ``async with``); every call must come from that loop.
    """

    _sink_type = AsyncBatchResult

    def _open(self) -> None:
        self._space = asyncio.Event()
        self._core.on_space = self._space.set
        self._started = False

    async def start(self) -> None:
        """Start the sender on the running loop. Idempotent."""
        if self._closed:
            raise ClientClosedError("the producer is closed")
        if not self._started:
            self._started = True
            self._core.start()

    async def send(  # noqa: PLR0917 - Kafka's positional order: topic, value, key, ...
        self,
        topic: str,
        value: object,
        key: object = None,
        headers: HeadersArg = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """Queue a record; returns a future of its ``RecordMetadata`` (await it)."""
        if self._closed:
            raise ClientClosedError("the producer is closed")
        if not self._started:
            await self.start()
        if self._value_serializer is not None or self._key_serializer is not None:
            key, value = self._serialize(key, value)
        if value is not None and value.__class__ is not bytes:
            value = as_bytes(value, "value")
        if key is not None and key.__class__ is not bytes:
            key = as_bytes(key, "key")
        hdrs = normalize_headers(headers) if headers else ()
        core = self._core
        count = self._counts.get(topic)
        if count is None:
            count = await self._partition_count(topic)
        if partition is not None and not 0 <= partition < count:
            count = await self._partition_count(topic, refresh=True)
            _check_partition(topic, partition, count)
        if core.acc.buffered_bytes >= self._buffer_memory:
            await self._wait_for_space()
        ts = _now_ms() if timestamp_ms is None else timestamp_ms
        with core.lock:
            batch, _, wake = core.append(topic, partition, count, key, value, hdrs, ts)
        sink = cast(AsyncBatchResult, batch.sink)
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        sink.futures.append(future)
        sink.timestamps.append(ts)
        if wake:
            core.wake()
        return future

    async def send_and_wait(  # noqa: PLR0917 - as send()
        self,
        topic: str,
        value: object,
        key: object = None,
        headers: HeadersArg = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """``send`` and wait for the outcome."""
        future = await self.send(topic, value, key, headers, partition, timestamp_ms)
        return await future

    async def _partition_count(self, topic: str, refresh: bool = False) -> int:
        try:
            return await asyncio.wait_for(
                self._core.partition_count(topic, refresh), self._max_block_s
            )
        except TimeoutError:
            raise ClientTimeoutError(f"no metadata for {topic!r} within max_block_ms") from None

    async def _wait_for_space(self) -> None:
        deadline = time.monotonic() + self._max_block_s
        while self._core.acc.buffered_bytes >= self._buffer_memory:
            if self._closed:
                raise ClientClosedError("the producer is closed")
            self._space.clear()
            remaining = deadline - time.monotonic()
            try:
                await asyncio.wait_for(self._space.wait(), max(0.0, remaining))
            except TimeoutError:
                raise ClientTimeoutError("no buffer space within max_block_ms") from None

    async def partitions_for(self, topic: str) -> int:
        """How many partitions ``topic`` has (asks the cluster if not known)."""
        count = self._counts.get(topic)
        return count if count is not None else await self._partition_count(topic)

    async def flush(self, timeout: float | None = None) -> None:
        """Send every record queued so far and wait for their outcomes."""
        core = self._core
        with core.lock:
            targets, wake = core.begin_flush()
        if wake:
            core.wake()
        futures = [f for b in targets for f in cast(AsyncBatchResult, b.sink).futures]
        if not futures:
            return
        _, pending = await asyncio.wait(futures, timeout=timeout)
        if pending:
            raise ClientTimeoutError(f"flush did not finish within {timeout} s")

    async def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout`` s), then fail what is left and release everything."""
        if self._closed:
            return
        try:
            if self._started:
                with contextlib.suppress(ClientTimeoutError):
                    await self.flush(timeout)
        finally:
            self._closed = True
            self._space.set()
            await self._core.shutdown()

    async def __aenter__(self) -> AsyncProducer:
        await self.start()
        return self
