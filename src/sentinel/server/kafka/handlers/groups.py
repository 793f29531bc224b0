"""The Kafka door's consumer group APIs: FindCoordinator, JoinGroup, SyncGroup,
Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups and DescribeGroups.

Groups through this door use client-side assignment, as Kafka does: the leader member
gets every member's subscription from JoinGroup, computes the assignment and sends it
with SyncGroup, which hands each member its share. The coordinator (``broker/groups``)
decides everything; these handlers only translate values and errors. The opaque bytes
of the consumer protocol are passed through verbatim; they are decoded only to tell the
broker which topics a member reads and which partitions it owns (``consumer_protocol``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from sentinel.broker.group_driver import GroupError
from sentinel.broker.group_events import (
    ErrorCode,
    JoinProtocol,
    MemberAssignment,
    MemberDescription,
    OffsetAndMetadata,
    TopicPartition,
)
from sentinel.broker.service import BrokerService
from sentinel.errors import DecodeError, SentinelError, kafka_code_of
from sentinel.protocol.kafka.consumer_protocol import (
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from sentinel.protocol.kafka.messages.describe_groups import (
    DescribedGroup,
    DescribedGroupMember,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
)
from sentinel.protocol.kafka.messages.find_coordinator import (
    FindCoordinatorRequest,
    FindCoordinatorResponse,
)
from sentinel.protocol.kafka.messages.heartbeat import HeartbeatRequest, HeartbeatResponse
from sentinel.protocol.kafka.messages.join_group import (
    JoinGroupRequest,
    JoinGroupResponse,
    JoinGroupResponseMember,
)
from sentinel.protocol.kafka.messages.leave_group import (
    LeaveGroupRequest,
    LeaveGroupResponse,
    MemberResponse,
)
from sentinel.protocol.kafka.messages.list_groups import (
    ListedGroup,
    ListGroupsRequest,
    ListGroupsResponse,
)
from sentinel.protocol.kafka.messages.offset_commit import (
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetCommitResponsePartition,
    OffsetCommitResponseTopic,
)
from sentinel.protocol.kafka.messages.offset_fetch import (
    OffsetFetchRequest,
    OffsetFetchResponse,
    OffsetFetchResponseGroup,
    OffsetFetchResponsePartition,
    OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
)
from sentinel.protocol.kafka.messages.sync_group import SyncGroupRequest, SyncGroupResponse
from sentinel.server.kafka.handlers import KafkaRequestContext, handles
from sentinel.server.kafka.handlers.partition_codes import by_topic
from sentinel.server.kafka.handlers.producer_id import TRANSACTIONAL_ID_AUTHORIZATION_FAILED

log = logging.getLogger(__name__)

CONSUMER = "consumer"
"""The protocol type of Kafka consumers, whose metadata is the consumer protocol."""
GROUP_KEY = 0
TRANSACTION_KEY = 1
"""FindCoordinator's key type of a group (1 is a transactional id)."""

# Refusals a client cannot explain to its user from the code alone: a line says why.
_EXPLAINED = {
    ErrorCode.INCONSISTENT_GROUP_PROTOCOL,
    ErrorCode.UNSUPPORTED_VERSION,
    ErrorCode.INVALID_SESSION_TIMEOUT,
    ErrorCode.GROUP_MAX_SIZE_REACHED,
}


def _refused(ctx: KafkaRequestContext, exc: SentinelError) -> int:
    """``exc``'s Kafka code; a line in the log when the code alone does not say why."""
    if isinstance(exc, GroupError) and exc.code in _EXPLAINED:
        log.info("Kafka client %s (%s) refused: %s", ctx.client_id or "-", ctx.peer, exc)
    return kafka_code_of(exc)


# --- coordination ---------------------------------------------------------------------


