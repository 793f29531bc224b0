"""The broker service: the one facade every front door (gRPC, Kafka, CLI) calls.

It runs on one asyncio event loop. It picks the partition and hands the append to its
``Partition`` (``broker/partition``), the one place that knows acks, durability and the
high watermark; consumers long-poll on the high watermark signals of the partitions
they fetch (``broker/fetch``). Every method returns frozen values (``broker/outcomes``)
or raises a ``SentinelError`` whose ``kafka_code`` / ``code_name`` each door translates;
results over many partitions carry an error per partition instead of raising.

The service owns the lifecycle, the topics and the produce/fetch path; the rest it
delegates, one line a method: consumer groups to ``broker/group_requests``, retention
passes to ``broker/retention``, a broker alone's metadata to
``broker/standalone_metadata``, and building its storage to ``broker/storage_setup``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import posixpath
import secrets
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from sentinel.broker.arrivals import Place
from sentinel.broker.fetch import DEFAULT_RESPONSE_BYTES, fetch_many
from sentinel.broker.group_config import GroupConfig
from sentinel.broker.group_driver import GroupDriver
from sentinel.broker.group_events import (
    ErrorCode,
    GroupDescription,
    JoinCompleted,
    JoinProtocol,
    MemberAssignment,
    OffsetAndMetadata,
    SyncCompleted,
    TopicPartition,
)
from sentinel.broker.group_requests import GroupRequests
from sentinel.broker.limits import (
    TopicLimits,
    current_open_files_limit,
    partitions_for_open_files,
)
from sentinel.broker.meta_store import MetaStore
from sentinel.broker.outcomes import (
    BrokerMetadata,
    ClusterMetadata,
    CommitOutcome,
    FetchOutcome,
    FetchPosition,
    GroupSummary,
    OffsetDeleteOutcome,
    PartitionLagInfo,
    ProduceEntry,
    ProduceOutcome,
    TopicMetadata,
)
from sentinel.broker.partition import Partition
from sentinel.broker.request_budget import RequestBudget
from sentinel.broker.retention import Retention
from sentinel.broker.standalone_metadata import (
    Placements,
    cluster_alone,
    describe_topics,
    topic_metadata_alone,
)
from sentinel.broker.storage_setup import (
    engine_options,
    group_config,
    open_journal,
    open_meta,
    redo_needed,
    shared_resources,
    topic_registry,
)
from sentinel.broker.topics import (
    Topic,
    TopicAlreadyExistsError,
    TopicRegistry,
)
from sentinel.broker.validation import (
    BROKER_DEFAULT,
    Acks,
    check_produce_partition,
    topic_shape,
)
from sentinel.clock import Clock
from sentinel.cluster.offsets_topic import OFFSETS_TOPIC
from sentinel.config import BrokerConfig
from sentinel.errors import (
    CallerError,
    SentinelError,
)
from sentinel.fs import FS, DirLock
from sentinel.log.config import InvalidTopicError, validate_topic_name
from sentinel.log.partition_log import PartitionLog
from sentinel.partitioning import default_partition
from sentinel.stopping import cancel_and_wait
from sentinel.storage.journal import Journal
from sentinel.storage.resources import SharedResources
from sentinel.storage.wal import SyncMode

if TYPE_CHECKING:
    from sentinel.cluster.node import ClusterNode

log = logging.getLogger(__name__)

EARLIEST = -2
LATEST = -1

FOLLOW_WAIT_MS = 500
"""How long one round of a following consume waits before it looks again."""
MAX_PRODUCER_EPOCH = 32767
"""Kafka's producer epochs are int16; past it, InitProducerId hands out a new id."""

