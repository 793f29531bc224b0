"""The Kafka door's consumer group handlers, in process against a ``BrokerService`` on
the in-memory filesystem: two members where the leader assigns (join, sync, heartbeat,
commit, fetch offsets, leave, take over), every refusal's code, gRPC and Kafka members
never mixed, and each response encoded by us and decoded by aiokafka's own classes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from kafka.protocol.consumer.metadata import ConsumerProtocolSubscription
from test_kafka_aiokafka import CASES, _response_class, _stream, from_positional

from sentinel.broker.group_driver import GroupError
from sentinel.broker.group_events import ErrorCode
from sentinel.broker.service import BrokerService
from sentinel.clock import SystemClock
from sentinel.config import BrokerConfig
from sentinel.errors import DecodeError
from sentinel.fs import MemFS
from sentinel.protocol.kafka import serde
from sentinel.protocol.kafka.consumer_protocol import (
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from sentinel.protocol.kafka.messages import RESPONSES
from sentinel.protocol.kafka.messages.describe_groups import DescribeGroupsRequest
from sentinel.protocol.kafka.messages.find_coordinator import FindCoordinatorRequest
from sentinel.protocol.kafka.messages.heartbeat import HeartbeatRequest
from sentinel.protocol.kafka.messages.join_group import (
    JoinGroupRequest,
    JoinGroupRequestProtocol,
    JoinGroupResponse,
)
from sentinel.protocol.kafka.messages.leave_group import LeaveGroupRequest
from sentinel.protocol.kafka.messages.list_groups import ListGroupsRequest
from sentinel.protocol.kafka.messages.offset_commit import (
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
)
from sentinel.protocol.kafka.messages.offset_fetch import (
    OffsetFetchRequest,
    OffsetFetchRequestGroup,
    OffsetFetchRequestTopic,
    OffsetFetchRequestTopics,
)
from sentinel.protocol.kafka.messages.sync_group import (
    SyncGroupRequest,
    SyncGroupRequestAssignment,
)
from sentinel.server.kafka.handlers import HANDLERS, KafkaRequestContext
from sentinel.server.kafka.handlers import groups as h

NODE = 3
SESSION_MS = 10_000
AIOKAFKA = {(key, version): cls for key, version, cls in CASES}


@pytest.fixture
async def service() -> AsyncIterator[BrokerService]:
    config = BrokerConfig(
        data_dir="/data",
        node_id=NODE,
        port=9555,
        kafka_port=9556,
        advertised_host="broker.test",
        group_min_session_timeout_ms=500,
        sync_mode="always",
    )
    svc = BrokerService(config, MemFS(), SystemClock())
    await svc.start()
    await svc.create_topic("t", 4)
    try:
        yield svc
    finally:
        await svc.stop()


def ctx(api_key: int, version: int, client: str = "app") -> KafkaRequestContext:
    return KafkaRequestContext(api_key, version, 7, client, "127.0.0.1:40000", 1)


def check_with_aiokafka(api_key: int, version: int, response: Any) -> None:
    """Our encoding of ``response`` decodes with aiokafka's class to the same fields."""
    message = RESPONSES[api_key]
    encoded = serde.encode(message, version, response)
    cls = AIOKAFKA.get((api_key, version))
    if cls is None:
        return  # aiokafka lacks this version
    schema = _response_class(cls).SCHEMA
    decoded = schema.decode(_stream(encoded))
    flexible = message.flexible(version)
    expected = serde.decode(message, version, encoded)
    assert from_positional(decoded, message.body, schema, version, flexible) == expected


async def call(handler: Callable[..., Awaitable[Any]], version: int, request: Any,
               service: BrokerService, client: str = "app") -> Any:
    key = next(k for k, fn in HANDLERS.items() if fn is handler)
    response = await handler(service, ctx(key, version, client), request)
    check_with_aiokafka(key, version, response)
    return response


