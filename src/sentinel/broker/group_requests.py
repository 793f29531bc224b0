"""The broker's consumer-group requests: what a door's group call passes before the
``GroupDriver`` (``broker/group_driver``) acts on it.

``GroupRequests`` owns the checks every door shares: in a cluster, that this broker
coordinates the group (leads its partition of ``__consumer_offsets``); a session
timeout within the group.min/max.session.timeout.ms bounds; committed offsets that name
an existing partition; a static member's instance id that Kafka would take (KIP-345).
It also answers the read-only questions about groups (describe, list, lag,
FindCoordinator). ``BrokerService`` delegates its group methods here, one line each.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Protocol

from sentinel.broker.group_config import GroupConfig
from sentinel.broker.group_driver import GroupDriver, GroupError
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
from sentinel.broker.outcomes import (
    BrokerMetadata,
    CommitOutcome,
    GroupSummary,
    OffsetDeleteOutcome,
    PartitionLagInfo,
)
from sentinel.broker.standalone_metadata import broker_alone
from sentinel.broker.topics import TopicRegistry
from sentinel.broker.validation import check_commit_offsets
from sentinel.config import BrokerConfig
from sentinel.errors import SentinelError

DEFAULT_CLIENT_ID = "sentinel-client"
DEFAULT_ASSIGNOR = "roundrobin"
MAX_INSTANCE_ID_LENGTH = 249
"""Kafka's bound on a group.instance.id (that of a topic name, which it shares)."""


class Coordinators(Protocol):
    """Who coordinates which group in a cluster (``cluster/node``'s ``ClusterNode``)."""

    def check_coordinator(self, group_id: str) -> None: ...

    def coordinator(self, group_id: str) -> BrokerMetadata: ...


