"""The controller: Raft group 0 over every broker, whose log is the cluster's metadata.

As KRaft's metadata log (KIP-500, KIP-631): topics, their partitions' replicas,
configs and the brokers' client addresses are records in one replicated log (the
consumer groups' offsets are in ``__consumer_offsets`` now: ``cluster/group_coordination``;
CommitOffsets records of an older log still apply to the meta store, unused); every
broker replays the committed records into its ``MetadataImage`` and applies them to
its own storage (``on_record``). A change is decided by the controller's leader only:
a broker that is not the leader forwards the operation to it (a ``Call`` over the peer
transport), and answers its own caller once it has applied the resulting record
itself, so that what the caller reads next (metadata, a produce to the new topic)
already sees the change.

The leader builds each record from its image: replica placement and partition group
ids are decided there (ids come from ``MetadataImage.next_group`` plus what this leader
has proposed and not yet applied, so two creations in flight never share an id). It
serves operations only once an entry of its own term is committed and applied here
(Raft §8: until then it may not know everything committed), so its image is complete.

Snapshots (``cluster/controller_snapshots``): the image can be ``restore``d from one at
start. When this broker's log was started over past what it applied (``on_reset``: the
leader's log start had moved past its log end), its image is stale: it ``hold``s every
committed entry from then on, applies none, and asks for a snapshot (``on_stale``);
``install`` replaces the image, lets the broker reconcile its storage with it
(``on_image``), and only then applies the held entries past the snapshot.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sentinel.broker.limits import PolicyViolationError, TopicLimits
from sentinel.broker.topics import (
    InvalidReplicationFactorError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from sentinel.clock import Clock
from sentinel.cluster.metadata import MetadataImage, default_replication_factor, place
from sentinel.cluster.records import (
    AlterConfigs,
    CommitOffsets,
    CommittedOffset,
    CreatePartitions,
    CreateTopic,
    DeleteGroupOffsets,
    DeleteTopic,
    MetadataRecordError,
    PartitionLeader,
    PartitionReplicas,
    ReassignPartition,
    Record,
    RegisterBroker,
    decode_record,
)
from sentinel.cluster.transport import PeerTransport, PeerUnavailableError, RemoteCallError
from sentinel.errors import CallerError, SentinelError
from sentinel.log.config import (
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidTopicError,
    TopicConfig,
    validate_partition_count,
    validate_topic_name,
)
from sentinel.raft.log import Entry
from sentinel.raft.multi_driver import MultiRaftDriver
from sentinel.record import build_batch, decode_records, parse_header

log = logging.getLogger(__name__)

CONTROLLER_GROUP = 0
CALL_KIND = "controller"
OPERATION_TIMEOUT_S = 15.0
_RETRY_S = 0.05


class NotControllerError(SentinelError):
    """This broker is not the controller's leader (or not ready to lead yet)."""

    kafka_code = 41
    code_name = "NOT_CONTROLLER"


class ControllerUnavailableError(SentinelError):
    """No controller leader could take the operation in time (no majority of brokers)."""

    kafka_code = 7
    code_name = "REQUEST_TIMED_OUT"


class InvalidReplicaAssignmentError(CallerError):
    """A reassignment's target replicas are not a list of distinct known brokers."""

    kafka_code = 39
    code_name = "INVALID_REPLICA_ASSIGNMENT"


class NoReassignmentInProgressError(CallerError):
    """A move reported done is not the partition's move under way (it changed)."""

    kafka_code = 85
    code_name = "NO_REASSIGNMENT_IN_PROGRESS"


#: Errors a forwarded operation may come back with, re-raised as themselves.
_TYPED: dict[int, type[SentinelError]] = {
    cls.kafka_code: cls
    for cls in (
        UnknownTopicOrPartitionError,
        TopicAlreadyExistsError,
        InvalidReplicationFactorError,
        InvalidPartitionsError,
        InvalidConfigError,
        InvalidTopicError,
        PolicyViolationError,
        NotControllerError,
        InvalidReplicaAssignmentError,
        NoReassignmentInProgressError,
    )
}


