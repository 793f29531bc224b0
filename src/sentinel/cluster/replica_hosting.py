"""The partition replicas this broker hosts: a Raft group and a ``ReplicatedPartition``
for each, found by group.

``HostedReplicas`` starts a replica's group (``host``: reading its whole log, so a
damaged file is found then, and refused or quarantined), stops it and deletes its Raft
state (``unhost``), and routes the driver's callbacks (a commit, a role change) to the
replica. It also refuses to create empty a replica whose Raft state is still here (the
meta store lost its record) and hands each replica's retention to its group's loop.
Which replicas to host is the cluster node's decision, from the controller's image.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
import random
from collections.abc import Callable, Mapping

from sentinel.broker.replicated_partition import ReplicatedPartition
from sentinel.broker.topics import OfflinePartition, RemotePartition, Topic, TopicRegistry
from sentinel.clock import Clock
from sentinel.cluster.offsets_topic import OFFSETS_TOPIC
from sentinel.cluster.records import PartitionAssignment
from sentinel.config import BrokerConfig
from sentinel.errors import DamagedDataError, DiskError, SentinelError
from sentinel.log.partition_log import PartitionLog
from sentinel.raft.core import RaftCore
from sentinel.raft.hard_state_store import HardStateStore
from sentinel.raft.multi_driver import MultiRaftDriver
from sentinel.raft.partition_log_adapter import PartitionRaftLog
from sentinel.raft.state import RaftConfig

log = logging.getLogger("sentinel.cluster.node")  # the name these lines always had

#: A partition's log is its state: nothing committed is read back to be applied.
PARTITION_RAFT = RaftConfig(election_ticks=10, heartbeat_ticks=2, deliver_committed=False)


class HostedReplicas:
    """This broker's replicas, by Raft group.

    ``nodes``: every broker of the cluster (a replica joining by a move knows them all).
    ``on_offsets_role``: a replica of ``__consumer_offsets`` changed role or went (group
    coordination follows its leadership). ``on_lead(group, term)``: this broker leads
    ``group`` in ``term``. ``loop``: the driver's, where retention's requests go."""

    def __init__(
        self,
        *,
        node_id: int,
        nodes: frozenset[int],
        config: BrokerConfig,
        registry: TopicRegistry,
        store: HardStateStore,
        driver: MultiRaftDriver,
        clock: Clock,
        rng: random.Random,
        durable: bool,
        address_of: Callable[[int | None], str | None],
        on_offsets_role: Callable[[ReplicatedPartition], None],
        on_lead: Callable[[int, int], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._node_id = node_id
        self._nodes = nodes
        self._config = config
        self._registry = registry
        self._store: HardStateStore | None = store
        self._driver = driver
        self._clock = clock
        self._rng = rng
        self._durable = durable
        self._address_of = address_of
        self._on_offsets_role = on_offsets_role
        self._on_lead = on_lead
        self._loop = loop
        self._by_group: dict[int, ReplicatedPartition] = {}
        #: id() of each hosted partition's log -> its group (retention's lookup).
        self._group_of_log: dict[int, int] = {}

    @property
    def by_group(self) -> Mapping[int, ReplicatedPartition]:
        return self._by_group

    def get(self, group: int) -> ReplicatedPartition | None:
        return self._by_group.get(group)

    def store_closed(self) -> None:
        """The hard states are closed (the node stopped): no group's state is deleted."""
        self._store = None

    def host(self, topic_name: str, index: int, assignment: PartitionAssignment) -> None:
        """Start the Raft group of a partition this broker replicates (once). A broker
        joining by a move (in ``target``, not in the replicas) gets an empty log and
        starts as a non-voter that knows every broker: it votes and campaigns only once
        a configuration naming it reaches its log."""
        if assignment.group in self._by_group:
            return
        topic = self._registry.find(topic_name)
        if topic is None or index >= len(topic.partitions):
            return
        if isinstance(topic.partitions[index], RemotePartition):
            self.check_not_forgotten(topic_name, index, assignment.group)
            self._registry.host_partition(topic_name, index)
        plog = topic.partitions[index]
        if isinstance(plog, OfflinePartition):
            log.error("partition %s-%d is offline: its Raft group is not started",
                      topic_name, index)
            return
        assert self._store is not None
        try:  # reads the whole log: a damaged file of this replica is found here
            raft_log = PartitionRaftLog(
                plog, self._store.view(assignment.group), self._clock, durable=self._durable
            )
        except DiskError as exc:
            self._quarantine(topic, index, exc)
            return
        voters = frozenset(assignment.replicas)
        if self._node_id not in voters:
            voters = self._nodes - {self._node_id}
        core = RaftCore(
            self._node_id, voters, raft_log, self._rng,
            hard_state=raft_log.hard_state, applied=raft_log.hard_state.commit,
            config=PARTITION_RAFT,
        )
        part = ReplicatedPartition(
            topic_name, index, plog, driver=self._driver, group=assignment.group,
            raft_log=raft_log, address_of=self._address_of,
        )
        self._driver.add_group(
            assignment.group, core, raft_log, on_commit=self._committed, on_role=self._role
        )
        self._by_group[assignment.group] = part
        self._group_of_log[id(plog)] = assignment.group

    def _quarantine(self, topic: Topic, index: int, exc: DiskError) -> None:
        """This broker's replica of ``topic``-``index`` is damaged: refuse to run
        (``DamagedDataError``: the driver stops, the broker exits with one line), or with
        ``--skip-damaged`` keep the replica offline (no Raft group: it neither votes nor
        acknowledges; the other replicas serve the partition) and log one line."""
        name = f"{topic.name}-{index}"
        if not self._config.skip_damaged:
            raise DamagedDataError(f"partition {name}: {exc}", quarantinable=True) from exc
        log.error("replica of partition %s is OFFLINE (quarantined by --skip-damaged): %s",
                  name, exc)
        plog = topic.partitions[index]
        with contextlib.suppress(SentinelError, OSError):
            plog.close()
        topic.partitions[index] = OfflinePartition(name, str(exc))

    def unhost(self, part: ReplicatedPartition) -> None:
        self._driver.remove_group(part.group)
        self._by_group.pop(part.group, None)
        self._group_of_log.pop(id(part.log), None)
        if part.topic == OFFSETS_TOPIC:
            self._on_offsets_role(part)
        if self._store is not None:
            self._store.delete(part.group)
        part.wake_all()

    def _committed(self, group: int) -> None:
        part = self._by_group.get(group)
        if part is not None:
            part.committed()

    def _role(self, group: int) -> None:
        part = self._by_group.get(group)
        if part is None:
            return
        part.role_changed()
        if part.topic == OFFSETS_TOPIC:
            self._on_offsets_role(part)
        core = self._driver.core(group)
        if core.lead is not None:
            self._on_lead(group, core.term)

    def check_not_forgotten(self, topic: str, index: int, group: int) -> None:
        """Refuse to create ``topic``-``index`` empty here when this broker holds its
        group's Raft state: it held the replica (a dropped replica's state is deleted
        first), so the meta store lost its record, and creating it would replace the
        replica's log, which acknowledged records, by an empty one."""
        assert self._store is not None
        if self._store.load(group) is None:
            return
        raise DamagedDataError(
            f"partition {topic}-{index}: the meta store does not list this replica but "
            f"{self._store.view(group).path} holds its Raft state: the meta store "
            f"({posixpath.join(self._config.data_dir, 'meta')}) lost a record",
            quarantinable=False,
            advice="restore the data directory from a backup; the other brokers serve "
            "meanwhile",
        )

    def apply_retention(self, plog: PartitionLog | OfflinePartition) -> int:
        """Retention of one replica (as Kafka's replicas each apply their own): where the
        rules would move ``plog``'s start goes to its Raft group's loop, which moves it
        at most to the commit, in the crash-safe order (``MultiRaftDriver``). Callable
        from a worker thread; returns 0 (the records go later). A log of no group here
        is left alone."""
        group = self._group_of_log.get(id(plog))
        part = None if group is None else self._by_group.get(group)
        if group is None or part is None or part.log is not plog:
            return 0
        if not isinstance(plog, PartitionLog):
            return 0
        point = plog.retention_point()
        if point is not None:
            self._loop.call_soon_threadsafe(self._driver.request_start, group, point)
        return 0