class GroupRequests:
    """The group calls of every door, checked, then handed to the ``GroupDriver``.

    ``broker_config`` is read at each use: the server replaces the service's config
    once it knows the ports it bound (``--port 0``), which FindCoordinator must name.
    ``coordinators`` None: a broker alone, which coordinates every group.
    ``auto_create`` creates the named topics a consumer subscribes to when it asks
    (``BrokerService.topics`` with ``auto_create``)."""

    def __init__(
        self,
        groups: GroupDriver,
        registry: TopicRegistry,
        broker_config: Callable[[], BrokerConfig],
        group_config: GroupConfig,
        *,
        coordinators: Coordinators | None,
        auto_create: Callable[[Sequence[str]], Awaitable[object]],
    ) -> None:
        self._groups = groups
        self._registry = registry
        self._broker_config = broker_config
        self._group_config = group_config
        self._coordinators = coordinators
        self._auto_create = auto_create

    def _check_coordinator(self, group_id: str) -> None:
        """In a cluster, NOT_COORDINATOR unless this broker coordinates ``group_id``
        (leads its partition of ``__consumer_offsets``), COORDINATOR_LOAD_IN_PROGRESS
        while it reads that partition back."""
        if self._coordinators is not None:
            self._coordinators.check_coordinator(group_id)

    def _session_timeout_s(self, session_timeout_ms: int) -> float:
        """The session timeout in seconds, or INVALID_SESSION_TIMEOUT outside the bounds."""
        cfg = self._group_config
        session_s = session_timeout_ms / 1000.0
        if not cfg.min_session_timeout_s <= session_s <= cfg.max_session_timeout_s:
            raise GroupError(
                ErrorCode.INVALID_SESSION_TIMEOUT,
                f"session timeout {session_timeout_ms} ms is outside "
                f"{self._broker_config().group_min_session_timeout_ms}.."
                f"{self._broker_config().group_max_session_timeout_ms} ms "
                "(--group-min-session-timeout-ms, --group-max-session-timeout-ms)",
            )
        return session_s

    def group_lag(self, group_id: str) -> list[PartitionLagInfo]:
        committed = self._groups.fetch_offsets(group_id, None)
        lags = []
        for (topic, partition), om in sorted(committed.items()):
            found = self._registry.find(topic)
            if found is None or partition >= len(found.partitions):
                continue
            leo = found.partitions[partition].high_watermark
            lags.append(PartitionLagInfo(topic, partition, om.offset, leo))
        return lags

    def describe_group(self, group_id: str) -> tuple[GroupDescription, list[PartitionLagInfo]]:
        self._check_coordinator(group_id)
        return self._groups.describe(group_id), self.group_lag(group_id)

    async def commit_offsets(
        self,
        group_id: str,
        member_id: str,
        generation: int,
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
        group_instance_id: str | None = None,
    ) -> tuple[CommitOutcome, ...]:
        """Commit ``offsets``; a result per partition, in the order given: committed
        (durable in the meta store) or refused with its own error (an unknown topic or
        partition, an invalid offset, or the group's refusal: unknown member, illegal
        generation, fenced instance id, ...). An offline partition may still commit."""
        self._check_coordinator(group_id)
        refused: dict[TopicPartition, SentinelError] = {}
        valid: dict[TopicPartition, OffsetAndMetadata] = {}
        for (topic, partition), om in offsets.items():
            try:
                check_commit_offsets(((topic, partition, om.offset),))
                self._registry.get(topic).check_partition(partition)
            except SentinelError as exc:
                refused[(topic, partition)] = exc
            else:
                valid[(topic, partition)] = om
        if valid or not offsets:
            codes = await self._groups.commit(
                group_id, member_id, generation, valid, group_instance_id
            )
            for (topic, partition), code in codes.items():
                if code is not ErrorCode.NONE:
                    refused[(topic, partition)] = GroupError(
                        code, f"commit of {topic}[{partition}] refused: {code.name}"
                    )
        return tuple(CommitOutcome(t, p, refused.get((t, p))) for t, p in offsets)

    def fetch_offsets(
        self, group_id: str, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """The group's committed offsets (of ``partitions``, or all)."""
        self._check_coordinator(group_id)
        return self._groups.fetch_offsets(group_id, partitions or None)

    def heartbeat(
        self, group_id: str, member_id: str, generation: int, group_instance_id: str | None = None
    ) -> None:
        """Keep a member's session; raises ``GroupError`` (REBALANCE_IN_PROGRESS: rejoin;
        FENCED_INSTANCE_ID: another member took this static member's instance id)."""
        self._check_coordinator(group_id)
        self._groups.heartbeat(group_id, member_id, generation, group_instance_id)

    def leave_group(
        self, group_id: str, member_id: str, group_instance_id: str | None = None
    ) -> None:
        """LeaveGroup of one member; with no ``member_id``, the static member holding
        ``group_instance_id``; with both, they must match (FENCED_INSTANCE_ID)."""
        self._check_coordinator(group_id)
        self._groups.leave(group_id, member_id, group_instance_id)

    def leave_group_members(
        self, group_id: str, members: Sequence[tuple[str, str | None]]
    ) -> tuple[ErrorCode, ...]:
        """LeaveGroup v3+ (KIP-345): (member id, instance id) pairs, each answered on its
        own (UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID); an empty member id with an instance
        id removes the static member holding it. Raises only for the whole request
        (NOT_COORDINATOR, ...)."""
        self._check_coordinator(group_id)
        return self._groups.leave_members(group_id, members)

    def list_groups(self) -> tuple[GroupSummary, ...]:
        summaries = []
        for listing in self._groups.list_groups():
            described = self._groups.describe(listing.group_id)
            summaries.append(
                GroupSummary(
                listing.group_id,
                listing.state.value,
                len(described.members),
                listing.protocol_type,
            )
            )
        return tuple(summaries)

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
        """Join with a subscription; returns when the join phase completes.

        Without ``protocols`` (the gRPC door) the broker assigns with ``assignor`` over
        ``topics`` and the answer carries this member's share. With ``protocols`` (the
        Kafka door: each with its decoded topics and the client's opaque metadata) the
        leader gets every member's subscription and each member calls ``sync_group``.

        The session timeout must lie within the group.min/max.session.timeout.ms bounds;
        a rebalance timeout of 0 means the session timeout. The subscribed topics are
        created only when the consumer asks (``auto_create_topics``, Kafka's consumer
        ``allow.auto.create.topics``) and --auto-create-topics is on; otherwise an
        unknown topic is assigned once it is created. An empty ``client_id`` or
        ``assignor``: ``DEFAULT_CLIENT_ID``, ``DEFAULT_ASSIGNOR``. ``group_instance_id``:
        a static member, as in ``kafka_join_group``."""
        self._check_coordinator(group_id)
        _check_instance_id(group_instance_id)
        session_s = self._session_timeout_s(session_timeout_ms)
        if auto_create_topics:
            await self._auto_create(topics)
        return await self._groups.join(
            group_id,
            member_id,
            client_id=client_id or DEFAULT_CLIENT_ID,
            topics=topics,
            assignor=assignor or DEFAULT_ASSIGNOR,
            session_timeout_s=session_s,
            rebalance_timeout_s=(rebalance_timeout_ms or session_timeout_ms) / 1000.0,
            protocols=protocols,
            protocol_type=protocol_type,
            group_instance_id=group_instance_id,
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
        """SyncGroup after a Kafka-mode join: the leader passes every member's
        assignment, the others None; returns this member's share."""
        self._check_coordinator(group_id)
        return await self._groups.sync(
            group_id,
            member_id,
            generation,
            assignments,
            timeout_ms / 1000.0,
            group_instance_id=group_instance_id,
        )

    def all_lags(self) -> Iterator[tuple[str, PartitionLagInfo]]:
        for listing in self._groups.list_groups():
            for lag in self.group_lag(listing.group_id):
                yield listing.group_id, lag

    async def delete_group(self, group_id: str) -> None:
        """Delete a group without members and its committed offsets (Kafka's
        DeleteGroups): NON_EMPTY_GROUP while it has members."""
        self._check_coordinator(group_id)
        await self._groups.delete_group(group_id)

    async def delete_offsets(
        self, group_id: str, partitions: Sequence[TopicPartition]
    ) -> tuple[OffsetDeleteOutcome, ...]:
        """Delete the group's committed offsets of ``partitions`` (Kafka's OffsetDelete),
        durably; a result per partition, in the order given: deleted, or kept with its
        own error (an unknown topic or partition; GROUP_SUBSCRIBED_TO_TOPIC while a
        member of the group subscribes to its topic). A refusal of the whole request
        raises ``GroupError`` (GROUP_ID_NOT_FOUND, ...), as Kafka answers it once."""
        self._check_coordinator(group_id)
        refused: dict[TopicPartition, SentinelError] = {}
        known: list[TopicPartition] = []
        for topic, partition in partitions:
            try:
                self._registry.get(topic).check_partition(partition)
            except SentinelError as exc:
                refused[(topic, partition)] = exc
            else:
                known.append((topic, partition))
        codes = await self._groups.delete_offsets(group_id, known)
        for (topic, partition), code in codes.items():
            if code is ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC:
                refused[(topic, partition)] = GroupError(
                    code, f"a member of group {group_id!r} subscribes to {topic!r}: "
                    f"the offset of {topic}[{partition}] is kept",
                )
            elif code is not ErrorCode.NONE:
                refused[(topic, partition)] = GroupError(code)
        return tuple(OffsetDeleteOutcome(t, p, refused.get((t, p))) for t, p in partitions)

    async def alter_group_offsets(
        self, group_id: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None:
        """Set a group's committed offsets from outside (kafka-consumer-groups
        --reset-offsets). As Kafka, only while the group has no active members: its
        consumers would overwrite the reset with their next commit."""
        members = len(self._groups.describe(group_id).members)
        if members:
            raise GroupError(
                ErrorCode.NON_EMPTY_GROUP,
                f"group {group_id!r} has {members} active member{'' if members == 1 else 's'}: "
                "offsets can be reset only while it has none (stop its consumers first)",
            )
        await self.commit_offsets(group_id, "", -1, offsets)

    def group_coordinator(self, group_id: str) -> BrokerMetadata:
        """The broker that coordinates ``group_id`` (Kafka's FindCoordinator), as
        ``metadata()`` lists it: a single broker coordinates every group; in a cluster
        the leader of the group's partition of ``__consumer_offsets`` does (Kafka's
        ``abs(groupId.hashCode) % partitions``; the offsets live in that partition)."""
        if self._coordinators is not None:
            return self._coordinators.coordinator(group_id)
        return broker_alone(self._broker_config())

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
        """JoinGroup through the Kafka door: client-side assignment (the leader gets
        every member's subscription, then everyone calls ``sync_group``).

        ``rebalance_timeout_ms`` < 1 (JoinGroup v0) means the session timeout.
        ``require_known_member_id`` (v4+): a new member first gets ``GroupError``
        MEMBER_ID_REQUIRED carrying its id (``.member_id``) and joins again with it.
        ``group_instance_id`` (v5+, KIP-345): a static member, never asked for a known
        member id; one that joins with no member id replaces the member holding its
        instance id (Stable, same subscription: no rebalance), whose id is fenced
        (FENCED_INSTANCE_ID). A group whose members joined through the gRPC door refuses
        with INCONSISTENT_GROUP_PROTOCOL."""
        self._check_coordinator(group_id)
        _check_instance_id(group_instance_id)
        session_s = self._session_timeout_s(session_timeout_ms)
        rebalance_s = rebalance_timeout_ms / 1000.0 if rebalance_timeout_ms > 0 else session_s
        return await self._groups.join(
            group_id,
            member_id,
            client_id=client_id,
            topics=(),
            assignor="",
            session_timeout_s=session_s,
            rebalance_timeout_s=rebalance_s,
            protocols=protocols,
            protocol_type=protocol_type,
            client_host=client_host,
            require_known_member_id=require_known_member_id,
            group_instance_id=group_instance_id,
        )


def _check_instance_id(group_instance_id: str | None) -> None:
    """A static member's id is 1..``MAX_INSTANCE_ID_LENGTH`` characters (INVALID_REQUEST)."""
    if group_instance_id is not None and not (
        0 < len(group_instance_id) <= MAX_INSTANCE_ID_LENGTH
    ):
        raise GroupError(
            ErrorCode.INVALID_REQUEST,
            f"group.instance.id must be 1..{MAX_INSTANCE_ID_LENGTH} characters, "
            f"not {len(group_instance_id)}",
        )