@handles(10)
async def find_coordinator(
    service: BrokerService, ctx: KafkaRequestContext, request: FindCoordinatorRequest
) -> FindCoordinatorResponse:
    if request.key_type != GROUP_KEY:
        # A transaction coordinator (1) is refused as InitProducerId refuses a
        # transactional id: TRANSACTIONAL_ID_AUTHORIZATION_FAILED, which Kafka's clients
        # take as fatal at once. INVALID_REQUEST made librdkafka's init_transactions
        # retry until its whole timeout ran out.
        transaction = request.key_type == TRANSACTION_KEY
        return FindCoordinatorResponse(
            error_code=(
                TRANSACTIONAL_ID_AUTHORIZATION_FAILED
                if transaction
                else int(ErrorCode.INVALID_REQUEST)
            ),
            error_message=f"coordinator key type {request.key_type} is not supported: "
            "this broker coordinates consumer groups (0), not transactions",
            node_id=-1,
            host="",
            port=-1,
        )
    broker = service.group_coordinator(request.key)
    return FindCoordinatorResponse(
        error_message=None,
        node_id=broker.node_id,
        host=broker.kafka_host,
        port=broker.kafka_port,
    )


# --- membership -----------------------------------------------------------------------


def _join_protocol(protocol_type: str, name: str, metadata: bytes) -> JoinProtocol:
    """One protocol of a join, with the topics a consumer subscribes to: none for other
    protocol types; none and ``unread`` for consumer bytes that are no subscription
    (the broker passes them through all the same, as Kafka does)."""
    if protocol_type != CONSUMER:
        return JoinProtocol(name, (), metadata)
    try:
        return JoinProtocol(name, decode_subscription(metadata), metadata)
    except DecodeError:
        return JoinProtocol(name, (), metadata, unread=True)


def _assigned(raw: bytes) -> MemberAssignment:
    """A member's assignment from the leader's bytes, kept verbatim in ``raw``."""
    try:
        partitions: Mapping[str, tuple[int, ...]] = decode_assignment(raw)
    except DecodeError:
        partitions = {}
    return MemberAssignment(partitions, raw)


def _client_host(peer: str) -> str:
    """Kafka's form of the member's host (``/127.0.0.1``) from ``host:port``."""
    return "/" + peer.rsplit(":", 1)[0].strip("[]")


@handles(11)
async def join_group(
    service: BrokerService, ctx: KafkaRequestContext, request: JoinGroupRequest
) -> JoinGroupResponse:
    protocols = tuple(
        _join_protocol(request.protocol_type, p.name, p.metadata) for p in request.protocols
    )
    try:
        joined = await service.kafka_join_group(
            request.group_id,
            request.member_id,
            client_id=ctx.client_id or "",
            client_host=_client_host(ctx.peer),
            session_timeout_ms=request.session_timeout_ms,
            rebalance_timeout_ms=request.rebalance_timeout_ms,
            protocol_type=request.protocol_type,
            protocols=protocols,
            group_instance_id=request.group_instance_id,
            require_known_member_id=ctx.api_version >= 4,  # KIP-394
        )
    except SentinelError as exc:
        given = exc.member_id if isinstance(exc, GroupError) else ""
        return JoinGroupResponse(
            error_code=_refused(ctx, exc), member_id=given or request.member_id
        )
    return JoinGroupResponse(
        generation_id=joined.generation,
        protocol_name=joined.protocol,
        leader=joined.leader_id,
        member_id=joined.member_id,
        members=tuple(
            JoinGroupResponseMember(
                member_id=m.member_id, group_instance_id=m.group_instance_id, metadata=m.metadata
            )
            for m in joined.members
        ),
    )


@handles(14)
async def sync_group(
    service: BrokerService, ctx: KafkaRequestContext, request: SyncGroupRequest
) -> SyncGroupResponse:
    # Only the leader's assignments count; a follower sends none.
    assignments = (
        {a.member_id: _assigned(a.assignment) for a in request.assignments}
        if request.assignments
        else None
    )
    try:
        synced = await service.sync_group(
            request.group_id,
            request.member_id,
            request.generation_id,
            assignments,
            group_instance_id=request.group_instance_id,
        )
    except SentinelError as exc:
        return SyncGroupResponse(error_code=_refused(ctx, exc))
    return SyncGroupResponse(assignment=synced.assignment.raw)


