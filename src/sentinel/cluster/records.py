"""The controller's metadata records (KRaft's metadata log, KIP-500/KIP-631).

Each committed entry of the controller's Raft group (group 0) carries one record; every
broker replays them, in order, into a ``MetadataImage`` (``cluster/metadata.py``).

Layout: one UTF-8 JSON object of at most ``MAX_RECORD_BYTES``, keys sorted, no spaces::

    {"type":"CreateTopic","v":1,"name":"orders","replication_factor":2,
     "configs":{"retention.ms":"60000"},
     "partitions":[{"group":7,"replicas":[1,2]},{"group":8,"replicas":[2,3]}]}

    type                fields
    RegisterBroker      node_id, host, grpc_port, kafka_port
    CreateTopic         name, partitions [{group, replicas}], configs {str: str},
                        replication_factor
    DeleteTopic         name
    CreatePartitions    name, added [{group, replicas}]
    AlterConfigs        name, configs {str: str}  (the whole new map)
    CommitOffsets       group_id, offsets [[topic, partition, offset, metadata]]
    DeleteGroupOffsets  group_id
    PartitionLeader     group, leader, term
    ReassignPartition   group, target [node ids]  (a move begins: the wanted replicas)
    PartitionReplicas   group, replicas [node ids]  (the move is done: the new replicas)

``v`` is the format version (1). Decoding is strict: bytes that are not such an object,
a newer ``v``, an unknown type, a missing, extra or duplicated key, a value of the wrong
type or out of range raise ``MetadataRecordError`` (a ``PeerError``: the record came
from the controller) and nothing else. Building a record with invalid values raises a
``CallerError`` (``InvalidArgumentError``, or ``InvalidTopicError`` for a bad name).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from sentinel.errors import CallerError, InvalidArgumentError, PeerError
from sentinel.log.config import MAX_PARTITIONS, validate_topic_name

VERSION = 1
MAX_RECORD_BYTES = 1024 * 1024
MAX_NODE_ID = 2**31 - 1
MAX_GROUP = 2**63 - 1
MAX_OFFSET = 2**63 - 1
MAX_HOST = 255
MAX_GROUP_ID = 1024
MAX_CONFIG_KEY = 255


class MetadataRecordError(PeerError):
    """A metadata record (or snapshot) from the controller does not decode: malformed,
    out of range, too large, or of a newer version than this build."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"metadata record: {detail}")
        self.detail = detail


def _check(ok: bool, detail: str) -> None:
    if not ok:
        raise InvalidArgumentError(detail)


def _check_int(value: object, lo: int, hi: int, what: str) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi
    _check(ok, f"{what} {value!r} is outside {lo}..{hi}")


def _check_str(value: object, max_len: int, what: str) -> None:
    ok = isinstance(value, str) and 1 <= len(value) <= max_len
    _check(ok, f"{what} must be 1..{max_len} characters, got {value!r:.80}")


def _frozen_configs(configs: Mapping[str, str]) -> Mapping[str, str]:
    _check(isinstance(configs, Mapping), f"configs must be a mapping, got {configs!r:.80}")
    for key, value in configs.items():
        _check_str(key, MAX_CONFIG_KEY, "config key")
        _check(isinstance(value, str), f"config {key!r} has a non-string value {value!r:.80}")
    return MappingProxyType(dict(sorted(configs.items())))


@dataclass(frozen=True, slots=True)
class PartitionAssignment:
    """One partition's Raft group id (>= 1, never reused) and its replicas' node ids;
    ``replicas[0]`` is the preferred leader."""

    group: int
    replicas: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_int(self.group, 1, MAX_GROUP, "partition group")
        object.__setattr__(self, "replicas", tuple(self.replicas))
        _check(len(self.replicas) >= 1, f"group {self.group} has no replicas")
        for node in self.replicas:
            _check_int(node, 0, MAX_NODE_ID, "replica node id")
        _check(
            len(set(self.replicas)) == len(self.replicas),
            f"group {self.group} names a replica twice: {list(self.replicas)}",
        )


def _check_replica_list(group: int, nodes: tuple[int, ...], what: str) -> None:
    _check_int(group, 1, MAX_GROUP, "partition group")
    _check(len(nodes) >= 1, f"{what} of group {group} is empty")
    for node in nodes:
        _check_int(node, 0, MAX_NODE_ID, "replica node id")
    _check(len(set(nodes)) == len(nodes), f"{what} of group {group} names a broker twice")