class Controller:
    """This broker's view of, and access to, the controller group."""

    def __init__(
        self,
        node_id: int,
        brokers: Sequence[int],
        driver: MultiRaftDriver,
        transport: PeerTransport,
        clock: Clock,
        *,
        on_record: Callable[[int, Record], None],
        limits: TopicLimits,
    ) -> None:
        self.node_id = node_id
        self.brokers = tuple(sorted(brokers))
        self.image = MetadataImage()
        self._driver = driver
        self._transport = transport
        self._clock = clock
        self._on_record = on_record
        self._limits = limits
        self.applied_end = 0
        self._applied = asyncio.Event()
        self._reserved_group = 0
        self._pending_names: set[str] = set()
        #: Set while the image is stale: the entries committed meanwhile, not applied.
        self._held: list[Entry] | None = None
        self._need = 0  # a snapshot must cover at least this offset to be installed
        #: Called with the offset a snapshot must cover when the image becomes stale.
        self.on_stale: Callable[[int], None] | None = None
        #: Called with a newly installed image, before any held entry is applied.
        self.on_image: Callable[[MetadataImage], None] | None = None
        #: Called after every applied entry (the snapshot keeper counts them).
        self.after_apply: Callable[[], None] | None = None

    # ------------------------------------------------------------ state

    @property
    def leader(self) -> int | None:
        return self._driver.core(CONTROLLER_GROUP).leader

    def _ready_to_lead(self) -> bool:
        core = self._driver.core(CONTROLLER_GROUP)
        return (
            core.lead is not None
            and core.commit > 0
            and core.log.term_at(core.commit - 1) == core.term
            and self.applied_end >= core.commit
        )

    @property
    def holding(self) -> int | None:
        """While the image is stale: the offset a snapshot must cover; else None."""
        return None if self._held is None else self._need

    def restore(self, image: MetadataImage, end: int) -> None:
        """Start from a snapshot's image covering the log below ``end``."""
        self.image = image
        self.applied_end = end

    def on_reset(self, group: int, offset: int) -> None:
        """The driver's: this broker's log was started over at ``offset``. Below it are
        entries never applied here unless the image already covers them."""
        if offset > self.applied_end:
            self.hold(offset)

    def hold(self, need: int) -> None:
        """The image is stale below ``need``: apply nothing until ``install``."""
        self._need = max(self._need, need)
        if self._held is None:
            self._held = []
            log.warning(
                "broker %d: the metadata log starts at %d, past what this broker applied "
                "(%d): waiting for a controller snapshot", self.node_id, need, self.applied_end,
            )
        if self.on_stale is not None:
            self.on_stale(self._need)

    def install(self, image: MetadataImage, end: int) -> None:
        """Replace the stale image with a snapshot's covering the log below ``end`` (at
        least ``holding``), reconcile this broker with it, then apply the held entries
        that follow it."""
        if self._held is None or end < self._need:
            raise ValueError(f"a snapshot to {end} does not cover {self._need}")
        held, self._held = self._held, None
        self._need = 0
        self.image = image
        self.applied_end = end
        if self.on_image is not None:
            self.on_image(image)
        for entry in held:
            if entry.end > end:
                self._apply(entry)
        self._applied.set()
        self._applied = asyncio.Event()
        if self.after_apply is not None:
            self.after_apply()

    def on_apply(self, group: int, entry: Entry) -> None:
        """The driver's apply step: decode the committed records, update the image and
        apply each change here (once: the image knows what it applied). Held while the
        image is stale."""
        if self._held is not None:
            self._held.append(entry)
            return
        self._apply(entry)
        self._applied.set()
        self._applied = asyncio.Event()
        if self.after_apply is not None:
            self.after_apply()

    def _apply(self, entry: Entry) -> None:
        if entry.data and not parse_header(entry.data).is_control:
            for record in decode_records(entry.data):
                offset = record.offset
                try:
                    change = decode_record(record.value or b"")
                except MetadataRecordError as exc:  # a newer broker's record: skip it
                    log.error("metadata record at %d skipped: %s", offset, exc)
                    continue
                if self.image.apply(offset, change):
                    self._on_record(offset, change)
        self.applied_end = max(self.applied_end, entry.end)

    async def wait_applied(self, end: int, timeout: float = OPERATION_TIMEOUT_S) -> None:
        """Until this broker has applied the metadata log up to ``end``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.applied_end < end:
            left = deadline - loop.time()
            if left <= 0:
                raise ControllerUnavailableError(
                    f"broker {self.node_id} has not caught up with the metadata log "
                    f"(applied to {self.applied_end}, waiting for {end})"
                )
            try:
                await asyncio.wait_for(self._applied.wait(), left)
            except TimeoutError:
                continue

    # ------------------------------------------------------------ operations

    async def execute(self, op: str, args: Mapping[str, Any]) -> int:
        """Run ``op`` at the controller's leader (here, or forwarded to it); returns
        the offset of its record once this broker has applied it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + OPERATION_TIMEOUT_S
        while True:
            leader = self.leader
            try:
                if leader == self.node_id:
                    offset = await self.lead(op, args)
                elif leader is not None:
                    offset = await self._forward(leader, op, args, deadline - loop.time())
                else:
                    raise NotControllerError("no controller leader is known yet")
            except (NotControllerError, PeerUnavailableError) as exc:
                if loop.time() + _RETRY_S >= deadline:
                    raise ControllerUnavailableError(
                        f"no controller could take {op!r} within {OPERATION_TIMEOUT_S:g} s: "
                        f"{exc}"
                    ) from exc
                await asyncio.sleep(_RETRY_S)
                continue
            await self.wait_applied(offset + 1, max(0.1, deadline - loop.time()))
            return offset

    async def _forward(self, leader: int, op: str, args: Mapping[str, Any], left: float) -> int:
        body = json.dumps({"op": op, "args": dict(args)}).encode()
        try:
            reply = await self._transport.call(leader, CALL_KIND, body, max(0.1, left))
        except RemoteCallError as exc:
            typed = _TYPED.get(exc.kafka_code)
            if typed is not None:
                raise typed(str(exc)) from None
            raise
        return int(json.loads(reply)["offset"])

    async def on_call(self, src: int, kind: str, body: bytes) -> bytes:
        """A forwarded operation from broker ``src`` (the transport's ``on_call``)."""
        if kind != CALL_KIND:
            raise CallerError(f"unknown call {kind!r} from broker {src}")
        try:
            request = json.loads(body)
            op, args = str(request["op"]), dict(request["args"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CallerError(f"malformed controller call from broker {src}: {exc}") from None
        offset = await self.lead(op, args)
        return json.dumps({"offset": offset}).encode()

    async def lead(self, op: str, args: Mapping[str, Any]) -> int:
        """At the leader: build the record of ``op``, propose it and wait until it is
        committed; returns its offset."""
        if not self._ready_to_lead():
            leader = self.leader
            raise NotControllerError(
                f"broker {self.node_id} is not the controller's leader"
                + (f" (broker {leader} is)" if leader not in (None, self.node_id) else "")
            )
        record, name = self._build(op, args)
        now_ms = int(self._clock.wall() * 1000)
        batch = build_batch([(op.encode(), record.encode(), (), now_ms)])
        if name is not None:
            self._pending_names.add(name)
        try:
            entry = self._driver.propose(CONTROLLER_GROUP, batch, 1)
            await self._driver.wait_committed(CONTROLLER_GROUP, entry)
        finally:
            if name is not None:
                self._pending_names.discard(name)
        return entry.base

    # ------------------------------------------------------------ records

    def _build(self, op: str, args: Mapping[str, Any]) -> tuple[Record, str | None]:
        """The record of ``op`` (validated against the image); and the topic name it
        creates, if it does (a second creation of it waits its turn: already exists)."""
        image = self.image
        if op == "register_broker":
            return RegisterBroker(
                int(args["node_id"]), str(args["host"]),
                int(args["grpc_port"]), int(args["kafka_port"]),
            ), None
        if op == "commit_offsets":
            offsets = tuple(CommittedOffset(str(t), int(p), int(o), str(m))
                            for t, p, o, m in args["offsets"])
            return CommitOffsets(str(args["group_id"]), offsets), None
        if op == "delete_group_offsets":
            return DeleteGroupOffsets(str(args["group_id"])), None
        if op == "partition_leader":
            group = int(args["group"])
            if image.partition_of_group(group) is None:
                raise UnknownTopicOrPartitionError(f"no partition has Raft group {group}")
            return PartitionLeader(group, int(args["leader"]), int(args["term"])), None
        if op == "partition_replicas":
            group, replicas = int(args["group"]), _node_ids(args["replicas"])
            if image.target_of(group) != replicas:
                raise NoReassignmentInProgressError(
                    f"group {group} has no move to {list(replicas)} under way"
                )
            return PartitionReplicas(group, replicas), None
        name = str(args["name"])
        validate_topic_name(name)
        topic = image.topics.get(name)
        if op == "create_topic":
            if topic is not None or name in self._pending_names:
                raise TopicAlreadyExistsError(f"topic {name!r} already exists")
            count = int(args["partitions"])
            validate_partition_count(count)
            configs = {str(k): str(v) for k, v in dict(args["configs"]).items()}
            TopicConfig().with_overrides(configs)
            rf = int(args["replication_factor"])
            if rf == -1:
                rf = default_replication_factor(len(self.brokers))
            self._check_rf(rf)
            self._limits.check_partitions(
                sum(len(t.partitions) for t in image.topics.values()), count,
                f"creating topic {name!r} with {count} partitions",
            )
            first = self._take_groups(count)
            assignments = place(self.brokers, count, rf, first, first % len(self.brokers))
            return CreateTopic(name, assignments, configs, rf), name
        if topic is None:
            raise UnknownTopicOrPartitionError(f"unknown topic {name!r}")
        if op == "delete_topic":
            return DeleteTopic(name), None
        if op == "create_partitions":
            total = int(args["total"])
            validate_partition_count(total)
            current = len(topic.partitions)
            if total <= current:
                raise InvalidPartitionsError(
                    f"topic {name!r} has {current} partition{'' if current == 1 else 's'}; "
                    "the new total must be larger"
                )
            self._limits.check_partitions(
                sum(len(t.partitions) for t in image.topics.values()), total - current,
                f"growing topic {name!r} to {total} partitions",
            )
            first = self._take_groups(total - current)
            added = place(
                self.brokers, total - current, topic.replication_factor, first,
                (first + current) % len(self.brokers),
            )
            return CreatePartitions(name, added), None
        if op == "reassign_partition":
            return self._reassign(name, int(args["partition"]), args["replicas"]), None
        if op == "alter_configs":
            set_ = {str(k): str(v) for k, v in dict(args["set"]).items()}
            delete = [str(k) for k in args["delete"]]
            both = sorted(set(set_) & set(delete))
            if both:
                raise InvalidConfigError(f"topic config {both[0]!r} is both set and deleted")
            configs = {k: v for k, v in topic.configs.items() if k not in delete}
            configs.update(set_)
            defaults = TopicConfig().to_map()
            for key in delete:
                TopicConfig().with_overrides({key: defaults.get(key, "")})
            TopicConfig().with_overrides(configs)
            return AlterConfigs(name, configs), None
        raise CallerError(f"unknown controller operation {op!r}")

    def _reassign(self, name: str, index: int, replicas: object) -> ReassignPartition:
        topic = self.image.topics[name]
        if not 0 <= index < len(topic.partitions):
            raise UnknownTopicOrPartitionError(
                f"topic {name!r} has no partition {index} (it has {len(topic.partitions)})"
            )
        target = _node_ids(replicas)
        where = f"partition {name}-{index}"
        if not target:
            raise InvalidReplicaAssignmentError(f"{where}: the replica list is empty")
        if len(set(target)) != len(target):
            raise InvalidReplicaAssignmentError(
                f"{where}: the replica list {list(target)} names a broker twice"
            )
        unknown = sorted(set(target) - set(self.brokers))
        if unknown:
            raise InvalidReplicaAssignmentError(
                f"{where}: broker {unknown[0]} is not in the cluster (brokers "
                f"{','.join(map(str, self.brokers))})"
            )
        return ReassignPartition(topic.partitions[index].group, target)

    def _check_rf(self, rf: int) -> None:
        if not 1 <= rf <= len(self.brokers):
            raise InvalidReplicationFactorError(
                f"replication factor {rf} needs that many brokers; the cluster has "
                f"{len(self.brokers)}"
            )

    def _take_groups(self, count: int) -> int:
        first = max(self.image.next_group, self._reserved_group)
        self._reserved_group = first + count
        return first


def _node_ids(value: object) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) for n in value
    ):
        raise InvalidReplicaAssignmentError(
            f"replicas must be a list of node ids, got {value!r:.80}"
        )
    return tuple(value)
