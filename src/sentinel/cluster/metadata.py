"""The controller's state machine (KRaft's metadata image, KIP-500/KIP-631), sans-IO.

The controller Raft group's committed entries are records (``cluster/records.py``);
every broker replays them, in log order, into a ``MetadataImage``: the brokers' client
addresses, the topics with their partitions' Raft groups and replicas, the consumer
groups' committed offsets.

``apply(offset, record)`` is total and idempotent: a record at an offset at or below
``applied`` changes nothing, and so does a record that no longer fits (the topic it
names is gone or exists already, the group ids it hands out were handed out before).
Brokers that replay the same log therefore hold equal images, whatever prefix they had
applied before a restart. Group ids are never reused: ``next_group`` is one past the
largest id any applied record carried, and a record carrying a smaller id is stale.

    record              effect                                    no-op when
    RegisterBroker      brokers[node_id] = addresses              same addresses
    CreateTopic         topics[name] = ...; next_group advances   name exists, a group
                                                                  id < next_group
    DeleteTopic         topic, its groups and its committed       name missing
                        offsets removed (group ids stay used)
    CreatePartitions    partitions appended                       name missing, a group
                                                                  id < next_group, rf
                                                                  differs, > max count
    AlterConfigs        configs replaced                          name missing, same map
    CommitOffsets       offsets merged into the group's           same values
    DeleteGroupOffsets  the group's offsets removed               group has none
    PartitionLeader     the group's reported leader               group missing, older term
    ReassignPartition   the group's target replicas set           group missing, same target
    PartitionReplicas   the group's replicas := target, target    group missing, no such
                        dropped                                   target

Snapshot (``encode_snapshot``): one JSON object, keys sorted, at most
``MAX_SNAPSHOT_BYTES``::

    {"v":1,"applied":41,"next_group":9,
     "brokers":[{"node_id":1,"host":"h","grpc_port":9092,"kafka_port":9093}],
     "topics":[{"name":"t","partitions":[{"group":7,"replicas":[1,2]}],
                "configs":{},"replication_factor":2}],
     "offsets":[{"group_id":"g","offsets":[["t",0,42,""]]}],
     "reassignments":[{"group":7,"target":[2,3]}]}

(``reassignments`` is absent from snapshots written before moves existed: none.)

Placement (``place``, ``default_replication_factor``) is in ``cluster/placement.py``;
this module re-exports it and the records, so ``cluster.metadata`` is the one import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sentinel.cluster.placement import (
    InvalidReplicationFactorError,
    default_replication_factor,
    place,
)
from sentinel.cluster.records import (
    MAX_OFFSET,
    AlterConfigs,
    CommitOffsets,
    CommittedOffset,
    CreatePartitions,
    CreateTopic,
    DeleteGroupOffsets,
    DeleteTopic,
    Fields,
    MetadataRecordError,
    PartitionAssignment,
    PartitionLeader,
    PartitionReplicas,
    ReassignPartition,
    Record,
    RegisterBroker,
    assignments_from_json,
    assignments_to_json,
    check_topic,
    decode_record,
    dump_json,
    load_json,
    offset_from_json,
)
from sentinel.errors import CallerError
from sentinel.log.config import MAX_PARTITIONS

__all__ = [
    "AlterConfigs",
    "BrokerAddresses",
    "CommitOffsets",
    "CommittedOffset",
    "CreatePartitions",
    "CreateTopic",
    "DeleteGroupOffsets",
    "DeleteTopic",
    "InvalidReplicationFactorError",
    "MetadataImage",
    "MetadataRecordError",
    "OffsetAndMetadata",
    "PartitionAssignment",
    "PartitionLeader",
    "PartitionReplicas",
    "ReassignPartition",
    "Record",
    "RegisterBroker",
    "TopicImage",
    "decode_record",
    "default_replication_factor",
    "place",
]

MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BrokerAddresses:
    node_id: int
    host: str
    grpc_port: int
    kafka_port: int


@dataclass(frozen=True, slots=True)
class TopicImage:
    """A topic: partition i is ``partitions[i]`` (its group and replicas)."""

    name: str
    partitions: tuple[PartitionAssignment, ...]
    configs: Mapping[str, str] = field(hash=False)
    replication_factor: int


@dataclass(frozen=True, slots=True)
class OffsetAndMetadata:
    offset: int
    metadata: str


class MetadataImage:
    """What the applied prefix of the controller's log says. Read it through the
    properties (read-only views); change it only with ``apply``."""

    def __init__(self) -> None:
        self._brokers: dict[int, BrokerAddresses] = {}
        self._topics: dict[str, TopicImage] = {}
        self._by_group: dict[int, tuple[str, int]] = {}
        self._offsets: dict[str, dict[tuple[str, int], OffsetAndMetadata]] = {}
        self._next_group = 1
        self._applied = -1
        #: group -> (leader, term), as the partitions' leaders reported (hints: not in
        #: snapshots, not compared by ``==``).
        self._leaders: dict[int, tuple[int, int]] = {}
        #: group -> the replicas a move under way wants (``ReassignPartition``).
        self._targets: dict[int, tuple[int, ...]] = {}

    @property
    def brokers(self) -> Mapping[int, BrokerAddresses]:
        return MappingProxyType(self._brokers)

    @property
    def topics(self) -> Mapping[str, TopicImage]:
        return MappingProxyType(self._topics)

    @property
    def offsets(self) -> Mapping[str, Mapping[tuple[str, int], OffsetAndMetadata]]:
        """Consumer group id -> (topic, partition) -> its committed offset."""
        return MappingProxyType({g: MappingProxyType(o) for g, o in self._offsets.items()})

    def committed(self, group_id: str) -> Mapping[tuple[str, int], OffsetAndMetadata]:
        return MappingProxyType(self._offsets.get(group_id, {}))

    @property
    def next_group(self) -> int:
        """The next unused partition group id (ids start at 1 and are never reused)."""
        return self._next_group

    @property
    def applied(self) -> int:
        """The offset of the last applied record; -1 before the first."""
        return self._applied

    def leader_of(self, group: int) -> tuple[int, int] | None:
        """(leader, term) of a partition group as last reported, if it still exists."""
        return self._leaders.get(group) if group in self._by_group else None

    def target_of(self, group: int) -> tuple[int, ...] | None:
        """The replicas a move under way wants for ``group``; None: no move."""
        return self._targets.get(group)

    @property
    def reassignments(self) -> Mapping[int, tuple[int, ...]]:
        """Every move under way: group -> its target replicas."""
        return MappingProxyType(self._targets)

    def assignment_of(self, group: int) -> PartitionAssignment | None:
        found = self._by_group.get(group)
        return None if found is None else self._topics[found[0]].partitions[found[1]]

    def assignment_at(self, topic: str, index: int) -> PartitionAssignment | None:
        """The assignment of ``topic``-``index``, if the image holds that partition."""
        found = self._topics.get(topic)
        if found is None or index >= len(found.partitions):
            return None
        return found.partitions[index]

    def partition_of_group(self, group: int) -> tuple[str, int] | None:
        """The (topic, partition index) replicated by Raft group ``group``, if any."""
        return self._by_group.get(group)

    def groups_of(self, node_id: int) -> dict[int, tuple[str, int]]:
        """The partitions broker ``node_id`` replicates: group -> (topic, index)."""
        return {
            p.group: (topic.name, index)
            for topic in self._topics.values()
            for index, p in enumerate(topic.partitions)
            if node_id in p.replicas
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MetadataImage):
            return NotImplemented
        return (
            self._applied, self._next_group, self._brokers, self._topics, self._offsets,
            self._targets,
        ) == (
            other._applied,
            other._next_group,
            other._brokers,
            other._topics,
            other._offsets,
            other._targets,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"MetadataImage(applied={self._applied}, next_group={self._next_group}, "
            f"brokers={sorted(self._brokers)}, topics={sorted(self._topics)}, "
            f"groups_with_offsets={len(self._offsets)})"
        )

    # -- apply ------------------------------------------------------------------------

    def apply(self, offset: int, record: Record) -> bool:
        """Apply the record at log ``offset``; True if the image changed (beyond
        ``applied``). Never raises for a record that decoded."""
        if offset <= self._applied:
            return False
        self._applied = offset
        match record:
            case RegisterBroker(node_id, host, grpc_port, kafka_port):
                addresses = BrokerAddresses(node_id, host, grpc_port, kafka_port)
                if self._brokers.get(node_id) == addresses:
                    return False
                self._brokers[node_id] = addresses
                return True
            case CreateTopic(name, partitions, configs, replication_factor):
                if name in self._topics or not self._fresh(partitions):
                    return False
                self._topics[name] = TopicImage(name, partitions, configs, replication_factor)
                self._index(name, partitions, 0)
                return True
            case DeleteTopic(name):
                return self._delete_topic(name)
            case CreatePartitions(name, added):
                return self._create_partitions(name, added)
            case AlterConfigs(name, configs):
                topic = self._topics.get(name)
                if topic is None or topic.configs == configs:
                    return False
                self._topics[name] = TopicImage(
                    name, topic.partitions, configs, topic.replication_factor
                )
                return True
            case CommitOffsets(group_id, offsets):
                return self._commit(group_id, offsets)
            case DeleteGroupOffsets(group_id):
                return self._offsets.pop(group_id, None) is not None
            case PartitionLeader(group, leader, term):
                known = self._leaders.get(group)
                if group not in self._by_group or (known is not None and known[1] >= term):
                    return False
                self._leaders[group] = (leader, term)
                return True
            case ReassignPartition(group, target):
                if group not in self._by_group or self._targets.get(group) == target:
                    return False
                self._targets[group] = target
                return True
            case PartitionReplicas(group, replicas):
                return self._move_done(group, replicas)

    def _move_done(self, group: int, replicas: tuple[int, ...]) -> bool:
        where = self._by_group.get(group)
        if where is None or self._targets.get(group) != replicas:
            return False
        del self._targets[group]
        name, index = where
        topic = self._topics[name]
        parts = list(topic.partitions)
        parts[index] = PartitionAssignment(group, replicas)
        self._topics[name] = TopicImage(
            name, tuple(parts), topic.configs, topic.replication_factor
        )
        return True

    def _fresh(self, partitions: tuple[PartitionAssignment, ...]) -> bool:
        return all(p.group >= self._next_group for p in partitions)

    def _index(self, name: str, partitions: tuple[PartitionAssignment, ...], first: int) -> None:
        for i, p in enumerate(partitions):
            self._by_group[p.group] = (name, first + i)
        self._next_group = max(self._next_group, max(p.group for p in partitions) + 1)

    def _delete_topic(self, name: str) -> bool:
        topic = self._topics.pop(name, None)
        if topic is None:
            return False
        for p in topic.partitions:
            del self._by_group[p.group]
            self._targets.pop(p.group, None)
        for group_id in list(self._offsets):
            kept = {k: v for k, v in self._offsets[group_id].items() if k[0] != name}
            if kept:
                self._offsets[group_id] = kept
            else:
                del self._offsets[group_id]
        return True

    def _create_partitions(self, name: str, added: tuple[PartitionAssignment, ...]) -> bool:
        topic = self._topics.get(name)
        if (
            topic is None
            or not self._fresh(added)
            or any(len(p.replicas) != topic.replication_factor for p in added)
            or len(topic.partitions) + len(added) > MAX_PARTITIONS
        ):
            return False
        first = len(topic.partitions)
        self._topics[name] = TopicImage(
            name, topic.partitions + added, topic.configs, topic.replication_factor
        )
        self._index(name, added, first)
        return True

    def _commit(self, group_id: str, offsets: tuple[CommittedOffset, ...]) -> bool:
        if not offsets:
            return False
        current = self._offsets.setdefault(group_id, {})
        changed = False
        for topic, partition, offset, metadata in offsets:
            value = OffsetAndMetadata(offset, metadata)
            if current.get((topic, partition)) != value:
                current[(topic, partition)] = value
                changed = True
        return changed

    # -- snapshot ---------------------------------------------------------------------

    def encode_snapshot(self) -> bytes:
        """The whole image as bytes (``decode_snapshot`` gives an equal image)."""
        return dump_json(
            {
                "v": 1,
                "applied": self._applied,
                "next_group": self._next_group,
                "brokers": [
                    {
                        "node_id": b.node_id,
                        "host": b.host,
                        "grpc_port": b.grpc_port,
                        "kafka_port": b.kafka_port,
                    }
                    for b in sorted(self._brokers.values(), key=lambda b: b.node_id)
                ],
                "topics": [
                    {
                        "name": t.name,
                        "partitions": assignments_to_json(t.partitions),
                        "configs": dict(t.configs),
                        "replication_factor": t.replication_factor,
                    }
                    for t in sorted(self._topics.values(), key=lambda t: t.name)
                ],
                "offsets": [
                    {
                        "group_id": group_id,
                        "offsets": [
                            [t, p, v.offset, v.metadata] for (t, p), v in sorted(o.items())
                        ],
                    }
                    for group_id, o in sorted(self._offsets.items())
                ],
                "reassignments": [
                    {"group": g, "target": list(t)} for g, t in sorted(self._targets.items())
                ],
            }
        )

    @classmethod
    def decode_snapshot(cls, data: bytes, max_bytes: int = MAX_SNAPSHOT_BYTES) -> MetadataImage:
        """The image in ``data``; ``MetadataRecordError`` (one line) if it is not one."""
        f = Fields(load_json(data, max_bytes, "snapshot"), "snapshot")
        try:
            image = cls._from_fields(f)
        except CallerError as exc:
            raise MetadataRecordError(f"snapshot: {exc}") from exc
        f.done()
        return image

    @classmethod
    def _from_fields(cls, f: Fields) -> MetadataImage:
        image = cls()
        image._applied = f.integer("applied")
        image._next_group = f.integer("next_group")
        if not -1 <= image._applied <= MAX_OFFSET or image._next_group < 1:
            raise MetadataRecordError("snapshot: applied or next_group out of range")
        for item in f.items("brokers"):
            b = Fields(item, "snapshot broker")
            r = RegisterBroker(
                b.integer("node_id"),
                b.text("host"),
                b.integer("grpc_port"),
                b.integer("kafka_port"),
            )
            b.done()
            if r.node_id in image._brokers:
                raise MetadataRecordError(f"snapshot: broker {r.node_id} repeats")
            image._brokers[r.node_id] = BrokerAddresses(
                r.node_id, r.host, r.grpc_port, r.kafka_port
            )
        for item in f.items("topics"):
            t = Fields(item, "snapshot topic")
            name, rf = t.text("name"), t.integer("replication_factor")
            parts, configs = check_topic(  # a moved partition's count may differ from rf
                name, assignments_from_json(t.items("partitions"), "snapshot topic"),
                t.configs("configs"), rf,
            )
            t.done()
            c = TopicImage(name, parts, configs, rf)
            if c.name in image._topics:
                raise MetadataRecordError(f"snapshot: topic {c.name!r} repeats")
            groups = [p.group for p in c.partitions]
            if any(g in image._by_group or g >= image._next_group for g in groups):
                raise MetadataRecordError(f"snapshot: topic {c.name!r} reuses a group id")
            image._topics[c.name] = c
            image._by_group.update((p.group, (c.name, i)) for i, p in enumerate(c.partitions))
        for item in f.items("offsets"):
            o = Fields(item, "snapshot offsets")
            commit = CommitOffsets(
                o.text("group_id"), tuple(offset_from_json(x) for x in o.items("offsets"))
            )
            o.done()
            if commit.group_id in image._offsets or not commit.offsets:
                raise MetadataRecordError(f"snapshot: offsets of {commit.group_id!r} repeat")
            image._offsets[commit.group_id] = {
                (c.topic, c.partition): OffsetAndMetadata(c.offset, c.metadata)
                for c in commit.offsets
            }
        for item in f.items("reassignments") if f.has("reassignments") else ():
            m = Fields(item, "snapshot reassignment")
            move = ReassignPartition(m.integer("group"), m.node_ids("target"))
            m.done()
            if move.group not in image._by_group or move.group in image._targets:
                raise MetadataRecordError(
                    f"snapshot: reassignment of group {move.group} names no partition or repeats"
                )
            image._targets[move.group] = move.target
        return image
