"""This broker's part of a cluster: the composition behind ``BrokerService``.

It owns the peer transport, one ``MultiRaftDriver`` for every Raft group of this
broker (the controller, group 0, and a group per partition replica), the controller
(``cluster/controller``) and the ``ReplicatedPartition`` of every replica. The service
calls it where a broker alone would act on its own: topic changes go through the
controller; ``partition()`` returns the replicated partition; metadata lists every
broker and each partition's leader, replicas and in-sync replicas; a group's
coordinator is the leader of its partition of the internal topic
``__consumer_offsets``, which holds its committed offsets (``cluster/group_coordination``;
the controller's leader creates that topic once the cluster forms). A partition's
replicas move (``reassign_partition``) by Raft membership change, one broker at a time,
driven by the partition's leader (``cluster/reassignment``): a broker of the target gets
an empty log and joins; one no longer a replica drops its copy once the move is
committed (``PartitionReplicas``).

The node wires these together and runs their loops; each concept is its own module:
``cluster/replica_hosting`` (the replicas' Raft groups), ``cluster/metadata_applier``
(committed records and images applied here), ``cluster/controller_ops`` (what it asks
of the controller), ``cluster/controller_reports`` (what a leader reports to it),
``cluster/leadership`` (hand-off, balance, move steps), ``cluster/clean_stop`` (what a
stop waits for on its peers, and how long) and ``cluster/describe`` (Metadata,
DescribeCluster, FindCoordinator answers).

Data layout added under ``--data``: ``cluster.json`` (which cluster and node this
directory belongs to), ``cluster-metadata/`` (the controller's log: a partition log),
``cluster-metadata-snapshot/`` (snapshots of the controller's image; the log before
the older one kept is removed: ``cluster/controller_snapshots``), ``raft-state/``
(every group's term, vote and commit in one small engine). A
partition's own log stays where a broker alone keeps it (``topics/<t>/<i>/``).
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import random
from collections.abc import Iterator, Mapping, Sequence, Set
from dataclasses import replace
from typing import TYPE_CHECKING

from sentinel.broker.group_driver import GroupError
from sentinel.broker.group_events import ErrorCode
from sentinel.broker.outcomes import (
    BrokerMetadata,
    ClusterMetadata,
    TopicMetadata,
)
from sentinel.broker.replicated_partition import ReplicatedPartition
from sentinel.broker.topics import (
    OfflinePartition,
    Topic,
)
from sentinel.clock import Clock
from sentinel.cluster import controller_ops, controller_snapshots
from sentinel.cluster.clean_stop import STOP_BUDGET_S, bound_commit_waits
from sentinel.cluster.controller import CONTROLLER_GROUP, Controller
from sentinel.cluster.controller_ops import offsets_topic_forever, register_forever
from sentinel.cluster.controller_reports import ControllerReports
from sentinel.cluster.controller_snapshots import ControllerSnapshots
from sentinel.cluster.describe import broker_metadata, cluster_metadata, topic_metadata
from sentinel.cluster.figures import METADATA_TOPIC, RaftFigures, raft_figures
from sentinel.cluster.group_coordination import GroupCoordination
from sentinel.cluster.identity import check_identity
from sentinel.cluster.leadership import balance, hand_off, reassign_step
from sentinel.cluster.metadata import BrokerAddresses, MetadataImage
from sentinel.cluster.metadata_applier import MetadataApplier, created_from, registered_in
from sentinel.cluster.offsets_topic import OFFSETS_TOPIC
from sentinel.cluster.peers import Peer, parse_peers
from sentinel.cluster.records import (
    PartitionAssignment,
)
from sentinel.cluster.replica_hosting import HostedReplicas
from sentinel.cluster.transport import PeerTransport
from sentinel.config import BrokerConfig, ConfigError
from sentinel.errors import (
    CorruptionError,
    DamagedDataError,
    DiskError,
    NotLeaderError,
    SentinelError,
)
from sentinel.fs import FS
from sentinel.log.config import TopicConfig
from sentinel.log.partition_log import PartitionLog
from sentinel.log.types import LogOptions
from sentinel.raft.core import RaftCore
from sentinel.raft.hard_state_store import HardStateStore
from sentinel.raft.messages import TimeoutNow
from sentinel.raft.multi import Envelope, GroupSet
from sentinel.raft.multi_driver import MultiRaftDriver
from sentinel.raft.partition_log_adapter import PartitionRaftLog
from sentinel.raft.state import RaftConfig
from sentinel.stopping import cancel_and_wait
from sentinel.storage.options import EngineOptions
from sentinel.storage.wal import SyncMode

if TYPE_CHECKING:
    from sentinel.broker.service import BrokerService

log = logging.getLogger(__name__)

#: Elections after 10-20 ticks of silence (1-2 s at the default 100 ms tick); a leader's
#: heartbeats every 2 ticks (coalesced per broker pair), five per election timeout.
RAFT = RaftConfig(election_ticks=10, heartbeat_ticks=2)
REASSIGN_EVERY_S = 0.1  # how often a leader takes the next step of a replica move
BALANCE_EVERY_S = 2.0  # how often leaders hand partitions back to preferred replicas


class ClusterNode:
    def __init__(
        self, service: BrokerService, config: BrokerConfig, fs: FS, clock: Clock
    ) -> None:
        self._service = service
        self._config = config
        self._fs = fs
        self._clock = clock
        self.node_id = config.node_id
        self.peers: dict[int, Peer] = parse_peers(config.peers)
        if self.node_id not in self.peers:
            ids = ",".join(str(i) for i in sorted(self.peers))
            raise ConfigError(f"--node-id {self.node_id} is not in --peers (node ids {ids})")
        fs.makedirs(config.data_dir)
        try:
            self.cluster_id = check_identity(
                fs, config.data_dir, self.node_id, self.peers, config.cluster_id or None
            )
        except CorruptionError as exc:
            raise _damaged_cluster_state(exc) from exc
        self._rng = random.Random()
        #: every log append synced before it is acknowledged (``--sync always``)
        self._durable = config.wal_sync_mode is SyncMode.ALWAYS
        self._store: HardStateStore | None = None
        self._metadata_log: PartitionLog | None = None
        self._driver: MultiRaftDriver | None = None
        self._transport: PeerTransport | None = None
        self._controller: Controller | None = None
        self._snapshots: ControllerSnapshots | None = None
        self._coordination: GroupCoordination | None = None
        self._replicas: HostedReplicas | None = None
        self._applier: MetadataApplier | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._leaving = False  # a clean stop has begun: take no leadership handed over
        #: The brokers' addresses as the controller's log stored here had them at the
        #: start: named until the image has replayed them (``describe.cluster_metadata``).
        self._logged_brokers: dict[int, BrokerAddresses] = {}
        # Not ``self.controller.execute``: the controller exists once ``start`` made it.
        self._reports = ControllerReports(
            self.node_id, lambda op, args: self.controller.execute(op, args)  # noqa: PLW0108
        )

    @property
    def broker_count(self) -> int:
        return len(self.peers)

    @property
    def driver(self) -> MultiRaftDriver:
        assert self._driver is not None, "the cluster node is not started"
        return self._driver

    @property
    def replicas(self) -> HostedReplicas:
        assert self._replicas is not None, "the cluster node is not started"
        return self._replicas

    @property
    def applier(self) -> MetadataApplier:
        assert self._applier is not None, "the cluster node is not started"
        return self._applier

    @property
    def _by_group(self) -> Mapping[int, ReplicatedPartition]:
        """The replicas hosted here, by Raft group (none before ``start``)."""
        return {} if self._replicas is None else self._replicas.by_group

    @property
    def controller(self) -> Controller:
        assert self._controller is not None, "the cluster node is not started"
        return self._controller

    @property
    def snapshots(self) -> ControllerSnapshots:
        assert self._snapshots is not None, "the cluster node is not started"
        return self._snapshots

    @property
    def coordination(self) -> GroupCoordination:
        assert self._coordination is not None, "the cluster node is not started"
        return self._coordination

    @property
    def transport(self) -> PeerTransport:
        assert self._transport is not None, "the cluster node is not started"
        return self._transport

    def raft_figures(self) -> Iterator[RaftFigures]:
        """Role, term, commit and follower lags of every Raft group here (the
        controller's as ``__cluster_metadata``-0); read-only, safe from another thread."""
        driver = self._driver
        if driver is None:
            return iter(())
        groups = [(CONTROLLER_GROUP, METADATA_TOPIC, 0)] + [
            (group, part.topic, part.index) for group, part in list(self._by_group.items())
        ]
        return raft_figures(driver, groups)

    @property
    def elections(self) -> int:
        """Elections this broker started (became a candidate), every group counted."""
        return 0 if self._driver is None else self._driver.elections

    # ------------------------------------------------------------ lifecycle

    async def start(self, engine_options: EngineOptions) -> None:
        """Open the controller's log and the hard states, listen for peers, start the
        Raft driver; the partition groups appear as the controller's records replay."""
        config = self._config
        try:  # this broker's Raft state: damage here is refused, whatever the position
            raft_log, snapshots = self._open_state(engine_options)
        except DiskError as exc:
            raise _damaged_cluster_state(exc) from exc
        # A damaged snapshot's refusal says its own remedy (remove it: one is installed
        # from another broker), so it is not wrapped.
        loaded = snapshots.load(raft_log.log_start)
        self._logged_brokers = registered_in(raft_log)
        assert self._store is not None
        covered = 0 if loaded is None else loaded[1]
        core = RaftCore(
            self.node_id, frozenset(self.peers), raft_log, self._rng,
            hard_state=raft_log.hard_state, applied=max(raft_log.log_start, covered),
            config=RAFT,
        )
        listen = dict(self.peers)
        if config.peer_listen:
            host, _, port = config.peer_listen.rpartition(":")
            listen[self.node_id] = Peer(self.node_id, host, int(port))
        self._transport = PeerTransport(
            self.node_id, self.cluster_id, listen,
            on_envelope=self._deliver, on_call=self._on_call,
        )
        self._driver = MultiRaftDriver(
            GroupSet(self.node_id), self._send, self._store,
            tick_seconds=config.raft_tick_ms / 1000.0,
        )
        self._replicas = HostedReplicas(
            node_id=self.node_id, nodes=frozenset(self.peers), config=config,
            registry=self._service.registry, store=self._store, driver=self._driver,
            clock=self._clock, rng=self._rng, durable=self._durable,
            address_of=self.client_address,
            # A lambda: the coordination is made below, and needs these replicas.
            on_offsets_role=lambda part: self.coordination.role_changed(part),  # noqa: PLW0108
            on_lead=self._leads, loop=asyncio.get_running_loop(),
        )
        applier = self._applier = MetadataApplier(
            self.node_id, self._service, self._replicas, lambda: self.controller.image
        )
        self._controller = Controller(
            self.node_id, list(self.peers), self._driver, self._transport, self._clock,
            on_record=applier.apply, limits=self._service.limits,
        )
        controller = self._controller
        groups = self._service.groups
        groups.unload()  # a broker alone's meta store offsets: not this cluster's
        self._coordination = GroupCoordination(
            self.node_id, groups, driver=self._driver, image=lambda: controller.image,
            replica=self._replicas.get, clock=self._clock,
        )
        groups.use_offset_log(self._coordination)
        snapshots.bind(controller, self._driver, self._transport)
        controller.on_image = self.reconcile
        if loaded is not None:
            controller.restore(*loaded)
            # This broker's storage may be ahead of its own snapshot: a topic created
            # after it is not deleted here (the replay that follows keeps it).
            self.reconcile(controller.image, keep=created_from(raft_log, covered))
        self._driver.add_group(
            CONTROLLER_GROUP, core, raft_log, on_apply=controller.on_apply,
            on_reset=controller.on_reset,
        )
        if covered < raft_log.log_start:  # an install a crash interrupted: again
            controller.hold(raft_log.log_start)
        await self._transport.start()
        self._driver.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(
                register_forever(controller, self.node_id, lambda: self._service.config),
                name="cluster-register",
            ),
            loop.create_task(self._balance_forever(), name="cluster-balance"),
            loop.create_task(self._reassign_forever(), name="cluster-reassign"),
            loop.create_task(
                offsets_topic_forever(
                    controller, self.node_id, config.offsets_topic_partitions, len(self.peers)
                ),
                name="cluster-offsets-topic",
            ),
        ]
        log.info(
            "node %d of cluster %s: %d brokers, peers listening on %s",
            self.node_id, self.cluster_id, len(self.peers), listen[self.node_id].address,
        )

    def _open_state(
        self, engine_options: EngineOptions
    ) -> tuple[PartitionRaftLog, ControllerSnapshots]:
        """Open the hard states and the controller's log (read whole: damage is found
        before serving), and the snapshots' directory."""
        fs, data = self._fs, self._config.data_dir
        self._store = HardStateStore.open(fs, posixpath.join(data, "raft-state"))
        self._store.load_all()  # every stored state decoded (its CRC checked) now
        self._metadata_log = PartitionLog.open(
            fs,
            posixpath.join(data, "cluster-metadata"),
            TopicConfig(),
            self._clock,
            engine_options,
            options=LogOptions(auto_high_watermark=False),
            name="__cluster_metadata-0",
        )
        raft_log = PartitionRaftLog(self._metadata_log, self._store.view(CONTROLLER_GROUP),
                                    self._clock, durable=self._durable)
        snapshots = self._snapshots = ControllerSnapshots(
            fs, posixpath.join(data, "cluster-metadata-snapshot"), self.node_id,
            list(self.peers), controller_snapshots.SNAPSHOT_EVERY,
        )
        return raft_log, snapshots

    async def hand_off(self, timeout: float = STOP_BUDGET_S) -> int:
        """A clean stop begins here (``cluster/clean_stop``): the peers are told this
        broker is stopping; every group it leads (partitions and the controller) is
        handed to its most caught-up follower that is not stopping too
        (``leadership.hand_off``), within ``timeout``; from now on it takes no
        leadership handed over; and the commits its clients wait for are answered
        NOT_LEADER_OR_FOLLOWER, unacknowledged, once they cannot complete (too few
        peers left) or ``STOP_BUDGET_S`` has passed, so that no door's grace waits
        for them. Returns how many groups moved."""
        self._leaving = True
        self.transport.say_leaving()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(
            bound_commit_waits(self.driver, self.transport.gone, loop.time() + STOP_BUDGET_S),
            name="cluster-stop-budget",
        ))
        return await hand_off(
            self.driver, [CONTROLLER_GROUP, *self._by_group], timeout, self._peer_leaving
        )

    def _peer_leaving(self, peer: int) -> bool:
        """``peer`` is stopping or gone: it will not take leadership."""
        transport = self.transport
        return transport.leaving(peer) or transport.gone(peer)

    async def stop(self) -> None:
        """Stop the Raft groups and the transport (nothing more is sent), then close
        the controller's log and the hard states; the partitions close with the
        registry."""
        await cancel_and_wait(self._tasks, f"broker {self.node_id}'s cluster tasks")
        await self._reports.stop()
        self._tasks.clear()
        if self._coordination is not None:
            await self._coordination.stop()
        if self._snapshots is not None:
            await self._snapshots.stop()
        if self._driver is not None:
            await self._driver.stop()
        if self._transport is not None:
            await self._transport.stop()
        for part in self._by_group.values():
            part.wake_all()
        if self._metadata_log is not None:
            self._metadata_log.close()
            self._metadata_log = None
        if self._store is not None:
            self._store.close()
            self._store = None
            if self._replicas is not None:
                self._replicas.store_closed()

    def _send(self, envelope: Envelope) -> None:
        self.transport.send(envelope)  # a drop is counted there; Raft sends again

    def _deliver(self, envelope: Envelope) -> None:
        if self._driver is None:
            return
        if self._leaving and any(isinstance(m, TimeoutNow) for _, m in envelope.messages):
            # Stopping: refuse leadership handed back (the balancer of another broker
            # may see this one as the preferred replica until it is gone).
            envelope = replace(envelope, messages=tuple(
                (g, m) for g, m in envelope.messages if not isinstance(m, TimeoutNow)
            ))
        self._driver.deliver(envelope)

    async def _on_call(self, src: int, kind: str, body: bytes) -> bytes:
        if kind == controller_snapshots.CALL_KIND:
            return await self.snapshots.serve(src)
        return await self.controller.on_call(src, kind, body)

    async def _balance_forever(self) -> None:
        """Hand each partition back to its preferred replica (the first of its
        replicas) once that one is caught up: leaders spread as placement intended."""
        while True:
            await asyncio.sleep(BALANCE_EVERY_S)
            self.balance()

    async def _reassign_forever(self) -> None:
        """Take the next step of every replica move whose group this broker leads."""
        while True:
            await asyncio.sleep(REASSIGN_EVERY_S)
            try:
                self.reassign_step()
            except SentinelError as exc:  # a refusal this round: the next one retries
                log.debug("replica move: %s", exc)

    def reassign_step(self) -> None:
        """One step of each move led here (``leadership.reassign_step``)."""
        reassign_step(self.driver, self.controller.image, self._by_group, self._reports)

    def balance(self) -> int:
        """Hand led partitions back to their caught-up preferred replicas
        (``leadership.balance``); returns how many."""
        return balance(self.driver, self.controller.image, self._by_group, self.node_id,
                       self._peer_leaving)

    def reconcile(self, image: MetadataImage, keep: Set[str] = frozenset()) -> None:
        """Make this broker's topics, Raft groups and stored offsets what ``image``
        says (``MetadataApplier.reconcile``)."""
        self.applier.reconcile(image, keep)

    def _leads(self, group: int, term: int) -> None:
        """This broker leads ``group`` in ``term``: tell the controller unless it knows
        (or a clean stop has begun: leadership is being handed away)."""
        if not self._leaving:
            known = self.controller.image.leader_of(group)
            if known is None or known[1] < term:
                self._reports.leader(group, term)

    # ------------------------------------------------------------ the service's calls

    def partition(self, topic: str, index: int, plog: PartitionLog) -> ReplicatedPartition:
        assignment = self._assignment(topic, index)
        part = None if assignment is None else self._by_group.get(assignment.group)
        if part is None or part.log is not plog:
            raise NotLeaderError(
                f"partition {topic}-{index} has no replica on broker {self.node_id} yet",
                None,
            )
        return part

    def _assignment(self, topic: str, index: int) -> PartitionAssignment | None:
        return self.controller.image.assignment_at(topic, index)

    def client_address(self, node: int | None) -> str | None:
        """The gRPC address of broker ``node`` (what NOT_LEADER_OR_FOLLOWER names)."""
        if node is None:
            return None
        found = self.controller.image.brokers.get(node)
        return None if found is None else f"{found.host}:{found.grpc_port}"

    async def create_topic(
        self, name: str, partitions: int, replication_factor: int,
        configs: Mapping[str, str] | None,
    ) -> Topic:
        await controller_ops.create_topic(
            self.controller, name, partitions, replication_factor, configs
        )
        return self._service.registry.get(name)

    async def delete_topic(self, name: str) -> None:
        await controller_ops.delete_topic(self.controller, name)

    async def add_partitions(self, name: str, total: int) -> Topic:
        await controller_ops.create_partitions(self.controller, name, total)
        return self._service.registry.get(name)

    async def reassign_partition(
        self, topic: str, partition: int, replicas: Sequence[int]
    ) -> None:
        await controller_ops.reassign_partition(self.controller, topic, partition, replicas)

    def reassignments(self) -> dict[tuple[str, int], tuple[tuple[int, ...], tuple[int, ...]]]:
        return controller_ops.reassignments(self.controller.image)

    async def alter_configs(
        self, name: str, set_: Mapping[str, str], delete: Sequence[str]
    ) -> Topic:
        await controller_ops.alter_configs(self.controller, name, set_, delete)
        return self._service.registry.get(name)

    def apply_retention(self, plog: PartitionLog | OfflinePartition) -> int:
        """Retention of one replica, through its Raft group (``HostedReplicas``);
        callable from a worker thread; returns 0 (the records go later)."""
        return 0 if self._replicas is None else self._replicas.apply_retention(plog)

    def check_coordinator(self, group_id: str) -> None:
        """NOT_COORDINATOR unless this broker leads ``group_id``'s partition of
        ``__consumer_offsets``; COORDINATOR_LOAD_IN_PROGRESS while it reads it back."""
        self.coordination.check(group_id)

    def coordinator(self, group_id: str) -> BrokerMetadata:
        """The broker leading ``group_id``'s offsets partition (FindCoordinator)."""
        leader = self.coordination.leader_of(group_id)
        found = None if leader is None else self._broker(leader)
        if found is None:
            raise GroupError(
                ErrorCode.COORDINATOR_NOT_AVAILABLE,
                f"the coordinator of group {group_id!r} is not known yet "
                f"({OFFSETS_TOPIC} has no leader for it)",
            )
        return found

    def _broker(self, node: int) -> BrokerMetadata | None:
        return broker_metadata(
            self.controller.image, node, self._service.config, self._logged_brokers
        )

    def cluster(self) -> ClusterMetadata:
        return cluster_metadata(
            self.controller.image, self.peers, self.controller.leader, self.cluster_id,
            self._service.config, logged=self._logged_brokers,
        )

    def topic_metadata(self, topic: Topic, *, offsets: bool = True) -> TopicMetadata:
        return topic_metadata(
            topic, image=self.controller.image, driver=self.driver, hosted=self._by_group,
            node_id=self.node_id, offsets=offsets,
        )


def _damaged_cluster_state(exc: DiskError) -> DamagedDataError:
    """The refusal of a start whose cluster state (``cluster.json``, ``raft-state/``,
    ``cluster-metadata/``) is damaged: a voter that forgot its vote or
    part of its log could elect a leader that lacks acknowledged records, so it is
    never rebuilt silently."""
    detail = str(exc)
    if isinstance(exc, DamagedDataError):
        detail = detail.removeprefix("data damaged: ")
    return DamagedDataError(
        f"cluster state: {detail}",
        quarantinable=False,
        advice=(
            "a broker's Raft state cannot be skipped: restore this data directory from a "
            "backup; the other brokers serve meanwhile"
        ),
    )