@handles(12)
async def heartbeat(
    service: BrokerService, ctx: KafkaRequestContext, request: HeartbeatRequest
) -> HeartbeatResponse:
    try:
        service.heartbeat(
            request.group_id,
            request.member_id,
            request.generation_id,
            request.group_instance_id,
        )
    except SentinelError as exc:
        return HeartbeatResponse(error_code=_refused(ctx, exc))
    return HeartbeatResponse()


@handles(13)
async def leave_group(
    service: BrokerService, ctx: KafkaRequestContext, request: LeaveGroupRequest
) -> LeaveGroupResponse:
    """v0-2 name one member; v3+ (KIP-345) a batch, each answered on its own, and the
    request's own code is only for the whole (NOT_COORDINATOR, ...)."""
    if ctx.api_version < 3:
        try:
            service.leave_group(request.group_id, request.member_id)
        except SentinelError as exc:
            return LeaveGroupResponse(error_code=_refused(ctx, exc))
        return LeaveGroupResponse()
    members = [(m.member_id, m.group_instance_id) for m in request.members]
    try:
        codes = service.leave_group_members(request.group_id, members)
    except SentinelError as exc:
        return LeaveGroupResponse(error_code=_refused(ctx, exc))
    return LeaveGroupResponse(
        members=tuple(
            MemberResponse(member_id=m, group_instance_id=i, error_code=int(code))
            for (m, i), code in zip(members, codes, strict=True)
        )
    )


# --- offsets --------------------------------------------------------------------------


@handles(8)
async def offset_commit(
    service: BrokerService, ctx: KafkaRequestContext, request: OffsetCommitRequest
) -> OffsetCommitResponse:
    offsets = {
        (t.name, p.partition_index): OffsetAndMetadata(
            p.committed_offset, p.committed_metadata or "", p.committed_leader_epoch
        )
        for t in request.topics
        for p in t.partitions
    }
    codes: dict[TopicPartition, int]
    try:
        outcomes = await service.commit_offsets(
            request.group_id,
            request.member_id,
            request.generation_id_or_member_epoch,
            offsets,
            request.group_instance_id,
        )
        codes = {(o.topic, o.partition): o.error_code for o in outcomes}
    except SentinelError as exc:
        code = _refused(ctx, exc)
        codes = dict.fromkeys(offsets, code)
    return OffsetCommitResponse(
        topics=by_topic(
            request.topics, codes, OffsetCommitResponseTopic, OffsetCommitResponsePartition
        )
    )


Wanted = Iterable[tuple[str, Iterable[int]]] | None
"""The partitions an OffsetFetch names, by topic; None: every committed one."""

_NO_OFFSET = OffsetAndMetadata(-1, "", -1)


def _committed(
    service: BrokerService, group_id: str, wanted: Wanted
) -> tuple[list[tuple[str, list[tuple[int, OffsetAndMetadata]]]], int]:
    """The group's committed offsets by topic (offset -1 where there is none, as Kafka
    answers), and the code for the whole group."""
    asked = None if wanted is None else [(t, list(ps)) for t, ps in wanted]
    try:
        found = service.fetch_offsets(
            group_id, None if asked is None else [(t, p) for t, ps in asked for p in ps]
        )
    except SentinelError as exc:
        return [], kafka_code_of(exc)
    if asked is None:
        by_topic: dict[str, list[tuple[int, OffsetAndMetadata]]] = {}
        for (topic, partition), om in sorted(found.items()):
            by_topic.setdefault(topic, []).append((partition, om))
        return list(by_topic.items()), 0
    return [(t, [(p, found.get((t, p), _NO_OFFSET)) for p in ps]) for t, ps in asked], 0


