"""The controller's state machine: records round trip and refuse anything malformed with
one typed error; the image's apply is idempotent and total; group ids are never reused;
placement spreads leaders and replicas; the snapshot round trips."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.broker.topics import InvalidReplicationFactorError
from sentinel.cluster.metadata import (
    AlterConfigs,
    BrokerAddresses,
    CommitOffsets,
    CommittedOffset,
    CreatePartitions,
    CreateTopic,
    DeleteGroupOffsets,
    DeleteTopic,
    MetadataImage,
    MetadataRecordError,
    OffsetAndMetadata,
    PartitionAssignment,
    PartitionReplicas,
    ReassignPartition,
    Record,
    RegisterBroker,
    decode_record,
    default_replication_factor,
    place,
)
from sentinel.cluster.records import MAX_RECORD_BYTES
from sentinel.errors import CallerError, PeerError

# -- strategies: a small universe, so that records collide (same names, same groups) ----

NAMES = st.sampled_from(["a", "b", "orders.v2", "x_y-z"])
NODES = st.integers(0, 4)
GROUP_IDS = st.sampled_from(["g1", "g2"])
CONFIGS = st.dictionaries(
    st.sampled_from(["retention.ms", "cleanup.policy"]), st.sampled_from(["1", "compact", "é"])
)


@st.composite
def assignments(draw: st.DrawFn, rf: int) -> tuple[PartitionAssignment, ...]:
    groups = draw(st.lists(st.integers(1, 30), min_size=1, max_size=4, unique=True))
    return tuple(
        PartitionAssignment(g, tuple(draw(st.permutations(range(5)))[:rf])) for g in groups
    )


@st.composite
def create_topics(draw: st.DrawFn) -> CreateTopic:
    rf = draw(st.integers(1, 3))
    return CreateTopic(draw(NAMES), draw(assignments(rf)), draw(CONFIGS), rf)


@st.composite
def create_partitions(draw: st.DrawFn) -> CreatePartitions:
    return CreatePartitions(draw(NAMES), draw(assignments(draw(st.integers(1, 3)))))


OFFSETS = st.lists(
    st.builds(CommittedOffset, NAMES, st.integers(0, 3), st.integers(-1, 10**12), st.text()),
    max_size=4,
    unique_by=lambda o: (o.topic, o.partition),
).map(tuple)

RECORDS: st.SearchStrategy[Record] = st.one_of(
    st.builds(
        RegisterBroker,
        NODES,
        st.sampled_from(["127.0.0.1", "h", "::1"]),
        st.integers(1, 65535),
        st.integers(1, 65535),
    ),
    create_topics(),
    st.builds(DeleteTopic, NAMES),
    create_partitions(),
    st.builds(AlterConfigs, NAMES, CONFIGS),
    st.builds(CommitOffsets, GROUP_IDS, OFFSETS),
    st.builds(DeleteGroupOffsets, GROUP_IDS),
    st.builds(ReassignPartition, st.integers(1, 30), st.sampled_from([(1, 2), (2, 3), (4,)])),
    st.builds(PartitionReplicas, st.integers(1, 30), st.sampled_from([(1, 2), (2, 3), (4,)])),
)


def replay(records: list[Record], image: MetadataImage | None = None) -> MetadataImage:
    image = image if image is not None else MetadataImage()
    for offset, record in enumerate(records):
        image.apply(offset, record)
    return image


# -- records --------------------------------------------------------------------------


EXAMPLES: list[Record] = [
    RegisterBroker(1, "127.0.0.1", 9092, 9093),
    CreateTopic(
        "orders",
        (PartitionAssignment(7, (1, 2)), PartitionAssignment(8, (2, 3))),
        {"retention.ms": "60000"},
        2,
    ),
    DeleteTopic("orders"),
    CreatePartitions("orders", (PartitionAssignment(9, (3, 1)),)),
    AlterConfigs("orders", {}),
    CommitOffsets("g", (CommittedOffset("orders", 0, 42, "meta"), ("orders", 1, 7, ""))),
    DeleteGroupOffsets("g"),
    ReassignPartition(7, (2, 4)),
    PartitionReplicas(7, (2, 4)),
]


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: type(r).__name__)
def test_every_record_type_round_trips(record: Record) -> None:
    data = record.encode()
    assert decode_record(data) == record
    assert json.loads(data)["v"] == 1
    assert json.loads(data)["type"] == type(record).__name__


def test_a_plain_tuple_offset_becomes_a_named_one() -> None:
    commit = EXAMPLES[5]
    assert isinstance(commit, CommitOffsets)
    assert commit.offsets[1] == CommittedOffset("orders", 1, 7, "")
    assert commit.offsets[1].offset == 7


@given(RECORDS)
def test_any_record_round_trips(record: Record) -> None:
    assert decode_record(record.encode()) == record
    assert hash(record) == hash(decode_record(record.encode()))


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"type":"DeleteTopic","name":"t"}', "no valid version"),
        (b'{"v":true,"type":"DeleteTopic","name":"t"}', "no valid version"),
        (b'{"v":2,"type":"DeleteTopic","name":"t"}', "newer than this build"),
        (b'{"v":1,"type":"Nope"}', "unknown record type"),
        (b'{"v":1,"type":"DeleteTopic"}', "no 'name'"),
        (b'{"v":1,"type":"DeleteTopic","name":"t","x":1}', "unknown keys"),
        (b'{"v":1,"type":"DeleteTopic","name":"t","name":"u"}', "repeats a key"),
        (b'{"v":1,"type":"DeleteTopic","name":"a/b"}', "characters outside"),
        (b'{"v":1,"type":"DeleteTopic","name":7}', "not a string"),
        (b'{"v":1,"type":"DeleteGroupOffsets","group_id":""}', "consumer group id"),
        (
            b'{"v":1,"type":"RegisterBroker","node_id":true,"host":"h",'
            b'"grpc_port":1,"kafka_port":2}',
            "not an integer",
        ),
        (
            b'{"v":1,"type":"RegisterBroker","node_id":1,"host":"h","grpc_port":0,"kafka_port":2}',
            "grpc port",
        ),
        (
            b'{"v":1,"type":"CreateTopic","name":"t","configs":{},"replication_factor":2,'
            b'"partitions":[{"group":1,"replicas":[1]}]}',
            "not 2",
        ),
        (
            b'{"v":1,"type":"CreateTopic","name":"t","configs":{},"replication_factor":1,'
            b'"partitions":[]}',
            "outside 1..10000",
        ),
        (
            b'{"v":1,"type":"CreatePartitions","name":"t","added":[{"group":1,"replicas":[1,1]}]}',
            "twice",
        ),
        (
            b'{"v":1,"type":"CreatePartitions","name":"t","added":[{"group":0,"replicas":[1]}]}',
            "partition group",
        ),
        (b'{"v":1,"type":"AlterConfigs","name":"t","configs":{"a":1}}', "map of strings"),
        (b'{"v":1,"type":"CommitOffsets","group_id":"g","offsets":[["t",0,1]]}', "topic, part"),
        (b'{"v":1,"type":"CommitOffsets","group_id":"g","offsets":[["t",0,-2,""]]}', "offset"),
        (
            b'{"v":1,"type":"CommitOffsets","group_id":"g","offsets":[["t",0,1,""],["t",0,2,""]]}',
            "twice",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b'{"v":1,"type":"DeleteTopic","name":"' + b"a" * MAX_RECORD_BYTES + b'"}', "limit"),
        (b'{"v":1,"type":"RegisterBroker","node_id":' + b"9" * 5000 + b"}", "not JSON"),
    ],
)
def test_malformed_records_raise_one_typed_line(data: bytes, says: str) -> None:
    with pytest.raises(MetadataRecordError) as info:
        decode_record(data)
    assert isinstance(info.value, PeerError)
    assert says in str(info.value)
    assert "\n" not in str(info.value)


@settings(max_examples=300)
@given(RECORDS, st.data())
def test_mutated_record_bytes_raise_only_the_record_error(
    record: Record, data: st.DataObject
) -> None:
    raw = bytearray(record.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        at = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if kind == "flip" and raw:
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "cut":
            del raw[at:]
        elif kind == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=3))
        elif raw:
            del raw[at]
    try:
        decoded = decode_record(bytes(raw))
    except MetadataRecordError as exc:
        assert "\n" not in str(exc)
    else:
        assert decode_record(decoded.encode()) == decoded


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.sampled_from(
        [
            "RegisterBroker",
            "CreateTopic",
            "DeleteTopic",
            "CreatePartitions",
            "AlterConfigs",
            "CommitOffsets",
            "DeleteGroupOffsets",
        ]
    ),
    st.dictionaries(
        st.sampled_from(
            [
                "name",
                "node_id",
                "host",
                "grpc_port",
                "kafka_port",
                "partitions",
                "configs",
                "replication_factor",
                "added",
                "group_id",
                "offsets",
            ]
        ),
        JSON,
    ),
)
def test_well_formed_json_of_the_wrong_shape_raises_only_the_record_error(
    kind: str, fields: dict[str, object]
) -> None:
    data = json.dumps({"v": 1, "type": kind, **fields}).encode()
    try:
        decoded = decode_record(data)
    except MetadataRecordError as exc:
        assert "\n" not in str(exc)
    else:
        assert decode_record(decoded.encode()) == decoded


def test_building_an_invalid_record_is_the_callers_fault() -> None:
    with pytest.raises(CallerError):
        RegisterBroker(-1, "h", 1, 2)
    with pytest.raises(CallerError):
        CreateTopic("t", (PartitionAssignment(1, (1, 2)),), {}, 3)
    with pytest.raises(CallerError):
        DeleteTopic("..")
    big = tuple(CommittedOffset("t", 0, 1, "m" * 1000) for _ in range(1))
    with pytest.raises(CallerError):
        CommitOffsets("g", big * 2)  # the same partition twice
    huge = CommitOffsets("g", (CommittedOffset("t", 0, 1, "m" * MAX_RECORD_BYTES),))
    with pytest.raises(CallerError, match="limit"):
        huge.encode()


# -- the image ------------------------------------------------------------------------


def test_apply_builds_the_image_and_the_lookups() -> None:
    image = replay(
        [
            RegisterBroker(1, "h1", 9092, 9093),
            RegisterBroker(2, "h2", 9092, 9093),
            RegisterBroker(1, "h1b", 19092, 19093),
            CreateTopic("t", place([1, 2], 2, 2, 1, 0), {"retention.ms": "1"}, 2),
            CreatePartitions("t", (PartitionAssignment(3, (2, 1)),)),
            AlterConfigs("t", {"cleanup.policy": "compact"}),
            CommitOffsets("g", (CommittedOffset("t", 0, 5, "m"),)),
        ]
    )
    assert image.applied == 6
    assert image.brokers[1] == BrokerAddresses(1, "h1b", 19092, 19093)
    topic = image.topics["t"]
    assert [p.group for p in topic.partitions] == [1, 2, 3]
    assert dict(topic.configs) == {"cleanup.policy": "compact"}
    assert image.next_group == 4
    assert image.partition_of_group(3) == ("t", 2)
    assert image.partition_of_group(9) is None
    assert image.groups_of(1) == {1: ("t", 0), 2: ("t", 1), 3: ("t", 2)}
    assert image.committed("g") == {("t", 0): OffsetAndMetadata(5, "m")}
    assert image.apply(7, DeleteTopic("t"))
    assert image.groups_of(1) == {}
    assert image.partition_of_group(1) is None
    assert image.offsets == {}  # a deleted topic's committed offsets go with it
    assert not image.apply(8, DeleteTopic("t"))


def test_group_ids_are_never_reused_across_delete_and_recreate() -> None:
    image = MetadataImage()
    first = CreateTopic("t", place([1, 2, 3], 3, 2, image.next_group, 0), {}, 2)
    assert image.apply(0, first)
    assert image.apply(1, DeleteTopic("t"))
    assert image.next_group == 4
    # A stale create carrying the old ids (proposed from an old image) changes nothing.
    assert not image.apply(2, first)
    assert "t" not in image.topics
    again = CreateTopic("t", place([1, 2, 3], 3, 2, image.next_group, 0), {}, 2)
    assert image.apply(3, again)
    assert [p.group for p in image.topics["t"].partitions] == [4, 5, 6]
    # Another create of the same name lost the race: a no-op, even with fresh ids.
    assert not image.apply(4, CreateTopic("t", place([1], 1, 1, 7, 0), {}, 1))
    assert image.next_group == 7


@given(st.lists(RECORDS, max_size=25))
def test_apply_is_idempotent_and_total(records: list[Record]) -> None:
    image = replay(records)
    again = replay(records, replay(records))  # every offset <= applied: nothing changes
    assert again == image
    # Each record applied twice in a row (a duplicate at the next offset) changes nothing.
    doubled = MetadataImage()
    for i, record in enumerate(records):
        doubled.apply(2 * i, record)
        assert not doubled.apply(2 * i + 1, record)
    assert doubled.topics == image.topics
    assert doubled.brokers == image.brokers
    assert doubled.offsets == image.offsets
    assert doubled.next_group == image.next_group


@given(st.lists(RECORDS, max_size=25), st.data())
def test_replay_from_any_prefix_gives_the_same_image(
    records: list[Record], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(records)))
    restarted = replay(records, replay(records[:cut]))
    assert restarted == replay(records)


@given(st.lists(RECORDS, max_size=30))
def test_a_group_id_is_never_seen_on_two_partitions(records: list[Record]) -> None:
    image = MetadataImage()
    owner: dict[int, tuple[str, int]] = {}
    for offset, record in enumerate(records):
        before = image.next_group
        image.apply(offset, record)
        assert image.next_group >= before
        for name, topic in image.topics.items():
            for index, p in enumerate(topic.partitions):
                assert p.group < image.next_group
                assert owner.setdefault(p.group, (name, index)) == (name, index)
                assert image.partition_of_group(p.group) == (name, index)


# -- the snapshot ---------------------------------------------------------------------


@given(st.lists(RECORDS, max_size=25), st.lists(RECORDS, max_size=5))
def test_snapshot_round_trips_and_replay_continues_equal(
    records: list[Record], more: list[Record]
) -> None:
    image = replay(records)
    copy = MetadataImage.decode_snapshot(image.encode_snapshot())
    assert copy == image
    assert copy.encode_snapshot() == image.encode_snapshot()
    for offset, record in enumerate(more, start=len(records)):
        assert image.apply(offset, record) == copy.apply(offset, record)
    assert copy == image
    for group in range(1, image.next_group):
        assert copy.partition_of_group(group) == image.partition_of_group(group)


def test_malformed_snapshots_raise_the_record_error() -> None:
    good = json.loads(
        replay([CreateTopic("t", (PartitionAssignment(1, (1,)),), {}, 1)]).encode_snapshot()
    )
    bad = [
        b"",
        b'{"v":2}',
        json.dumps({**good, "next_group": 1}).encode(),  # a group at or past next_group
        json.dumps({**good, "topics": good["topics"] * 2}).encode(),
        json.dumps({**good, "extra": 1}).encode(),
        json.dumps({**good, "applied": -2}).encode(),
        json.dumps({k: v for k, v in good.items() if k != "brokers"}).encode(),
    ]
    for data in bad:
        with pytest.raises(MetadataRecordError):
            MetadataImage.decode_snapshot(data)
    with pytest.raises(MetadataRecordError, match="limit"):
        MetadataImage.decode_snapshot(json.dumps(good).encode(), max_bytes=10)


# -- placement ------------------------------------------------------------------------


def test_placement_spreads_leaders_and_replicas() -> None:
    for n in range(1, 8):
        brokers = [10 + 3 * b for b in range(n)]  # node ids need not be 0..n-1
        for rf in range(1, n + 1):
            for count in range(1, 51):
                for start in (0, 1, n - 1, 7):
                    placed = place(brokers, count, rf, 5, start)
                    assert [p.group for p in placed] == list(range(5, 5 + count))
                    assert all(len(set(p.replicas)) == rf for p in placed)
                    assert all(set(p.replicas) <= set(brokers) for p in placed)
                    leaders = Counter(p.replicas[0] for p in placed)
                    load = Counter(b for p in placed for b in p.replicas)
                    if count >= n:
                        assert set(leaders) == set(brokers) == set(load)
                    counts = [leaders[b] for b in brokers]
                    assert max(counts) - min(counts) <= 1, (n, rf, count, start)
                    loads = [load[b] for b in brokers]
                    assert max(loads) - min(loads) <= 1, (n, rf, count, start)


def test_placement_spreads_each_leaders_followers() -> None:
    """As Kafka's shift does: a leader's partitions do not all follow to one broker, so
    when it fails its load spreads."""
    placed = place([1, 2, 3, 4, 5], 25, 2, 1, 0)
    followers: dict[int, set[int]] = {}
    for p in placed:
        followers.setdefault(p.replicas[0], set()).add(p.replicas[1])
    assert all(len(f) == 4 for f in followers.values())


def test_placement_is_deterministic_and_order_free() -> None:
    assert place([3, 1, 2], 6, 2, 1, 4) == place([1, 2, 3], 6, 2, 1, 4)


def test_placement_refuses_an_impossible_replication_factor() -> None:
    for rf in (0, 4):
        with pytest.raises(InvalidReplicationFactorError, match="3"):
            place([1, 2, 3], 1, rf, 1, 0)
    with pytest.raises(InvalidReplicationFactorError):
        place([], 1, 1, 1, 0)
    with pytest.raises(CallerError):
        place([1], 0, 1, 1, 0)
    with pytest.raises(CallerError):
        place([1], 1, 1, 0, 0)
    assert InvalidReplicationFactorError.kafka_code == 38


def test_default_replication_factor() -> None:
    assert [default_replication_factor(n) for n in (1, 2, 3, 4, 9)] == [1, 2, 3, 3, 3]


# -- replica moves --------------------------------------------------------------------


def test_a_move_keeps_its_target_until_done_then_the_replicas_are_the_target() -> None:
    image = replay([
        CreateTopic("t", (PartitionAssignment(1, (1, 2)), PartitionAssignment(2, (2, 3))), {}, 2),
    ])
    assert image.apply(1, ReassignPartition(1, (2, 3, 4)))
    assert image.target_of(1) == (2, 3, 4) and image.target_of(2) is None
    assert image.topics["t"].partitions[0].replicas == (1, 2)  # unchanged while moving
    assert not image.apply(2, ReassignPartition(1, (2, 3, 4)))  # same target: a no-op
    assert not image.apply(3, PartitionReplicas(1, (2, 3)))  # not the move under way
    assert not image.apply(4, ReassignPartition(99, (1,)))  # no such group
    # Snapshots carry the move, and a moved partition whose count differs from the rf.
    assert MetadataImage.decode_snapshot(image.encode_snapshot()) == image
    assert image.apply(5, PartitionReplicas(1, (2, 3, 4)))
    assert image.target_of(1) is None and dict(image.reassignments) == {}
    assert image.topics["t"].partitions[0] == PartitionAssignment(1, (2, 3, 4))
    assert image.groups_of(4) == {1: ("t", 0)}
    copy = MetadataImage.decode_snapshot(image.encode_snapshot())
    assert copy == image and copy.topics["t"].partitions[0].replicas == (2, 3, 4)
    assert not copy.apply(6, PartitionReplicas(1, (2, 3, 4)))  # done once
    # A deleted topic's moves go with it.
    image.apply(7, ReassignPartition(2, (1,)))
    image.apply(8, DeleteTopic("t"))
    assert dict(image.reassignments) == {}


def test_a_snapshot_from_before_moves_existed_has_none() -> None:
    image = replay([CreateTopic("t", (PartitionAssignment(1, (1,)),), {}, 1)])
    old = json.loads(image.encode_snapshot())
    del old["reassignments"]
    assert MetadataImage.decode_snapshot(json.dumps(old).encode()) == image


@pytest.mark.parametrize("target", [(), (1, 1), (-1,)])
def test_an_invalid_move_is_the_callers_fault(target: tuple[int, ...]) -> None:
    with pytest.raises(CallerError):
        ReassignPartition(1, target)
    with pytest.raises(CallerError):
        PartitionReplicas(1, target)
    with pytest.raises(MetadataRecordError):
        decode_record(json.dumps(
            {"v": 1, "type": "ReassignPartition", "group": 1, "target": list(target)}
        ).encode())
