"""Static membership (KIP-345, ``group.instance.id``) through the Kafka door, in process:
JoinGroup v5 with an instance id, the restart of a static member (a new member id, no
rebalance, the old id fenced on Heartbeat v3, SyncGroup v3 and OffsetCommit v7), and
LeaveGroup v3-4's batch answered per member. Each response is also decoded by
aiokafka's own classes (``call``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from test_kafka_groups import assignment_bytes, call, join_request, subscription_v0

from sentinel.broker.group_events import ErrorCode
from sentinel.broker.service import BrokerService
from sentinel.clock import SystemClock
from sentinel.config import BrokerConfig
from sentinel.fs import MemFS
from sentinel.protocol.kafka import serde
from sentinel.protocol.kafka.messages import RESPONSES
from sentinel.protocol.kafka.messages.describe_groups import DescribeGroupsRequest
from sentinel.protocol.kafka.messages.heartbeat import HeartbeatRequest
from sentinel.protocol.kafka.messages.join_group import JoinGroupResponse
from sentinel.protocol.kafka.messages.leave_group import LeaveGroupRequest, MemberIdentity
from sentinel.protocol.kafka.messages.offset_commit import (
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
)
from sentinel.protocol.kafka.messages.sync_group import (
    SyncGroupRequest,
    SyncGroupRequestAssignment,
)
from sentinel.server.kafka.handlers import groups as h

FENCED = ErrorCode.FENCED_INSTANCE_ID


@pytest.fixture
async def service() -> AsyncIterator[BrokerService]:
    config = BrokerConfig(
        data_dir="/data", node_id=1, port=9555, kafka_port=9556,
        group_min_session_timeout_ms=500, group_initial_rebalance_delay_ms=300,
        sync_mode="always",
    )
    svc = BrokerService(config, MemFS(), SystemClock())
    await svc.start()
    await svc.create_topic("t", 4)
    try:
        yield svc
    finally:
        await svc.stop()


async def static_join(service: BrokerService, instance: str, member_id: str = ""
                      ) -> JoinGroupResponse:
    response: JoinGroupResponse = await call(
        h.join_group, 5,
        join_request(member_id, subscription_v0("t"), group_instance_id=instance),
        service, instance,
    )
    return response


async def heartbeat(service: BrokerService, member: str, instance: str | None,
                    generation: int = 1) -> int:
    request = HeartbeatRequest(group_id="g", generation_id=generation, member_id=member,
                               group_instance_id=instance)
    return int((await call(h.heartbeat, 3, request, service)).error_code)


async def sync(service: BrokerService, member: str, instance: str,
               shares: dict[str, bytes] | None = None) -> tuple[int, bytes]:
    response = await call(h.sync_group, 3, SyncGroupRequest(
        group_id="g", generation_id=1, member_id=member, group_instance_id=instance,
        assignments=tuple(SyncGroupRequestAssignment(member_id=m, assignment=raw)
                          for m, raw in (shares or {}).items())), service)
    return response.error_code, response.assignment


async def commit(service: BrokerService, member: str, instance: str) -> int:
    response = await call(h.offset_commit, 7, OffsetCommitRequest(
        group_id="g", generation_id_or_member_epoch=1, member_id=member,
        group_instance_id=instance,
        topics=(OffsetCommitRequestTopic(name="t", partitions=(
            OffsetCommitRequestPartition(partition_index=0, committed_offset=3),)),),
    ), service)
    return int(response.topics[0].partitions[0].error_code)


async def stable_pair(service: BrokerService) -> tuple[str, str, dict[str, bytes]]:
    """pod-a and pod-b join generation 1 together (the initial delay), pod-a leads."""
    a, b = await asyncio.gather(static_join(service, "pod-a"), static_join(service, "pod-b"))
    leader, other = (a, b) if a.leader == a.member_id else (b, a)
    assert leader.generation_id == other.generation_id == 1
    # No MEMBER_ID_REQUIRED for static members; the leader sees the instance ids.
    assert {(m.member_id, m.group_instance_id) for m in leader.members} == {
        (a.member_id, "pod-a"), (b.member_id, "pod-b")}
    shares = {a.member_id: assignment_bytes({"t": [0, 1]}),
              b.member_id: assignment_bytes({"t": [2, 3]})}
    instance = {a.member_id: "pod-a", b.member_id: "pod-b"}
    follower = asyncio.ensure_future(sync(service, other.member_id, instance[other.member_id]))
    assert await sync(service, leader.member_id, instance[leader.member_id], shares) == (
        0, shares[leader.member_id])
    assert await follower == (0, shares[other.member_id])
    return a.member_id, b.member_id, shares


async def test_a_restarted_static_member_takes_its_place_without_a_rebalance(
    service: BrokerService,
) -> None:
    a, b, shares = await stable_pair(service)
    again = await static_join(service, "pod-b")  # pod-b restarted: no member id
    b2 = again.member_id
    assert again.error_code == 0 and b2 not in (a, b)
    assert (again.generation_id, again.leader == a or again.leader == b2) == (1, True)
    assert await sync(service, b2, "pod-b") == (0, shares[b])
    assert await heartbeat(service, a, "pod-a") == 0  # nobody is told to rebalance
    assert await heartbeat(service, b2, "pod-b") == 0
    assert await commit(service, b2, "pod-b") == 0
    # The old member id, with the instance id, is fenced everywhere.
    assert await heartbeat(service, b, "pod-b") == FENCED == 82
    assert (await sync(service, b, "pod-b"))[0] == FENCED
    assert await commit(service, b, "pod-b") == FENCED
    assert (await static_join(service, "pod-b", member_id=b)).error_code == FENCED
    assert await heartbeat(service, b, None) == ErrorCode.UNKNOWN_MEMBER_ID
    described, _ = service.describe_group("g")
    assert described.state.value == "Stable"
    assert {(m.member_id, m.group_instance_id) for m in described.members} == {
        (a, "pod-a"), (b2, "pod-b")}


@pytest.mark.parametrize("version", [3, 4])
async def test_leave_group_v3_answers_each_member(service: BrokerService, version: int) -> None:
    _, b, _ = await stable_pair(service)
    b2 = (await static_join(service, "pod-b")).member_id
    left = await call(h.leave_group, version, LeaveGroupRequest(group_id="g", members=(
        MemberIdentity(member_id=b, group_instance_id="pod-b"),
        MemberIdentity(member_id="ghost"),
        MemberIdentity(member_id="", group_instance_id="pod-a"),  # by instance id (admin)
    )), service)
    assert left.error_code == 0
    assert [(m.member_id, m.group_instance_id, m.error_code) for m in left.members] == [
        (b, "pod-b", FENCED), ("ghost", None, ErrorCode.UNKNOWN_MEMBER_ID), ("", "pod-a", 0)]
    described, _ = service.describe_group("g")
    assert [m.member_id for m in described.members] == [b2]
    assert await heartbeat(service, b2, "pod-b") == ErrorCode.REBALANCE_IN_PROGRESS


async def test_leave_group_v1_still_names_one_member(service: BrokerService) -> None:
    a, _, _ = await stable_pair(service)
    left = await call(h.leave_group, 1, LeaveGroupRequest(group_id="g", member_id=a), service)
    assert (left.error_code, left.members) == (0, ())
    again = await call(h.leave_group, 2, LeaveGroupRequest(group_id="g", member_id=a), service)
    assert again.error_code == ErrorCode.UNKNOWN_MEMBER_ID


@pytest.mark.parametrize("version", [3, 4, 5])
async def test_describe_groups_names_each_static_members_instance_from_v4(
    service: BrokerService, version: int
) -> None:
    a, b, _shares = await stable_pair(service)
    response = await call(h.describe_groups, version, DescribeGroupsRequest(groups=("g",)),
                          service)
    message = RESPONSES[15]  # what a client reads: the field is on the wire from v4
    (group,) = serde.decode(message, version, serde.encode(message, version, response)).groups
    expected = {(a, "pod-a"), (b, "pod-b")} if version >= 4 else {(a, None), (b, None)}
    assert {(m.member_id, m.group_instance_id) for m in group.members} == expected
