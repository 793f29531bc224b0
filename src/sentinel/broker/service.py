"""The broker service: the one facade every front door (gRPC, Kafka, CLI) calls.

It runs on one asyncio event loop. Appends happen on the loop (a WAL append is one
``write`` of the batch); waiting for durability (the WAL's group-committed fsync) runs
in worker threads so that many produce requests share one fsync. Consumers long-poll
on a per-partition signal that every append fires.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import posixpath
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from sentinel.broker.group_config import GroupConfig
from sentinel.broker.group_driver import GroupDriver, GroupError
from sentinel.broker.group_events import (
    ErrorCode,
    GroupDescription,
    JoinCompleted,
    OffsetAndMetadata,
    TopicPartition,
)
from sentinel.broker.limits import (
    TopicLimits,
    current_open_files_limit,
    open_partitions_for_open_files,
    partitions_for_open_files,
)
from sentinel.broker.meta_store import MetaStore
from sentinel.broker.partitioner import default_partition
from sentinel.broker.producer_order import wait_for_turn
from sentinel.broker.request_budget import RequestBudget
from sentinel.broker.signal import Signal
from sentinel.broker.topic_config import TopicConfig, validate_topic_name
from sentinel.broker.topics import Topic, TopicRegistry, UnknownTopicOrPartitionError
from sentinel.broker.validation import (
    BROKER_DEFAULT,
    Acks,
    check_commit_offsets,
    check_produce_partition,
    topic_shape,
)
from sentinel.clock import Clock
from sentinel.config import BrokerConfig
from sentinel.errors import (
    DamagedDataError,
    DiskError,
    InvalidArgumentError,
    StorageUnavailableError,
)
from sentinel.fs import FS, DirLock
from sentinel.log.open_files import OpenLogLimit
from sentinel.log.partition_log import PartitionLog
from sentinel.record import iter_batches
from sentinel.storage.options import EngineOptions
from sentinel.storage.resources import ResourceSizes, SharedResources
from sentinel.storage.wal import SyncMode, WalOptions

log = logging.getLogger(__name__)

RECOVERY_THREADS = 8  # partitions opened at once at start (threads gone once started)

EARLIEST = -2
LATEST = -1

__all__ = ["EARLIEST", "LATEST", "Acks", "BrokerService", "FetchOutcome", "ProduceOutcome"]


@dataclass(frozen=True, slots=True)
class ProduceOutcome:
    topic: str
    partition: int
    base_offset: int
    log_append_time_ms: int
    log_start_offset: int
    duplicate: bool
    records: int
    bytes: int


@dataclass(frozen=True, slots=True)
class FetchOutcome:
    topic: str
    partition: int
    batches: bytes
    high_watermark: int
    log_start_offset: int
    next_offset: int


@dataclass(frozen=True, slots=True)
class PartitionLagInfo:
    topic: str
    partition: int
    committed: int
    log_end_offset: int

    @property
    def lag(self) -> int:
        if self.committed < 0:
            return self.log_end_offset
        return max(0, self.log_end_offset - self.committed)


def _offline(topic: str, partition: int, exc: StorageUnavailableError) -> StorageUnavailableError:
    """The storage error of a produce, naming the partition (KAFKA_STORAGE_ERROR)."""
    name = f"{topic}-{partition}"
    return StorageUnavailableError(f"partition {name} cannot take writes now: {exc}", name)


def _open_meta(fs: FS, directory: str) -> MetaStore:
    """The meta store, or ``DamagedDataError``: the broker cannot run without it."""
    try:
        return MetaStore.open(fs, directory)
    except DiskError as exc:
        raise DamagedDataError(f"meta store: {exc}", quarantinable=False) from exc


class BrokerService:
    def __init__(
        self,
        config: BrokerConfig,
        fs: FS,
        clock: Clock,
        on_wal_sync: Callable[[float, int], None] | None = None,
    ) -> None:
        self.config = config
        self._on_wal_sync = on_wal_sync
        self._fs = fs
        self._clock = clock
        self._lock: DirLock | None = None
        self._signals: dict[tuple[str, int], Signal] = {}
        self._round_robin = itertools.count()
        self._background: list[asyncio.Task[None]] = []
        self._unawaited_syncs: set[asyncio.Future[None]] = set()
        self._worker = concurrent.futures.ThreadPoolExecutor(1, "sentinel-retention")
        self._retention_pass: concurrent.futures.Future[int] | None = None
        self._meta: MetaStore | None = None
        self._registry: TopicRegistry | None = None
        self._resources: SharedResources | None = None
        self._groups: GroupDriver | None = None
        self._group_config = GroupConfig()
        # Request bytes in flight, over every front door (Kafka's queued.max.request.bytes).
        self.request_budget = RequestBudget(config.max_request_bytes_in_flight)
        self.limits = TopicLimits(
            config.max_partitions or partitions_for_open_files(current_open_files_limit()),
            config.max_auto_create_per_request,
        )
        self.started = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Recover from the data directory and start background work."""
        fs, data = self._fs, self.config.data_dir
        fs.makedirs(data)
        self._lock = fs.lock(posixpath.join(data, "LOCK"))
        try:
            self._meta = _open_meta(fs, posixpath.join(data, "meta"))
            # Every partition's engine shares one worker pool, sync pipeline, block
            # cache and memtable budget (storage/resources.py).
            self._resources = SharedResources(
                ResourceSizes(
                    workers=self.config.storage_threads,
                    sync_threads=self.config.sync_threads,
                    block_cache_bytes=self.config.block_cache_mb * 1024 * 1024,
                    memtable_budget_bytes=self.config.memtable_budget_mb * 1024 * 1024,
                )
            )
            engine_options = self._resources.engine_options(
                EngineOptions(
                    memtable_bytes=self.config.memtable_mb * 1024 * 1024,
                    on_wal_sync=self._on_wal_sync,
                    wal=WalOptions(
                        sync_mode=self.config.wal_sync_mode,
                        sync_interval_ms=self.config.sync_interval_ms,
                    ),
                )
            )
            self._registry = TopicRegistry(
                fs,
                data,
                self._meta,
                clock=self._clock,
                engine_options=engine_options,
                default_config=TopicConfig(),
                skip_damaged=self.config.skip_damaged,
                limits=self.limits,
                open_limit=OpenLogLimit(
                    self.config.max_open_partitions
                    or open_partitions_for_open_files(current_open_files_limit()),
                    self._resources.pool.submit,
                ),
                recovery_threads=RECOVERY_THREADS,
            )
            self._registry.open()
            if self._registry.partition_total > self.limits.max_partitions:
                log.warning(
                    "the data directory holds %d partitions, more than the limit of %d "
                    "(--max-partitions): all are open, no more can be created",
                    self._registry.partition_total,
                    self.limits.max_partitions,
                )
            self._group_config = GroupConfig(
                min_session_timeout_s=self.config.group_min_session_timeout_ms / 1000.0,
                max_session_timeout_s=self.config.group_max_session_timeout_ms / 1000.0,
                initial_rebalance_delay_s=self.config.group_initial_rebalance_delay_ms / 1000.0,
            )
            self._groups = GroupDriver(
                self._meta, self._registry.partition_count, self._clock, self._group_config
            )
            self._groups.start()
        except BaseException:
            if self._meta is not None:
                self._meta.close()
                self._meta = None
            if self._resources is not None:
                self._resources.close()
                self._resources = None
            self._lock.release()
            raise
        loop = asyncio.get_running_loop()
        self._background.append(loop.create_task(self._retention_forever()))
        self.started = True

    async def stop(self) -> None:
        """Make everything durable and release the data directory."""
        for task in self._background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._background.clear()
        if self._retention_pass is not None:  # let a pass in a worker thread finish
            await asyncio.wrap_future(self._retention_pass)
            self._retention_pass = None
        self._worker.shutdown(wait=True)
        if self._unawaited_syncs:
            await asyncio.gather(*self._unawaited_syncs, return_exceptions=True)
        for signal in self._signals.values():
            signal.fire()
        if self._groups is not None:
            await self._groups.stop()
        if self._registry is not None:
            self._registry.close()
        if self._resources is not None:
            self._resources.close()
            self._resources = None
        if self._meta is not None:
            self._meta.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self.started = False

    @property
    def registry(self) -> TopicRegistry:
        assert self._registry is not None, "the broker is not started"
        return self._registry

    @property
    def groups(self) -> GroupDriver:
        assert self._groups is not None, "the broker is not started"
        return self._groups

    @property
    def meta(self) -> MetaStore:
        assert self._meta is not None, "the broker is not started"
        return self._meta

    # ------------------------------------------------------------- topics

    def create_topic(
        self,
        name: str,
        partitions: int = BROKER_DEFAULT,
        replication_factor: int = BROKER_DEFAULT,
        configs: Mapping[str, str] | None = None,
    ) -> Topic:
        """Create a topic; -1 partitions or replication factor: the broker's default."""
        if replication_factor == BROKER_DEFAULT:
            replication_factor = self.config.default_replication_factor
        topic = self.registry.create(
            name,
            topic_shape(partitions, self.config.default_partitions),
            replication_factor,
            configs,
        )
        self.groups.partitions_changed(name)  # groups subscribed before it existed
        return topic

    def delete_topic(self, name: str) -> None:
        topic = self.registry.get(name)
        self.registry.delete(name)
        for index in range(len(topic.partitions)):
            signal = self._signals.pop((name, index), None)
            if signal is not None:
                signal.fire()
        self.groups.partitions_changed(name)

    def add_partitions(self, name: str, total: int) -> Topic:
        topic = self.registry.add_partitions(name, total)
        self.groups.partitions_changed(name)
        return topic

    def topic(self, name: str, *, auto_create: bool = False) -> Topic:
        return self.topics([name], auto_create=auto_create)[0]

    def topics(self, names: Sequence[str] = (), *, auto_create: bool = False) -> list[Topic]:
        """The named topics (none named: all). ``auto_create`` (and --auto-create-topics):
        create the unknown ones with the broker's defaults, at most
        --max-auto-create-per-request of them, all or none."""
        if not names:
            return list(self.registry)
        if auto_create and self.config.auto_create_topics:
            self._create_missing(names)
        return [self.registry.get(name) for name in names]

    def _create_missing(self, names: Sequence[str]) -> None:
        unknown = [name for name in dict.fromkeys(names) if self.registry.find(name) is None]
        if not unknown:
            return
        self.limits.check_auto_create(len(unknown))
        for name in unknown:
            validate_topic_name(name)
        self.limits.check_partitions(
            self.registry.partition_total,
            len(unknown) * self.config.default_partitions,
            f"auto-creating {len(unknown)} topics",
        )
        for name in unknown:
            self.create_topic(name)

    def partition_log(self, topic: str, partition: int) -> PartitionLog:
        return self.registry.get(topic).partition(partition)

    # ------------------------------------------------------------- produce

    async def produce(
        self,
        topic_name: str,
        partition: int,
        batches: bytes,
        acks: Acks | int = Acks.LEADER,
        key_hint: bytes | None = None,
    ) -> ProduceOutcome:
        """Append the concatenated RecordBatch v2 ``batches`` to one partition.

        ``partition`` -1: the broker picks. ``acks``: an ``Acks`` or Kafka's 0, 1, -1."""
        check_produce_partition(partition)
        if not isinstance(acks, Acks):
            acks = Acks.parse(acks)
        topic = self.topic(topic_name, auto_create=True)
        if partition < 0:
            count = len(topic.partitions)
            if key_hint is not None:
                partition = default_partition(key_hint, count)
            else:
                partition = next(self._round_robin) % count
        plog = topic.partition(partition)
        views = list(iter_batches(batches))
        if not views:
            raise InvalidArgumentError("the produce request carries no record batch")
        # An idempotent producer's request that overtook its predecessor waits for it
        # (bounded): its batches reach the log in sequence order (producer_order).
        await wait_for_turn(views[0], plog.producer_state, self.signal(topic_name, partition))
        # One engine write for the whole request: every batch is validated first and
        # they are stored all together or not at all (one WAL entry).
        try:
            results = plog.append_many(views, wait=False)
        except StorageUnavailableError as exc:
            raise _offline(topic_name, partition, exc) from exc
        first = results[0]
        last_lsn = max(r.lsn for r in results)
        records = sum(r.last_offset - r.base_offset + 1 for r in results)
        signal = self.signal(topic_name, partition)
        signal.fire()
        if self.config.wal_sync_mode is SyncMode.ALWAYS:
            # Consumers see a batch once it is durable (the high watermark follows fsync).
            # acks=0 does not wait for that, but the fsync still has to happen.
            # One wave of the broker-wide sync pipeline serves every partition written.
            synced = asyncio.wrap_future(plog.sync_future(last_lsn))
            synced.add_done_callback(lambda _f: signal.fire())
            if acks is not Acks.NONE:
                try:
                    await synced
                except StorageUnavailableError as exc:
                    raise _offline(topic_name, partition, exc) from exc
            else:
                self._unawaited_syncs.add(synced)
                synced.add_done_callback(self._forget_sync)
        return ProduceOutcome(
            topic_name,
            partition,
            first.base_offset,
            first.log_append_time_ms,
            plog.log_start_offset,
            first.duplicate,
            records,
            len(batches),
        )

    def _forget_sync(self, future: asyncio.Future[None]) -> None:
        self._unawaited_syncs.discard(future)
        error = None if future.cancelled() else future.exception()
        # A storage failure was logged once by the engine when it began; not per request.
        if error is not None and not isinstance(error, StorageUnavailableError):
            log.error("fsync after an acks=0 produce failed: %r", future.exception())

    def signal(self, topic: str, partition: int) -> Signal:
        key = (topic, partition)
        signal = self._signals.get(key)
        if signal is None:
            signal = self._signals[key] = Signal()
        return signal

    # --------------------------------------------------------------- fetch

    async def fetch(
        self,
        topic_name: str,
        partition: int,
        offset: int,
        max_bytes: int,
        max_wait_ms: int = 0,
    ) -> FetchOutcome:
        """Whole batches from the one holding ``offset``; long-polls when there is none."""
        if max_bytes <= 0:
            max_bytes = 1024 * 1024
        plog = self.partition_log(topic_name, partition)
        signal = self.signal(topic_name, partition)
        deadline = self._clock.monotonic() + max(0, max_wait_ms) / 1000.0
        while True:
            version = signal.version
            result = plog.read(offset, max_bytes)
            if result.batches or self._clock.monotonic() >= deadline:
                break
            await signal.wait(version, deadline - self._clock.monotonic())
            if self.registry.find(topic_name) is None:
                raise UnknownTopicOrPartitionError(f"topic {topic_name!r} was deleted")
        return FetchOutcome(
            topic_name,
            partition,
            b"".join(result.batches),
            result.high_watermark,
            result.log_start_offset,
            result.next_offset,
        )

    def list_offset(self, topic_name: str, partition: int, timestamp_ms: int) -> tuple[int, int]:
        plog = self.partition_log(topic_name, partition)
        if timestamp_ms == EARLIEST:
            return plog.log_start_offset, -1
        if timestamp_ms == LATEST:
            return plog.high_watermark, -1
        found = plog.offset_for_timestamp(timestamp_ms)
        return found if found is not None else (-1, -1)

    # -------------------------------------------------------------- groups

    def group_lag(self, group_id: str) -> list[PartitionLagInfo]:
        committed = self.groups.fetch_offsets(group_id, None)
        lags = []
        for (topic, partition), om in sorted(committed.items()):
            found = self.registry.find(topic)
            if found is None or partition >= len(found.partitions):
                continue
            leo = found.partitions[partition].high_watermark
            lags.append(PartitionLagInfo(topic, partition, om.offset, leo))
        return lags

    def describe_group(self, group_id: str) -> tuple[GroupDescription, list[PartitionLagInfo]]:
        return self.groups.describe(group_id), self.group_lag(group_id)

    async def commit_offsets(
        self,
        group_id: str,
        member_id: str,
        generation: int,
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
    ) -> None:
        check_commit_offsets((t, p, om.offset) for (t, p), om in offsets.items())
        for topic, partition in offsets:
            # Unknown topic or partition: refuse (an offline one may still commit).
            self.registry.get(topic).check_partition(partition)
        await self.groups.commit(group_id, member_id, generation, offsets)

    async def join_group(
        self,
        group_id: str,
        member_id: str,
        *,
        client_id: str,
        topics: Sequence[str],
        assignor: str,
        session_timeout_ms: int,
        rebalance_timeout_ms: int = 0,
        auto_create_topics: bool = False,
    ) -> JoinCompleted:
        """Join with a subscription; returns when the rebalance completes.

        The session timeout must lie within the group.min/max.session.timeout.ms bounds;
        a rebalance timeout of 0 means the session timeout. The subscribed topics are
        created only when the consumer asks (``auto_create_topics``, Kafka's consumer
        ``allow.auto.create.topics``) and --auto-create-topics is on; otherwise an
        unknown topic is assigned once it is created."""
        cfg = self._group_config
        session_s = session_timeout_ms / 1000.0
        if not cfg.min_session_timeout_s <= session_s <= cfg.max_session_timeout_s:
            raise GroupError(
                ErrorCode.INVALID_SESSION_TIMEOUT,
                f"session timeout {session_timeout_ms} ms is outside "
                f"{self.config.group_min_session_timeout_ms}.."
                f"{self.config.group_max_session_timeout_ms} ms "
                "(--group-min-session-timeout-ms, --group-max-session-timeout-ms)",
            )
        if auto_create_topics:
            self.topics(topics, auto_create=True)
        return await self.groups.join(
            group_id,
            member_id,
            client_id=client_id,
            topics=topics,
            assignor=assignor,
            session_timeout_s=session_s,
            rebalance_timeout_s=(rebalance_timeout_ms or session_timeout_ms) / 1000.0,
        )

    def all_lags(self) -> Iterator[tuple[str, PartitionLagInfo]]:
        for listing in self.groups.list_groups():
            for lag in self.group_lag(listing.group_id):
                yield listing.group_id, lag

    # ----------------------------------------------------------- retention

    async def _retention_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.retention_check_interval_s)
            # The pass reads and rewrites batches: a worker thread, so that consumers and
            # producers on the event loop do not wait for it (the log serializes writers).
            self._retention_pass = self._worker.submit(
                self.enforce_retention, list(self.registry)
            )
            await asyncio.wrap_future(self._retention_pass, loop=loop)

    def enforce_retention(self, topics: list[Topic] | None = None) -> int:
        """One pass of retention and key compaction over every partition."""
        removed = 0
        for topic in topics if topics is not None else list(self.registry):
            for plog in topic.partitions:
                try:
                    if topic.config.cleanup_delete:
                        removed += plog.apply_retention()
                    if topic.config.cleanup_compact:
                        removed += plog.compact_keys()
                except StorageUnavailableError:
                    pass  # a full disk: the engine logged it once; the next pass retries
                except Exception:  # a failing partition must not stop the others
                    log.exception("retention failed for %s", topic.name)
        return removed