@handles(9)
async def offset_fetch(
    service: BrokerService, ctx: KafkaRequestContext, request: OffsetFetchRequest
) -> OffsetFetchResponse:
    # No transactions here: every committed offset is stable (require_stable holds).
    if ctx.api_version >= 8:
        groups = []
        for g in request.groups:
            wanted = None if g.topics is None else [(t.name, t.partition_indexes) for t in g.topics]
            topics, code = _committed(service, g.group_id, wanted)
            groups.append(
                OffsetFetchResponseGroup(
                    group_id=g.group_id,
                    error_code=code,
                    topics=tuple(
                        OffsetFetchResponseTopics(
                            name=topic,
                            partitions=tuple(
                                OffsetFetchResponsePartitions(
                                    partition_index=p,
                                    committed_offset=om.offset,
                                    committed_leader_epoch=om.leader_epoch,
                                    metadata=om.metadata,
                                )
                                for p, om in parts
                            ),
                        )
                        for topic, parts in topics
                    ),
                )
            )
        return OffsetFetchResponse(groups=tuple(groups))
    wanted = (
        None
        if request.topics is None
        else [(t.name, t.partition_indexes) for t in request.topics]
    )
    topics, code = _committed(service, request.group_id, wanted)
    return OffsetFetchResponse(
        error_code=code,
        topics=tuple(
            OffsetFetchResponseTopic(
                name=topic,
                partitions=tuple(
                    OffsetFetchResponsePartition(
                        partition_index=p,
                        committed_offset=om.offset,
                        committed_leader_epoch=om.leader_epoch,
                        metadata=om.metadata,
                    )
                    for p, om in parts
                ),
            )
            for topic, parts in topics
        ),
    )


# --- administration -------------------------------------------------------------------


@handles(16)
async def list_groups(
    service: BrokerService, ctx: KafkaRequestContext, request: ListGroupsRequest
) -> ListGroupsResponse:
    return ListGroupsResponse(
        groups=tuple(
            ListedGroup(group_id=g.group_id, protocol_type=g.protocol_type)
            for g in service.list_groups()
        )
    )


def _described_member(protocol_type: str, m: MemberDescription) -> DescribedGroupMember:
    """A member with its consumer-protocol bytes: a Kafka member's own; for a member of
    the gRPC door (which sends none) encoded from its subscription and assignment, so
    that Kafka's tools show those groups too."""
    metadata, assignment = m.metadata, m.assignment.raw if m.assignment else b""
    if protocol_type == CONSUMER and not metadata and m.topics:
        metadata = encode_subscription(m.topics)
    if protocol_type == CONSUMER and not assignment and m.assignment and m.assignment.partitions:
        assignment = encode_assignment(m.assignment.partitions)
    return DescribedGroupMember(
        member_id=m.member_id,
        group_instance_id=m.group_instance_id,  # on the wire from v4
        client_id=m.client_id,
        client_host=m.client_host,
        member_metadata=metadata,
        member_assignment=assignment,
    )


@handles(15)
async def describe_groups(
    service: BrokerService, ctx: KafkaRequestContext, request: DescribeGroupsRequest
) -> DescribeGroupsResponse:
    described = []
    for group_id in request.groups:
        try:
            group, _ = service.describe_group(group_id)
        except SentinelError as exc:
            described.append(DescribedGroup(error_code=kafka_code_of(exc), group_id=group_id))
            continue
        # An unknown group is Dead with no error in versions 0-5, as Kafka answers.
        code = 0 if group.error is ErrorCode.GROUP_ID_NOT_FOUND else int(group.error)
        described.append(
            DescribedGroup(
                error_code=code,
                group_id=group_id,
                group_state=group.state.value,
                protocol_type=group.protocol_type,
                protocol_data=group.protocol,
                members=tuple(_described_member(group.protocol_type, m) for m in group.members),
            )
        )
    return DescribeGroupsResponse(groups=tuple(described))