__all__ = [
    "EARLIEST",
    "LATEST",
    "Acks",
    "BrokerService",
    "CommitOutcome",
    "FetchOutcome",
    "FetchPosition",
    "PartitionLagInfo",
    "ProduceEntry",
    "ProduceOutcome",
]


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
        self._partitions: dict[tuple[str, int], Partition] = {}
        self._round_robin = itertools.count()
        self._background: list[asyncio.Task[None]] = []
        self._retention: Retention | None = None
        self._meta: MetaStore | None = None
        self._registry: TopicRegistry | None = None
        #: Each topic's placement-only description, kept until it changes (alone).
        self._placements: Placements | None = None
        self._resources: SharedResources | None = None
        self._journal: Journal | None = None
        self._groups: GroupDriver | None = None
        self._group_requests: GroupRequests | None = None
        self._group_config = GroupConfig()
        self._cluster: ClusterNode | None = None
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
        clustered = bool(self.config.peers)
        broker_count = 1
        if clustered:
            from sentinel.cluster.node import ClusterNode  # only a cluster needs it

            self._cluster = ClusterNode(self, self.config, fs, self._clock)
            broker_count = self._cluster.broker_count
        fs.makedirs(data)
        self._lock = fs.lock(posixpath.join(data, "LOCK"))
        try:
            self._meta = open_meta(fs, posixpath.join(data, "meta"))
            self._resources = shared_resources(self.config)
            self._journal = open_journal(self.config, fs, self._resources, self._on_wal_sync)
            options = engine_options(
                self.config, self._resources, self._on_wal_sync, self._journal
            )
            self._registry = topic_registry(
                self.config,
                fs,
                self._meta,
                self._clock,
                options=options,
                resources=self._resources,
                limits=self.limits,
                broker_count=broker_count,
            )
            self._registry.open()
            self._placements = Placements(self.config.node_id, self._registry)
            if self._journal is not None:
                # Every partition that needed its redo has recovered and flushed it.
                self._journal.finish_recovery(lambda key: redo_needed(fs, data, key))
            if self._registry.partition_total > self.limits.max_partitions:
                log.warning(
                    "the data directory holds %d partitions, more than the limit of %d "
                    "(--max-partitions): all are open, no more can be created",
                    self._registry.partition_total,
                    self.limits.max_partitions,
                )
            self._group_config = group_config(self.config)
            self._groups = GroupDriver(
                self._meta, self._registry.partition_count, self._clock, self._group_config
            )
            self._groups.start()
            self._group_requests = GroupRequests(
                self._groups,
                self._registry,
                lambda: self.config,
                self._group_config,
                coordinators=self._cluster,
                auto_create=lambda names: self.topics(names, auto_create=True),
            )
            if self._cluster is not None:
                await self._cluster.start(options)
        except BaseException:
            if self._cluster is not None:
                await self._cluster.stop()
            if self._groups is not None:
                await self._groups.stop()
            if self._registry is not None:
                self._registry.close()
            if self._journal is not None:
                self._journal.close()  # a redo not finished keeps every segment
                self._journal = None
            if self._meta is not None:
                self._meta.close()
                self._meta = None
            if self._resources is not None:
                self._resources.close()
                self._resources = None
            self._lock.release()
            raise
        loop = asyncio.get_running_loop()
        self._retention = Retention(
            self.registry,
            self._clock,
            replicated=self._cluster,
            open_limit=self.registry.open_limit,
        )
        self._background.append(
            loop.create_task(
                self._retention.run_forever(lambda: self.config.retention_check_interval_s)
            )
        )
        self.started = True

    async def hand_off(self) -> None:
        """Before the doors close at a clean stop: in a cluster, hand the partitions this
        broker leads to other replicas (nothing to do for a broker alone)."""
        if self._cluster is not None and self.started:
            await self._cluster.hand_off()

    async def stop(self) -> None:
        """Make everything durable and release the data directory."""
        await cancel_and_wait(self._background, "the broker's background tasks")
        self._background.clear()
        if self._retention is not None:  # let a pass in its worker thread finish
            await self._retention.stop()
        if self._cluster is not None:
            await self._cluster.stop()
        for part in self._partitions.values():
            await part.settle()
            part.wake_all()
        if self._groups is not None:
            await self._groups.stop()
        if self._registry is not None:
            self._registry.close()
        if self._journal is not None:
            self._journal.close()  # after every partition: a clean stop leaves none
            self._journal = None
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
    def journal(self) -> Journal | None:
        """The broker's journal (``--journal`` with ``--sync always``), while started."""
        return self._journal

    @property
    def registry(self) -> TopicRegistry:
        assert self._registry is not None, "the broker is not started"
        return self._registry

    @property
    def groups(self) -> GroupDriver:
        assert self._groups is not None, "the broker is not started"
        return self._groups

    @property
    def group_requests(self) -> GroupRequests:
        assert self._group_requests is not None, "the broker is not started"
        return self._group_requests

    @property
    def meta(self) -> MetaStore:
        assert self._meta is not None, "the broker is not started"
        return self._meta

    # ------------------------------------------------------------- topics

    @property
    def cluster_node(self) -> ClusterNode | None:
        """This broker's part of the cluster (None: a broker alone, without --peers)."""
        return self._cluster

    async def create_topic(
        self,
        name: str,
        partitions: int = BROKER_DEFAULT,
        replication_factor: int = BROKER_DEFAULT,
        configs: Mapping[str, str] | None = None,
    ) -> Topic:
        """Create a topic; -1 partitions or replication factor: the broker's default (in
        a cluster: min(3, brokers) replicas, placed by the controller)."""
        count = topic_shape(partitions, self.config.default_partitions)
        if self._cluster is not None:
            return await self._cluster.create_topic(name, count, replication_factor, configs)
        if replication_factor == BROKER_DEFAULT:
            replication_factor = self.config.default_replication_factor
        return self.create_topic_here(name, count, replication_factor, configs)

    def create_topic_here(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        configs: Mapping[str, str] | None = None,
        hosted: Sequence[int] | None = None,
    ) -> Topic:
        """Create the topic on this broker (alone, or as the controller's record says)."""
        topic = self.registry.create(name, partitions, replication_factor, configs, hosted)
        self.groups.partitions_changed(name)  # groups subscribed before it existed
        return topic

    async def delete_topic(self, name: str) -> None:
        if self._cluster is not None:
            await self._cluster.delete_topic(name)
            return
        self.delete_topic_here(name)

    def delete_topic_here(self, name: str) -> None:
        topic = self.registry.get(name)
        self.registry.delete(name)
        for index in range(len(topic.partitions)):
            part = self._partitions.pop((name, index), None)
            if part is not None:
                part.wake_all()
        self.groups.partitions_changed(name)

    async def add_partitions(self, name: str, total: int) -> Topic:
        if self._cluster is not None:
            return await self._cluster.add_partitions(name, total)
        return self.add_partitions_here(name, total)

    async def reassign_partition(self, topic: str, partition: int, replicas: Sequence[int]) -> None:
        """Move ``topic``-``partition`` to the brokers ``replicas`` (Kafka's
        AlterPartitionReassignments; ``replicas[0]`` becomes the preferred leader).
        Returns once the controller recorded the move; the partition's leader carries
        it out, one broker at a time (``list_partition_reassignments`` shows it under
        way). A broker alone refuses (INVALID_REQUEST)."""
        if self._cluster is None:
            raise CallerError("moving replicas needs a cluster (--peers); this broker is alone")
        await self._cluster.reassign_partition(topic, partition, replicas)

    def list_partition_reassignments(
        self,
    ) -> dict[tuple[str, int], tuple[tuple[int, ...], tuple[int, ...]]]:
        """Every move under way: (topic, partition) -> (replicas now, target)."""
        return {} if self._cluster is None else self._cluster.reassignments()

    def add_partitions_here(
        self, name: str, total: int, hosted: Sequence[int] | None = None
    ) -> Topic:
        topic = self.registry.add_partitions(name, total, hosted)
        self.groups.partitions_changed(name)
        return topic

    async def topic(self, name: str, *, auto_create: bool = False) -> Topic:
        return (await self.topics([name], auto_create=auto_create))[0]

    async def topics(
        self, names: Sequence[str] = (), *, auto_create: bool = False
    ) -> list[Topic]:
        """The named topics (none named: all). ``auto_create`` (and --auto-create-topics):
        create the unknown ones with the broker's defaults, at most
        --max-auto-create-per-request of them, all or none."""
        if not names:
            return list(self.registry)
        if auto_create and self.config.auto_create_topics:
            await self._create_missing(names)
        return [self.registry.get(name) for name in names]

    async def _create_missing(self, names: Sequence[str]) -> None:
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
            # Another request may have created it meanwhile.
            with contextlib.suppress(TopicAlreadyExistsError):
                await self.create_topic(name)

    def partition_log(self, topic: str, partition: int) -> PartitionLog:
        return self.registry.get(topic).partition(partition)

    def partition(self, topic: str, index: int) -> Partition:
        """The ``Partition`` of ``topic``-``index``; UNKNOWN_TOPIC_OR_PARTITION, or
        KAFKA_STORAGE_ERROR for an offline one (in a cluster: NOT_LEADER_OR_FOLLOWER
        for one this broker holds no replica of)."""
        plog = self.partition_log(topic, index)
        if self._cluster is not None:
            return self._cluster.partition(topic, index, plog)
        key = (topic, index)
        part = self._partitions.get(key)
        if part is None or part.log is not plog:
            if part is not None:  # the topic was recreated: the old one's waiters look again
                part.wake_all()
            part = self._partitions[key] = Partition(
                topic, index, plog, sync_always=self.config.wal_sync_mode is SyncMode.ALWAYS
            )
        return part

    # ------------------------------------------------------------ metadata

    async def metadata(
        self, topics: Sequence[str] = (), *, auto_create: bool = False, offsets: bool = True
    ) -> ClusterMetadata:
        """The brokers (with their advertised addresses) and the named topics (none
        named: all). An unknown topic is a ``TopicMetadata`` with its error;
        ``auto_create`` refusals (a limit, an invalid name) raise for the whole request.
        A topic named twice is described once, as Kafka's broker does (it takes the
        request's topics as a set): the answer's size follows the topics, not the
        request's repetitions.

        ``offsets`` False: placement only (Kafka's Metadata answer), each partition's
        offsets and size ``NOT_DESCRIBED``; a broker alone then answers each topic
        with the value it gave last time, unless the topic changed (``Placements``)."""
        topics = list(dict.fromkeys(topics))
        if topics and auto_create and self.config.auto_create_topics:
            await self._create_missing(topics)
        describe = self.topic_metadata if offsets else self._topic_placement
        described = describe_topics(self.registry, topics, describe)
        return replace(self.cluster(), topics=tuple(described))

    def topic_metadata(self, topic: Topic) -> TopicMetadata:
        """A topic's partitions: leader and replicas (this broker alone; in a cluster,
        as the controller placed them and the partitions' Raft groups elected),
        offsets and size."""
        if self._cluster is not None:
            return self._cluster.topic_metadata(topic)
        return topic_metadata_alone(self.config.node_id, topic)

    def _topic_placement(self, topic: Topic) -> TopicMetadata:
        """``topic_metadata`` without offsets and size."""
        if self._cluster is not None:
            return self._cluster.topic_metadata(topic, offsets=False)
        assert self._placements is not None, "the broker is not started"
        return self._placements(topic)

    # ------------------------------------------------------------- produce

    async def produce(
        self,
        topic_name: str,
        partition: int,
        batches: bytes | memoryview,
        acks: Acks | int = Acks.LEADER,
        key_hint: bytes | None = None,
        *,
        place: Place | None = None,
    ) -> ProduceOutcome:
        """Append the concatenated RecordBatch v2 ``batches`` to one partition, all or
        none, and answer once they are as durable as ``acks`` asks (``Partition``).

        ``partition`` -1: the broker picks. ``acks``: an ``Acks`` or Kafka's 0, 1, -1.
        ``place``: the request's place in the partition's queue of appends, taken when
        it arrived (``produce_many``); None: taken at the append. Left in any case."""
        try:
            check_produce_partition(partition)
            if topic_name == OFFSETS_TOPIC and self._cluster is not None:
                # As Kafka: only the group coordinators write the internal topic.
                raise InvalidTopicError(f"cannot produce to internal topic {topic_name!r}")
            if not isinstance(acks, Acks):
                acks = Acks.parse(acks)
            topic = await self.topic(topic_name, auto_create=True)
            if partition < 0:
                count = len(topic.partitions)
                if key_hint is not None:
                    partition = default_partition(key_hint, count)
                else:
                    partition = next(self._round_robin) % count
            target = self.partition(topic_name, partition)
            # The place was taken in this partition's queue: no await since (the topic
            # existed, ``produce_many``), so the lookup found the same partition.
            assert place is None or place.arrivals is target.arrivals
            appended = await target.append(batches, acks, place)
        finally:
            if place is not None:
                place.leave()
        return ProduceOutcome(
            topic_name,
            partition,
            appended.base_offset,
            appended.log_append_time_ms,
            appended.log_start_offset,
            appended.duplicate,
            appended.records,
            len(batches),
        )

    async def produce_many(
        self, entries: Sequence[ProduceEntry], acks: Acks | int = Acks.LEADER
    ) -> tuple[ProduceOutcome, ...]:
        """Kafka's Produce: batches for many partitions in one request, appended
        concurrently, so that their durability waits share the fsync waves; a result
        per entry, in order, with its own error (nothing raises for one partition)."""
        if not isinstance(acks, Acks):
            acks = Acks.parse(acks)
        if len(entries) == 1:  # most requests: no task and gathering future for one
            only = entries[0]
            try:
                return (await self.produce(only.topic, only.partition, only.batches, acks),)
            except SentinelError as exc:
                return (
                    ProduceOutcome(only.topic, only.partition, -1, -1, -1, False, 0, 0, exc),
                )
        # Each entry takes its place in its partition's queue of appends now, in
        # request order, before any await (``arrivals``): its own task starts later,
        # after a later request's handler may have appended to the same partition.
        with contextlib.suppress(SentinelError):  # each entry's produce reports it
            await self.topics(list({e.topic: None for e in entries}), auto_create=True)
        places = [self._arrive(e.topic, e.partition) for e in entries]
        settled = await asyncio.gather(
            *(
                self.produce(e.topic, e.partition, e.batches, acks, place=place)
                for e, place in zip(entries, places, strict=True)
            ),
            return_exceptions=True,
        )
        outcomes = []
        for entry, result in zip(entries, settled, strict=True):
            if isinstance(result, ProduceOutcome):
                outcomes.append(result)
            elif isinstance(result, SentinelError):
                outcomes.append(
                    ProduceOutcome(entry.topic, entry.partition, -1, -1, -1, False, 0, 0, result)
                )
            else:
                raise result  # a bug, or cancellation: not a partition's refusal
        return tuple(outcomes)

    def _arrive(self, topic: str, index: int) -> Place | None:
        """A place in the queue of appends of ``topic``-``index``, taken now; None when
        that partition cannot take an append now (its produce says why)."""
        if index < 0 or self.registry.find(topic) is None:
            return None
        try:
            return self.partition(topic, index).arrivals.enter()
        except SentinelError:
            return None

    # --------------------------------------------------------------- fetch

    async def fetch_many(
        self,
        positions: Sequence[FetchPosition],
        *,
        max_wait_ms: int = 0,
        min_bytes: int = 1,
        max_bytes: int = DEFAULT_RESPONSE_BYTES,
    ) -> tuple[FetchOutcome, ...]:
        """Kafka's Fetch: whole batches from every position, each partition up to its
        ``max_bytes`` and the response up to ``max_bytes``; answers once ``min_bytes``
        are there, a partition fails, or ``max_wait_ms`` passes (``broker/fetch``).
        A partition's error is in its outcome."""
        return await fetch_many(
            self.partition,
            positions,
            self._clock,
            max_wait_ms=max_wait_ms,
            min_bytes=min_bytes,
            max_bytes=max_bytes,
        )

    async def fetch(
        self,
        topic_name: str,
        partition: int,
        offset: int,
        max_bytes: int,
        max_wait_ms: int = 0,
    ) -> FetchOutcome:
        """Whole batches of one partition from the one holding ``offset``; long-polls
        when there is none. Raises the partition's error."""
        (outcome,) = await self.fetch_many(
            [FetchPosition(topic_name, partition, offset, max_bytes)], max_wait_ms=max_wait_ms
        )
        if outcome.error is not None:
            raise outcome.error
        return outcome

    async def consume(
        self,
        topic_name: str,
        partition: int,
        offset: int,
        max_bytes: int,
        *,
        max_wait_ms: int = 0,
        follow: bool = False,
    ) -> AsyncGenerator[FetchOutcome, None]:
        """Fetch results from ``offset`` on, each with at least one batch: until the
        partition has nothing more within ``max_wait_ms``, or forever with ``follow``
        (each round waits ``FOLLOW_WAIT_MS``). Raises the partition's error."""
        while True:
            wait_ms = FOLLOW_WAIT_MS if follow else max(0, max_wait_ms)
            outcome = await self.fetch(topic_name, partition, offset, max_bytes, wait_ms)
            if outcome.chunks:
                offset = outcome.next_offset
                yield outcome
            elif not follow:
                return

    def offset_for_leader_epoch(
        self, topic_name: str, partition: int, epoch: int, current_epoch: int = -1
    ) -> tuple[int, int]:
        """(epoch, end offset): where leader epoch ``epoch`` ends in the partition, at
        its leader (Kafka's OffsetForLeaderEpoch, KIP-320: a consumer checks its position
        after the leader changed). ``current_epoch`` (-1: unchecked) must be the
        partition's: FENCED_LEADER_EPOCH if older, UNKNOWN_LEADER_EPOCH if newer."""
        return self.partition(topic_name, partition).end_offset_for_epoch(epoch, current_epoch)

    def leader_epoch(self, topic_name: str, partition: int) -> int:
        """The partition's leader epoch now (a Raft term in a cluster, 0 alone): what
        ListOffsets answers beside an offset. Never older than the epoch of the batch
        at that offset, so a consumer's KIP-320 check never takes it for truncation."""
        return self.partition(topic_name, partition).leader_epoch

    def list_offset(self, topic_name: str, partition: int, timestamp_ms: int) -> tuple[int, int]:
        """Kafka's ListOffsets: the log start (-2), the high watermark (-1) or the first
        offset at or after a time. In a cluster only the partition's leader answers (a
        follower's watermark may lag far behind: a client told it would stop reading
        early); a follower raises NOT_LEADER_OR_FOLLOWER, as Kafka's does."""
        part = self.partition(topic_name, partition)
        part.check_leader()
        plog = part.log
        if timestamp_ms == EARLIEST:
            return plog.log_start_offset, -1
        if timestamp_ms == LATEST:
            return plog.high_watermark, -1
        found = plog.offset_for_timestamp(timestamp_ms)
        return found if found is not None else (-1, -1)

    # -------------------------------------------------------------- groups
    # Checked and answered by ``GroupRequests`` (``broker/group_requests``).

    def group_lag(self, group_id: str) -> list[PartitionLagInfo]:
        return self.group_requests.group_lag(group_id)

    def all_lags(self) -> Iterator[tuple[str, PartitionLagInfo]]:
        return self.group_requests.all_lags()

    def describe_group(self, group_id: str) -> tuple[GroupDescription, list[PartitionLagInfo]]:
        return self.group_requests.describe_group(group_id)

    def list_groups(self) -> tuple[GroupSummary, ...]:
        return self.group_requests.list_groups()

    def group_coordinator(self, group_id: str) -> BrokerMetadata:
        """The broker that coordinates ``group_id`` (Kafka's FindCoordinator)."""
        return self.group_requests.group_coordinator(group_id)

    async def commit_offsets(
        self,
        group_id: str,
        member_id: str,
        generation: int,
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
        group_instance_id: str | None = None,
    ) -> tuple[CommitOutcome, ...]:
        """Commit ``offsets``; a result per partition, in the order given."""
        return await self.group_requests.commit_offsets(
            group_id, member_id, generation, offsets, group_instance_id
        )

    def fetch_offsets(
        self, group_id: str, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        return self.group_requests.fetch_offsets(group_id, partitions)

    def heartbeat(
        self, group_id: str, member_id: str, generation: int, group_instance_id: str | None = None
    ) -> None:
        self.group_requests.heartbeat(group_id, member_id, generation, group_instance_id)

    def leave_group(
        self, group_id: str, member_id: str, group_instance_id: str | None = None
    ) -> None:
        self.group_requests.leave_group(group_id, member_id, group_instance_id)

    def leave_group_members(
        self, group_id: str, members: Sequence[tuple[str, str | None]]
    ) -> tuple[ErrorCode, ...]:
        """LeaveGroup v3+: each (member id, instance id) pair's code, in order."""
        return self.group_requests.leave_group_members(group_id, members)

    async def join_group(
        self,
        group_id: str,
        member_id: str,
        *,
        client_id: str = "",
        topics: Sequence[str],
        assignor: str = "",
        session_timeout_ms: int,
        rebalance_timeout_ms: int = 0,
        auto_create_topics: bool = False,
        protocols: Sequence[JoinProtocol] | None = None,
        protocol_type: str = "consumer",
        group_instance_id: str | None = None,
    ) -> JoinCompleted:
        """Join with a subscription; returns when the join phase completes (the gRPC
        door's server-side assignment, or the Kafka door's ``protocols``)."""
        return await self.group_requests.join_group(
            group_id,
            member_id,
            client_id=client_id,
            topics=topics,
            assignor=assignor,
            session_timeout_ms=session_timeout_ms,
            rebalance_timeout_ms=rebalance_timeout_ms,
            auto_create_topics=auto_create_topics,
            protocols=protocols,
            protocol_type=protocol_type,
            group_instance_id=group_instance_id,
        )

    async def kafka_join_group(
        self,
        group_id: str,
        member_id: str,
        *,
        client_id: str,
        client_host: str = "",
        session_timeout_ms: int,
        rebalance_timeout_ms: int = -1,
        protocol_type: str,
        protocols: Sequence[JoinProtocol],
        group_instance_id: str | None = None,
        require_known_member_id: bool = False,
    ) -> JoinCompleted:
        """JoinGroup through the Kafka door: client-side assignment."""
        return await self.group_requests.kafka_join_group(
            group_id,
            member_id,
            client_id=client_id,
            client_host=client_host,
            session_timeout_ms=session_timeout_ms,
            rebalance_timeout_ms=rebalance_timeout_ms,
            protocol_type=protocol_type,
            protocols=protocols,
            group_instance_id=group_instance_id,
            require_known_member_id=require_known_member_id,
        )

    async def sync_group(
        self,
        group_id: str,
        member_id: str,
        generation: int,
        assignments: Mapping[str, MemberAssignment] | None = None,
        timeout_ms: int = 300_000,
        *,
        group_instance_id: str | None = None,
    ) -> SyncCompleted:
        """SyncGroup after a Kafka-mode join; returns this member's share."""
        return await self.group_requests.sync_group(
            group_id, member_id, generation, assignments, timeout_ms,
            group_instance_id=group_instance_id,
        )

    async def delete_group(self, group_id: str) -> None:
        """Kafka's DeleteGroups: NON_EMPTY_GROUP while the group has members."""
        await self.group_requests.delete_group(group_id)

    async def delete_offsets(
        self, group_id: str, partitions: Sequence[TopicPartition]
    ) -> tuple[OffsetDeleteOutcome, ...]:
        """Kafka's OffsetDelete: a result per partition (GROUP_SUBSCRIBED_TO_TOPIC while a
        member reads its topic); GROUP_ID_NOT_FOUND for an unknown group."""
        return await self.group_requests.delete_offsets(group_id, partitions)

    async def alter_group_offsets(
        self, group_id: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None:
        """Reset a group's committed offsets from outside, only while it has no members."""
        await self.group_requests.alter_group_offsets(group_id, offsets)

    # ----------------------------------------------------------- retention

    def enforce_retention(self, topics: list[Topic] | None = None) -> int:
        """One pass of retention and key compaction over every partition (``Retention``)."""
        assert self._retention is not None, "the broker is not started"
        return self._retention.enforce(topics)

    # ------------------------------------------------- administration (issue 10)

    async def alter_topic_configs(
        self, name: str, set_: Mapping[str, str], delete: Sequence[str] = ()
    ) -> Topic:
        """Kafka's IncrementalAlterConfigs on one topic (validated as CreateTopic's)."""
        if self._cluster is not None:
            return await self._cluster.alter_configs(name, set_, delete)
        return self.registry.alter_configs(name, set_, delete)

    async def delete_records(self, topic_name: str, partition: int, before_offset: int) -> int:
        """Kafka's DeleteRecords: the records below ``before_offset`` (-1: the high
        watermark) go; returns the new log start offset. In a cluster: at the leader,
        through the partition's Raft log, so every replica's start moves."""
        plog = self.partition_log(topic_name, partition)
        if self._cluster is not None:
            return await self._cluster.partition(topic_name, partition, plog).delete_records(
                before_offset
            )
        plog.delete_records(before_offset)
        return plog.log_start_offset

    # ------------------------------------------------ idempotent producers (issue 9)

    def init_producer_id(self, producer_id: int = -1, epoch: int = -1) -> tuple[int, int]:
        """Kafka's InitProducerId for an idempotent (not transactional) producer: a new
        producer id with epoch 0; or, for a producer that names its id and epoch
        (KIP-360: it bumps its epoch to reset its sequences), the same id with the next
        epoch (a new id once the epoch would overflow). The partitions' producer state
        then applies Kafka's rules (duplicates dropped, gaps refused) as for the gRPC door.

        Ids are random positive 63-bit numbers, as the gRPC client picks its own: unique
        across restarts without a stored counter, and unknown to every partition, so a
        new producer's first sequence is accepted."""
        if producer_id >= 0 and 0 <= epoch < MAX_PRODUCER_EPOCH:
            return producer_id, epoch + 1
        return 1 + secrets.randbelow(2**63 - 1), 0

    def cluster(self) -> ClusterMetadata:
        """The brokers (with their gRPC and Kafka addresses) and the controller; no
        topics (Kafka's DescribeCluster, a Metadata request for no topic)."""
        if self._cluster is not None:
            return self._cluster.cluster()
        return cluster_alone(self.config)