def _check_assignments(partitions: tuple[PartitionAssignment, ...], what: str) -> None:
    _check(
        1 <= len(partitions) <= MAX_PARTITIONS,
        f"{what}: {len(partitions)} partitions is outside 1..{MAX_PARTITIONS}",
    )
    for p in partitions:
        _check(isinstance(p, PartitionAssignment), f"{what}: {p!r:.80} is not an assignment")
    groups = [p.group for p in partitions]
    _check(len(set(groups)) == len(groups), f"{what}: a partition group id repeats")


@dataclass(frozen=True, slots=True)
class RegisterBroker:
    """A broker's client addresses; a later registration of the node replaces it."""

    node_id: int
    host: str
    grpc_port: int
    kafka_port: int

    def __post_init__(self) -> None:
        _check_int(self.node_id, 0, MAX_NODE_ID, "node id")
        _check_str(self.host, MAX_HOST, "host")
        _check_int(self.grpc_port, 1, 65535, "grpc port")
        _check_int(self.kafka_port, 1, 65535, "kafka port")

    def encode(self) -> bytes:
        return _encode(self)


@dataclass(frozen=True, slots=True)
class CreateTopic:
    """A topic with its partitions' groups and replicas (every partition has
    ``replication_factor`` replicas)."""

    name: str
    partitions: tuple[PartitionAssignment, ...]
    configs: Mapping[str, str] = field(hash=False)
    replication_factor: int

    def __post_init__(self) -> None:
        partitions, configs = check_topic(
            self.name, self.partitions, self.configs, self.replication_factor
        )
        object.__setattr__(self, "partitions", partitions)
        object.__setattr__(self, "configs", configs)
        for p in self.partitions:
            _check(
                len(p.replicas) == self.replication_factor,
                f"topic {self.name!r} group {p.group} has {len(p.replicas)} replicas, "
                f"not {self.replication_factor}",
            )

    def encode(self) -> bytes:
        return _encode(self)


def check_topic(
    name: str, partitions: Iterable[PartitionAssignment], configs: Mapping[str, str],
    replication_factor: int,
) -> tuple[tuple[PartitionAssignment, ...], Mapping[str, str]]:
    """A topic's name, partitions, configs and replication factor are valid (each
    partition's replica count aside: a reassignment may change it); returns the
    partitions as a tuple and the configs frozen."""
    validate_topic_name(name)
    parts = tuple(partitions)
    _check_assignments(parts, f"topic {name!r}")
    _check_int(replication_factor, 1, MAX_NODE_ID, "replication factor")
    return parts, _frozen_configs(configs)


@dataclass(frozen=True, slots=True)
class DeleteTopic:
    name: str

    def __post_init__(self) -> None:
        validate_topic_name(self.name)

    def encode(self) -> bytes:
        return _encode(self)


@dataclass(frozen=True, slots=True)
class CreatePartitions:
    """Partitions appended to a topic (their indexes follow the existing ones)."""

    name: str
    added: tuple[PartitionAssignment, ...]

    def __post_init__(self) -> None:
        validate_topic_name(self.name)
        object.__setattr__(self, "added", tuple(self.added))
        _check_assignments(self.added, f"topic {self.name!r}")

    def encode(self) -> bytes:
        return _encode(self)


@dataclass(frozen=True, slots=True)
class AlterConfigs:
    """A topic's whole new config map (keys not in it return to the defaults)."""

    name: str
    configs: Mapping[str, str] = field(hash=False)

    def __post_init__(self) -> None:
        validate_topic_name(self.name)
        object.__setattr__(self, "configs", _frozen_configs(self.configs))

    def encode(self) -> bytes:
        return _encode(self)


class CommittedOffset(NamedTuple):
    topic: str
    partition: int
    offset: int
    metadata: str


def _check_group_id(group_id: object) -> None:
    _check_str(group_id, MAX_GROUP_ID, "consumer group id")


@dataclass(frozen=True, slots=True)
class CommitOffsets:
    """A consumer group's committed offsets (merged into what it had)."""

    group_id: str
    offsets: tuple[CommittedOffset, ...]

    def __post_init__(self) -> None:
        _check_group_id(self.group_id)
        offsets = tuple(CommittedOffset(*o) for o in self.offsets)
        for o in offsets:
            validate_topic_name(o.topic)
            _check_int(o.partition, 0, MAX_PARTITIONS - 1, "partition")
            _check_int(o.offset, -1, MAX_OFFSET, "offset")
            _check(isinstance(o.metadata, str), f"offset metadata {o.metadata!r:.80} is not text")
        keys = {(o.topic, o.partition) for o in offsets}
        _check(len(keys) == len(offsets), f"group {self.group_id!r} commits a partition twice")
        object.__setattr__(self, "offsets", offsets)

    def encode(self) -> bytes:
        return _encode(self)