async def poll(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


def subscription_v0(*topics: str) -> bytes:
    """What aiokafka sends."""
    return ConsumerProtocolMemberMetadata(0, list(topics), b"").encode()


def subscription_v3(*topics: str) -> bytes:
    """What kafka-python 3 sends: owned partitions, generation and rack after the topics."""
    return ConsumerProtocolSubscription(
        topics=list(topics), user_data=None, owned_partitions=[], generation_id=-1,
        rack_id="rack-a", version=3,
    ).encode(version=3)


def assignment_bytes(partitions: dict[str, list[int]], user_data: bytes = b"") -> bytes:
    return ConsumerProtocolMemberAssignment(0, list(partitions.items()), user_data).encode()


def join_request(member_id: str = "", metadata: bytes = b"", **kw: Any) -> JoinGroupRequest:
    return JoinGroupRequest(
        group_id=kw.pop("group_id", "g"),
        session_timeout_ms=kw.pop("session_timeout_ms", SESSION_MS),
        rebalance_timeout_ms=kw.pop("rebalance_timeout_ms", SESSION_MS),
        member_id=member_id,
        protocol_type=kw.pop("protocol_type", "consumer"),
        protocols=kw.pop("protocols", (
            JoinGroupRequestProtocol(name="range", metadata=metadata or subscription_v0("t")),
            JoinGroupRequestProtocol(name="roundrobin", metadata=metadata or subscription_v0("t")),
        )),
        **kw,
    )


async def join(service: BrokerService, metadata: bytes, version: int = 5,
               client: str = "app", member_id: str = "") -> JoinGroupResponse:
    """A new member's join as a v4+ client does it: MEMBER_ID_REQUIRED, then again."""
    if not member_id and version >= 4:
        first = await call(h.join_group, version, join_request("", metadata), service, client)
        assert first.error_code == ErrorCode.MEMBER_ID_REQUIRED
        assert first.member_id.startswith(f"{client}-")
        member_id = first.member_id
    response: JoinGroupResponse = await call(
        h.join_group, version, join_request(member_id, metadata), service, client
    )
    return response


async def heartbeat(service: BrokerService, member: str, generation: int) -> int:
    request = HeartbeatRequest(group_id="g", generation_id=generation, member_id=member)
    return int((await call(h.heartbeat, 1, request, service)).error_code)


async def commit(service: BrokerService, member: str, generation: int,
                 offsets: dict[int, int], version: int = 8, topic: str = "t") -> list[int]:
    request = OffsetCommitRequest(
        group_id="g", generation_id_or_member_epoch=generation, member_id=member,
        topics=(OffsetCommitRequestTopic(name=topic, partitions=tuple(
            OffsetCommitRequestPartition(partition_index=p, committed_offset=o,
                                         committed_metadata=f"m{o}")
            for p, o in offsets.items())),),
    )
    response = await call(h.offset_commit, version, request, service)
    return [p.error_code for t in response.topics for p in t.partitions]


def test_every_group_api_has_its_handler() -> None:
    assert {k: HANDLERS[k] for k in (8, 9, 10, 11, 12, 13, 14, 15, 16)} == {
        8: h.offset_commit, 9: h.offset_fetch, 10: h.find_coordinator, 11: h.join_group,
        12: h.heartbeat, 13: h.leave_group, 14: h.sync_group, 15: h.describe_groups,
        16: h.list_groups,
    }


@pytest.mark.parametrize("version", [0, 1, 2])
async def test_find_coordinator_names_this_broker(service: BrokerService, version: int) -> None:
    found = await call(h.find_coordinator, version, FindCoordinatorRequest(key="g"), service)
    assert (found.error_code, found.node_id, found.host, found.port) == (
        0, NODE, "broker.test", 9556)
    if version >= 1:
        refused = await call(h.find_coordinator, version,
                             FindCoordinatorRequest(key="tx", key_type=1), service)
        # 53, TRANSACTIONAL_ID_AUTHORIZATION_FAILED: fatal at once to Kafka's clients
        assert refused.error_code == 53
        assert refused.error_message is not None and "transactions" in refused.error_message
        unknown = await call(h.find_coordinator, version,
                             FindCoordinatorRequest(key="x", key_type=7), service)
        assert unknown.error_code == ErrorCode.INVALID_REQUEST


async def test_two_members_leader_assigns_commit_fetch_leave_take_over(
    service: BrokerService,
) -> None:
    # A alone: generation 1, leader, assigns itself everything.
    a = await join(service, subscription_v3("t"), client="a")
    assert (a.error_code, a.generation_id, a.protocol_name, a.leader) == (
        0, 1, "range", a.member_id)
    assert [(m.member_id, m.metadata) for m in a.members] == [(a.member_id, subscription_v3("t"))]
    everything = assignment_bytes({"t": [0, 1, 2, 3]}, b"user")
    synced = await call(h.sync_group, 3, SyncGroupRequest(
        group_id="g", generation_id=1, member_id=a.member_id,
        assignments=(SyncGroupRequestAssignment(member_id=a.member_id, assignment=everything),),
    ), service)
    assert (synced.error_code, synced.assignment) == (0, everything)  # verbatim, user data too
    assert await commit(service, a.member_id, 1, {0: 5, 1: 6}) == [0, 0]

    # B joins: A learns of the rebalance from its heartbeat and rejoins.
    b_join = asyncio.ensure_future(join(service, subscription_v0("t"), client="b"))

    async def rebalancing() -> bool:
        return await heartbeat(service, a.member_id, 1) == ErrorCode.REBALANCE_IN_PROGRESS

    await poll(rebalancing, "A is told to rejoin")
    a2 = await join(service, subscription_v3("t"), client="a", member_id=a.member_id)
    b = await b_join
    assert a2.generation_id == b.generation_id == 2
    assert a2.leader == b.leader == a.member_id
    assert {m.member_id: m.metadata for m in a2.members} == {
        a.member_id: subscription_v3("t"), b.member_id: subscription_v0("t")}
    assert b.members == ()  # only the leader gets the subscriptions

    # B's sync waits for the leader's, which hands each its share.
    b_sync = asyncio.ensure_future(call(h.sync_group, 1, SyncGroupRequest(
        group_id="g", generation_id=2, member_id=b.member_id), service))
    shares = {a.member_id: assignment_bytes({"t": [0, 1]}),
              b.member_id: assignment_bytes({"t": [2, 3]})}
    a_sync = await call(h.sync_group, 2, SyncGroupRequest(
        group_id="g", generation_id=2, member_id=a.member_id,
        assignments=tuple(SyncGroupRequestAssignment(member_id=m, assignment=raw)
                          for m, raw in shares.items())), service)
    assert a_sync.assignment == shares[a.member_id]
    assert (await b_sync).assignment == shares[b.member_id]
    assert await heartbeat(service, a.member_id, 2) == await heartbeat(service, b.member_id, 2) == 0
    assert await heartbeat(service, b.member_id, 1) == ErrorCode.ILLEGAL_GENERATION
    assert await heartbeat(service, "nobody", 2) == ErrorCode.UNKNOWN_MEMBER_ID

    # Commits: per partition; a stale generation and an unknown partition are refused.
    assert await commit(service, b.member_id, 2, {2: 7, 3: 8}, version=2) == [0, 0]
    assert await commit(service, b.member_id, 1, {2: 9}) == [ErrorCode.ILLEGAL_GENERATION]
    assert await commit(service, b.member_id, 2, {9: 1}) == [3]  # UNKNOWN_TOPIC_OR_PARTITION
    assert await commit(service, b.member_id, 2, {0: 1}, topic="nope") == [3]

    # The group as Kafka's tools see it.
    described = (await call(h.describe_groups, 3, DescribeGroupsRequest(groups=("g",)),
                            service)).groups[0]
    assert (described.error_code, described.group_state, described.protocol_type,
            described.protocol_data) == (0, "Stable", "consumer", "range")
    assert {(m.member_id, m.client_id, m.client_host, m.member_assignment)
            for m in described.members} == {
        (a.member_id, "a", "/127.0.0.1", shares[a.member_id]),
        (b.member_id, "b", "/127.0.0.1", shares[b.member_id])}
    listed = await call(h.list_groups, 1, ListGroupsRequest(), service)
    assert [(g.group_id, g.protocol_type) for g in listed.groups] == [("g", "consumer")]
    assert {(lag.partition, lag.committed) for lag in service.group_lag("g")} == {
        (0, 5), (1, 6), (2, 7), (3, 8)}

    # B leaves; A rejoins alone and takes everything over, from the committed offsets.
    left = await call(h.leave_group, 1, LeaveGroupRequest(group_id="g", member_id=b.member_id),
                      service)
    assert left.error_code == 0
    again = await call(h.leave_group, 0, LeaveGroupRequest(group_id="g", member_id=b.member_id),
                       service)
    assert again.error_code == ErrorCode.UNKNOWN_MEMBER_ID
    assert await heartbeat(service, a.member_id, 2) == ErrorCode.REBALANCE_IN_PROGRESS
    a3 = await join(service, subscription_v3("t"), client="a", member_id=a.member_id)
    assert (a3.generation_id, [m.member_id for m in a3.members]) == (3, [a.member_id])
    fetched = await call(h.offset_fetch, 5, OffsetFetchRequest(
        group_id="g", topics=(OffsetFetchRequestTopic(name="t", partition_indexes=(0, 1, 2, 3)),)),
        service)
    resumed = [(p.partition_index, p.committed_offset, p.metadata)
               for p in fetched.topics[0].partitions]
    assert resumed == [(0, 5, "m5"), (1, 6, "m6"), (2, 7, "m7"), (3, 8, "m8")]


async def test_offset_fetch_every_version_shape(service: BrokerService) -> None:
    assert await commit(service, "", -1, {1: 10, 3: 30}) == [0, 0]
    named = (OffsetFetchRequestTopic(name="t", partition_indexes=(0, 1)),)
    v1 = await call(h.offset_fetch, 1, OffsetFetchRequest(group_id="g", topics=named), service)
    assert [(p.partition_index, p.committed_offset, p.error_code)
            for p in v1.topics[0].partitions] == [(0, -1, 0), (1, 10, 0)]
    for version in (3, 7):
        every = await call(h.offset_fetch, version, OffsetFetchRequest(
            group_id="g", topics=None, require_stable=True), service)
        assert every.error_code == 0
        assert [(t.name, [(p.partition_index, p.committed_offset) for p in t.partitions])
                for t in every.topics] == [("t", [(1, 10), (3, 30)])]
    v8 = await call(h.offset_fetch, 8, OffsetFetchRequest(groups=(
        OffsetFetchRequestGroup(group_id="g", topics=None),
        OffsetFetchRequestGroup(group_id="other", topics=(
            OffsetFetchRequestTopics(name="t", partition_indexes=(3,)),)),
    )), service)
    assert [(g.group_id, g.error_code,
             [(t.name, [(p.partition_index, p.committed_offset) for p in t.partitions])
              for t in g.topics]) for g in v8.groups] == [
        ("g", 0, [("t", [(1, 10), (3, 30)])]), ("other", 0, [("t", [(3, -1)])])]


async def test_commit_from_outside_a_group(service: BrokerService) -> None:
    """A consumer with manual assignment commits with generation -1 and no member id:
    accepted while the group has no members, refused once it has some."""
    assert await commit(service, "", -1, {0: 4}, version=3) == [0]
    assert service.fetch_offsets("g")[("t", 0)].offset == 4
    await join(service, subscription_v0("t"))
    assert await commit(service, "", -1, {0: 5}) == [ErrorCode.UNKNOWN_MEMBER_ID]
    assert service.fetch_offsets("g")[("t", 0)].offset == 4


async def test_grpc_and_kafka_members_never_share_a_group(
    service: BrokerService, caplog: pytest.LogCaptureFixture
) -> None:
    await service.join_group("grpc-group", "", topics=["t"], session_timeout_ms=SESSION_MS)
    with caplog.at_level(logging.INFO, logger="sentinel.server.kafka.handlers.groups"):
        refused = await call(h.join_group, 3, join_request(group_id="grpc-group"), service)
    assert refused.error_code == ErrorCode.INCONSISTENT_GROUP_PROTOCOL == 23
    assert "gRPC door" in caplog.text and "grpc-group" in caplog.text

    kafka = await join(service, subscription_v0("t"))
    assert kafka.error_code == 0
    with pytest.raises(GroupError) as info:
        await service.join_group("g", "", topics=["t"], session_timeout_ms=SESSION_MS)
    assert info.value.code is ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    assert "Kafka door" in str(info.value) and "another group id" in str(info.value)

    # Kafka's tools describe the gRPC door's group too: its bytes are encoded for them.
    described = (await call(h.describe_groups, 0, DescribeGroupsRequest(groups=("grpc-group",)),
                            service)).groups[0]
    (member,) = described.members
    assert decode_subscription(member.member_metadata) == ("t",)
    theirs = ConsumerProtocolMemberAssignment.decode(member.member_assignment)
    assert sorted(tp.partition for tp in theirs.partitions()) == [0, 1, 2, 3]


async def test_join_refusals(service: BrokerService) -> None:
    # Static members (group_instance_id): tests/kafka/test_kafka_static_membership.py.
    static = await call(h.join_group, 5, join_request("", group_instance_id=""), service)
    assert static.error_code == ErrorCode.INVALID_REQUEST
    short = await call(h.join_group, 5, join_request(session_timeout_ms=100), service)
    assert short.error_code == ErrorCode.INVALID_SESSION_TIMEOUT
    unknown = await call(h.join_group, 1, join_request("ghost"), service)
    assert (unknown.error_code, unknown.member_id) == (ErrorCode.UNKNOWN_MEMBER_ID, "ghost")
    other = await call(h.join_group, 1, join_request(group_id=""), service)
    assert other.error_code == ErrorCode.INVALID_GROUP_ID
    # v0 has no rebalance timeout (the session timeout serves) and no MEMBER_ID_REQUIRED.
    v0 = await join(service, subscription_v0("t"), version=0)
    assert (v0.error_code, v0.generation_id) == (0, 1)
    # A member whose protocols share nothing with the group's.
    odd = await call(h.join_group, 1, join_request(
        "", protocols=(JoinGroupRequestProtocol(name="sticky", metadata=b""),)), service)
    assert odd.error_code == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    sync = await call(h.sync_group, 0, SyncGroupRequest(group_id="g", generation_id=9,
                                                         member_id=v0.member_id), service)
    assert sync.error_code == ErrorCode.ILLEGAL_GENERATION


async def test_describe_and_list_without_groups(service: BrokerService) -> None:
    described = await call(h.describe_groups, 1, DescribeGroupsRequest(groups=("none",)), service)
    (group,) = described.groups
    assert (group.error_code, group.group_id, group.group_state, group.members) == (
        0, "none", "Dead", ())
    assert (await call(h.list_groups, 0, ListGroupsRequest(), service)).groups == ()


async def test_other_protocol_types_pass_through(service: BrokerService) -> None:
    """Kafka Connect and others put their own bytes in the metadata: never decoded."""
    first = await call(h.join_group, 3, join_request(protocol_type="connect", protocols=(
        JoinGroupRequestProtocol(name="sessioned", metadata=b"\xff\x00opaque"),)), service)
    assert first.error_code == 0
    assert [m.metadata for m in first.members] == [b"\xff\x00opaque"]


def test_consumer_protocol_codec() -> None:
    assert decode_subscription(subscription_v3("a", "b")) == ("a", "b")
    assert decode_subscription(encode_subscription(["x"])) == ("x",)
    assert ConsumerProtocolMemberMetadata.decode(encode_subscription(["x"])).subscription == ["x"]
    raw = assignment_bytes({"a": [2, 0], "b": [1]}, b"ud")
    assert decode_assignment(raw) == {"a": (2, 0), "b": (1,)}
    assert decode_assignment(b"") == {}
    ours = ConsumerProtocolMemberAssignment.decode(encode_assignment({"a": [0, 1]}))
    assert [(t, list(p)) for t, p in ours.assignment] == [("a", [0, 1])]
    for bad in (b"\x00", b"\x00\x00\x7f\xff\xff\xff", b"\x00\x00\x00\x00\x00\x01\x00\x05ab"):
        with pytest.raises(DecodeError):
            decode_subscription(bad)
        with pytest.raises(DecodeError):
            decode_assignment(bad)