@dataclass(frozen=True, slots=True)
class DeleteGroupOffsets:
    group_id: str

    def __post_init__(self) -> None:
        _check_group_id(self.group_id)

    def encode(self) -> bytes:
        return _encode(self)


@dataclass(frozen=True, slots=True)
class PartitionLeader:
    """A partition's Raft group elected ``leader`` in ``term`` (reported by the leader;
    what brokers that hold no replica of it tell clients). A hint: a later term wins."""

    group: int
    leader: int
    term: int

    def __post_init__(self) -> None:
        _check_int(self.group, 1, MAX_GROUP, "partition group")
        _check_int(self.leader, 0, MAX_NODE_ID, "leader node id")
        _check_int(self.term, 0, MAX_OFFSET, "term")

    def encode(self) -> bytes:
        return _encode(self)


@dataclass(frozen=True, slots=True)
class ReassignPartition:
    """A move of a partition's replicas begins (Kafka's AlterPartitionReassignments):
    its Raft group's leader changes the voters one broker at a time until they are
    ``target``, then proposes ``PartitionReplicas``. A later one replaces the target."""

    group: int
    target: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", tuple(self.target))
        _check_replica_list(self.group, self.target, "the target replicas")

    def encode(self) -> bytes:
        return _encode(self)


@dataclass(frozen=True, slots=True)
class PartitionReplicas:
    """A move is done: the group's committed voters are ``replicas`` (the target), which
    become the partition's replicas; brokers no longer in them drop their copy."""

    group: int
    replicas: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "replicas", tuple(self.replicas))
        _check_replica_list(self.group, self.replicas, "the replicas")

    def encode(self) -> bytes:
        return _encode(self)


Record = (
    RegisterBroker
    | CreateTopic
    | DeleteTopic
    | CreatePartitions
    | AlterConfigs
    | CommitOffsets
    | DeleteGroupOffsets
    | PartitionLeader
    | ReassignPartition
    | PartitionReplicas
)


# -- encoding -------------------------------------------------------------------------


def assignments_to_json(partitions: Iterable[PartitionAssignment]) -> list[dict[str, Any]]:
    return [{"group": p.group, "replicas": list(p.replicas)} for p in partitions]


def _body(record: Record) -> dict[str, Any]:
    match record:
        case RegisterBroker(node_id, host, grpc_port, kafka_port):
            return {
                "node_id": node_id,
                "host": host,
                "grpc_port": grpc_port,
                "kafka_port": kafka_port,
            }
        case CreateTopic(name, partitions, configs, replication_factor):
            return {
                "name": name,
                "partitions": assignments_to_json(partitions),
                "configs": dict(configs),
                "replication_factor": replication_factor,
            }
        case DeleteTopic(name):
            return {"name": name}
        case CreatePartitions(name, added):
            return {"name": name, "added": assignments_to_json(added)}
        case AlterConfigs(name, configs):
            return {"name": name, "configs": dict(configs)}
        case CommitOffsets(group_id, offsets):
            return {"group_id": group_id, "offsets": [list(o) for o in offsets]}
        case DeleteGroupOffsets(group_id):
            return {"group_id": group_id}
        case PartitionLeader(group, leader, term):
            return {"group": group, "leader": leader, "term": term}
        case ReassignPartition(group, target):
            return {"group": group, "target": list(target)}
        case PartitionReplicas(group, replicas):
            return {"group": group, "replicas": list(replicas)}


def dump_json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _encode(record: Record) -> bytes:
    data = dump_json({"v": VERSION, "type": type(record).__name__, **_body(record)})
    _check(
        len(data) <= MAX_RECORD_BYTES,
        f"{type(record).__name__} record is {len(data)} bytes; the limit is {MAX_RECORD_BYTES}",
    )
    return data


# -- decoding -------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise MetadataRecordError("an object repeats a key")
    return obj


def load_json(data: bytes, max_bytes: int, what: str) -> dict[str, Any]:
    """The JSON object in ``data``, with its version checked; ``MetadataRecordError``
    otherwise."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MetadataRecordError(f"{what} is {type(data).__name__}, not bytes")
    if len(data) > max_bytes:
        raise MetadataRecordError(f"{what} is {len(data)} bytes; the limit is {max_bytes}")
    try:
        obj = json.loads(bytes(data).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MetadataRecordError(f"{what} is not JSON: {exc}".splitlines()[0]) from exc
    if not isinstance(obj, dict):
        raise MetadataRecordError(f"{what} is not a JSON object")
    version = obj.pop("v", None)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise MetadataRecordError(f"{what} has no valid version: {version!r:.40}")
    if version > VERSION:
        raise MetadataRecordError(f"{what} version {version} is newer than this build's {VERSION}")
    return obj


class Fields:
    """Typed reads of one decoded JSON object; ``done()`` refuses keys not read."""

    def __init__(self, obj: object, what: str) -> None:
        if not isinstance(obj, dict):
            raise MetadataRecordError(f"{what} is not an object")
        self._obj: dict[str, Any] = obj
        self._what = what
        self._read: set[str] = set()

    def _get(self, key: str) -> Any:
        if key not in self._obj:
            raise MetadataRecordError(f"{self._what} has no {key!r}")
        self._read.add(key)
        return self._obj[key]

    def integer(self, key: str) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise MetadataRecordError(f"{self._what} {key!r} is not an integer")
        return value

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise MetadataRecordError(f"{self._what} {key!r} is not a string")
        return value

    def items(self, key: str) -> list[Any]:
        value = self._get(key)
        if not isinstance(value, list):
            raise MetadataRecordError(f"{self._what} {key!r} is not a list")
        return value

    def node_ids(self, key: str) -> tuple[int, ...]:
        value = self.items(key)
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in value):
            raise MetadataRecordError(f"{self._what} {key!r} are not node ids")
        return tuple(value)

    def has(self, key: str) -> bool:
        return key in self._obj

    def configs(self, key: str) -> dict[str, str]:
        value = self._get(key)
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise MetadataRecordError(f"{self._what} {key!r} is not a map of strings")
        return value

    def done(self) -> None:
        extra = sorted(set(self._obj) - self._read)
        if extra:
            raise MetadataRecordError(f"{self._what} has unknown keys {extra[:5]}")


def assignments_from_json(items: list[Any], what: str) -> tuple[PartitionAssignment, ...]:
    out = []
    for item in items:
        f = Fields(item, f"{what} partition")
        replicas = f.items("replicas")
        if not all(isinstance(r, int) and not isinstance(r, bool) for r in replicas):
            raise MetadataRecordError(f"{what} replicas are not node ids")
        out.append(PartitionAssignment(f.integer("group"), tuple(replicas)))
        f.done()
    return tuple(out)


def offset_from_json(item: object) -> CommittedOffset:
    if not isinstance(item, list) or len(item) != 4:
        raise MetadataRecordError("a committed offset is not [topic, partition, offset, metadata]")
    topic, partition, offset, metadata = item
    ok = (
        isinstance(topic, str)
        and isinstance(metadata, str)
        and all(isinstance(n, int) and not isinstance(n, bool) for n in (partition, offset))
    )
    if not ok:
        raise MetadataRecordError("a committed offset has a field of the wrong type")
    return CommittedOffset(topic, partition, offset, metadata)


_DECODERS: dict[str, Callable[[Fields], Record]] = {
    "RegisterBroker": lambda f: RegisterBroker(
        f.integer("node_id"), f.text("host"), f.integer("grpc_port"), f.integer("kafka_port")
    ),
    "CreateTopic": lambda f: CreateTopic(
        f.text("name"),
        assignments_from_json(f.items("partitions"), "CreateTopic"),
        f.configs("configs"),
        f.integer("replication_factor"),
    ),
    "DeleteTopic": lambda f: DeleteTopic(f.text("name")),
    "CreatePartitions": lambda f: CreatePartitions(
        f.text("name"), assignments_from_json(f.items("added"), "CreatePartitions")
    ),
    "AlterConfigs": lambda f: AlterConfigs(f.text("name"), f.configs("configs")),
    "CommitOffsets": lambda f: CommitOffsets(
        f.text("group_id"), tuple(offset_from_json(o) for o in f.items("offsets"))
    ),
    "DeleteGroupOffsets": lambda f: DeleteGroupOffsets(f.text("group_id")),
    "PartitionLeader": lambda f: PartitionLeader(
        f.integer("group"), f.integer("leader"), f.integer("term")
    ),
    "ReassignPartition": lambda f: ReassignPartition(f.integer("group"), f.node_ids("target")),
    "PartitionReplicas": lambda f: PartitionReplicas(f.integer("group"), f.node_ids("replicas")),
}


def decode_record(data: bytes) -> Record:
    """The record in ``data``; ``MetadataRecordError`` (one line) if it is not one."""
    obj = load_json(data, MAX_RECORD_BYTES, "record")
    kind = obj.pop("type", None)
    if not isinstance(kind, str) or kind not in _DECODERS:
        raise MetadataRecordError(f"unknown record type {kind!r:.60}")
    fields = Fields(obj, kind)
    try:
        record = _DECODERS[kind](fields)
    except CallerError as exc:
        raise MetadataRecordError(f"{kind}: {exc}") from exc
    fields.done()
    return record
