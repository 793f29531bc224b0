"""The consumer group coordinator: many groups, their committed offsets, sans-IO.

``GroupCoordinator`` is what both front doors call. It owns no clock, socket, timer or
file: every call carries ``now`` (monotonic seconds, never decreasing), the driver calls
``tick(now)`` every few hundred milliseconds, and everything the driver must do comes
back as values (``group_events``). One group's state machine is ``group.Group``; its
states and edges are ``group_state.TRANSITIONS``.

The driver's loop, for the calls that may wait::

    result = coordinator.join(...)           # or sync(...)
    if result.error is not ErrorCode.NONE:
        answer now with result.error         # (MEMBER_ID_REQUIRED carries the new id)
    else:
        fail any older future of (group, result.member_id); park a new one
        deliver(result.events)               # may resolve that very future at once
    ...
    deliver(coordinator.tick(now))           # periodically; also leave(), partitions_changed()

``deliver`` resolves the future of ``(e.group_id, e.member_id)`` for JoinCompleted,
JoinFailed, SyncCompleted and SyncFailed, and logs or counts the rest.

Two ways to assign partitions:

- Kafka (``server_assign=False``): the leader's ``JoinCompleted`` lists the members'
  subscriptions; the leader computes the assignment and sends it with ``sync``; the
  followers' ``sync`` waits for it.
- Server-assigned (``server_assign=True``, the gRPC door): the coordinator runs the
  assignor named by the chosen protocol (``assignors.ASSIGNORS``) over the partition
  counts ``partition_counts(topic)`` reports, and every ``JoinCompleted`` carries the
  member's assignment; no sync is needed. ``partitions_changed(topic)`` rebalances the
  groups subscribed to ``topic``, and members learn of it from their next heartbeat
  (REBALANCE_IN_PROGRESS), as in Kafka.

Offsets: ``commit_offsets`` checks the member and generation and returns what to persist;
the driver writes it durably, then calls ``offsets_persisted`` (which makes it visible to
``fetch_offsets``), then acknowledges. ``load_offsets`` restores them at startup.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from sentinel.broker.assignors import ASSIGNORS
from sentinel.broker.group import Group
from sentinel.broker.group_config import GroupConfig, counter_member_ids
from sentinel.broker.group_events import (
    CommitResult,
    ErrorCode,
    Event,
    GroupDeleted,
    GroupDescription,
    GroupListing,
    JoinProtocol,
    JoinResult,
    MemberAssignment,
    OffsetAndMetadata,
    OffsetDeleteResult,
    OffsetsToPersist,
    Outcome,
    TopicPartition,
)
from sentinel.broker.group_member import MemberSpec
from sentinel.broker.group_state import GroupState
from sentinel.errors import InvalidArgumentError

PartitionCounts = Callable[[str], int | None]
"""topic -> its partition count, or None (or 0) if the topic does not exist."""

CONSUMER = "consumer"
"""The protocol type whose members' subscriptions the coordinator knows (OffsetDelete)."""


class GroupCoordinator:
    """Every consumer group this broker coordinates. Not thread-safe: one event loop."""

    def __init__(
        self,
        partition_counts: PartitionCounts,
        config: GroupConfig | None = None,
        *,
        member_ids: Callable[[], str] | None = None,
    ) -> None:
        self.config = config or GroupConfig()
        self._partition_counts = partition_counts
        self._member_ids = member_ids or counter_member_ids()
        self._groups: dict[str, Group] = {}
        self._now = -math.inf

    # --- membership -------------------------------------------------------------------

    def join(
        self,
        group_id: str,
        member_id: str | None,
        *,
        client_id: str,
        session_timeout_s: float,
        rebalance_timeout_s: float | None = None,
        protocol_type: str = "consumer",
        protocols: Sequence[JoinProtocol],
        now: float,
        server_assign: bool = False,
        require_known_member_id: bool = False,
        client_host: str = "",
        group_instance_id: str | None = None,
    ) -> JoinResult:
        """JoinGroup. ``member_id`` None or ``""``: a new member, given a fresh id.

        ``rebalance_timeout_s`` None means the session timeout (JoinGroup v0).
        ``require_known_member_id`` (JoinGroup v4+, KIP-394): a new member is only given
        an id (MEMBER_ID_REQUIRED) and must join again with it.
        ``group_instance_id`` (JoinGroup v5+, KIP-345): a static member; with no member
        id it replaces the member holding that instance id (see ``group``).
        """
        self._advance(now)
        member_id = member_id or ""
        error = self._check_group_id(group_id)
        if error is ErrorCode.NONE:
            spec_or_error = self._member_spec(
                client_id=client_id,
                client_host=client_host,
                session_timeout_s=session_timeout_s,
                rebalance_timeout_s=rebalance_timeout_s,
                protocol_type=protocol_type,
                protocols=protocols,
                server_assign=server_assign,
            )
            if isinstance(spec_or_error, ErrorCode):
                error = spec_or_error
        if error is not ErrorCode.NONE:
            return JoinResult(error, member_id)
        assert isinstance(spec_or_error, MemberSpec)
        group = self._groups.get(group_id)
        if group is None:
            if member_id:
                return JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member_id)
            group = self._new_group(group_id)
        member_prefix = f"{spec_or_error.client_id}-"
        result = group.join(
            member_id,
            spec_or_error,
            now,
            new_id=lambda: member_prefix + self._member_ids(),
            require_known_id=require_known_member_id,
            instance_id=group_instance_id,
        )
        if group.members or group.pending_ids or group.offsets:
            self._groups[group_id] = group
        return result

    def sync(
        self,
        group_id: str,
        member_id: str,
        generation: int,
        assignments: Mapping[str, MemberAssignment] | None,
        now: float,
        *,
        group_instance_id: str | None = None,
    ) -> Outcome:
        """SyncGroup. Only the leader's ``assignments`` count; others may pass None.
        A ``group_instance_id`` must be the member's (FENCED_INSTANCE_ID)."""
        self._advance(now)
        group = self._groups.get(group_id)
        if group is None:
            return Outcome(ErrorCode.UNKNOWN_MEMBER_ID)
        return group.sync(member_id, generation, assignments, now, group_instance_id)

    def heartbeat(
        self,
        group_id: str,
        member_id: str,
        generation: int,
        now: float,
        *,
        group_instance_id: str | None = None,
    ) -> ErrorCode:
        self._advance(now)
        group = self._groups.get(group_id)
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        return group.heartbeat(member_id, generation, now, group_instance_id)

    def leave(
        self, group_id: str, member_id: str, now: float, *, group_instance_id: str | None = None
    ) -> Outcome:
        """LeaveGroup of one member (v0-2); with no ``member_id``, the static member
        holding ``group_instance_id``."""
        self._advance(now)
        group = self._groups.get(group_id)
        if group is None:
            return Outcome(ErrorCode.UNKNOWN_MEMBER_ID)
        return group.leave(member_id, now, group_instance_id)

    def leave_members(
        self, group_id: str, members: Iterable[tuple[str, str | None]], now: float
    ) -> tuple[Outcome, ...]:
        """LeaveGroup v3+: (member id, instance id) pairs, each answered on its own."""
        return tuple(
            self.leave(group_id, member_id, now, group_instance_id=instance_id)
            for member_id, instance_id in members
        )

    def tick(self, now: float) -> list[Event]:
        """Fire every timer due by ``now``; reap empty groups that hold no offsets."""
        self._advance(now)
        out: list[Event] = []
        for group_id, group in list(self._groups.items()):
            group.tick(now, out)
            if group.state is GroupState.EMPTY and not (group.offsets or group.pending_ids):
                group.delete(out)
                del self._groups[group_id]
        return out

    def partitions_changed(self, topic: str, now: float) -> list[Event]:
        """``topic``'s partition count changed: rebalance every group subscribed to it."""
        self._advance(now)
        out: list[Event] = []
        for group in self._groups.values():
            group.partitions_changed(topic, now, out)
        return out

    # --- offsets ----------------------------------------------------------------------

    def commit_offsets(
        self,
        group_id: str,
        member_id: str,
        generation: int,
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
        now: float,
        *,
        group_instance_id: str | None = None,
    ) -> CommitResult:
        """OffsetCommit. ``generation < 0`` on an Empty (or unknown) group is a commit from
        outside group management (a standalone consumer, an admin tool), as Kafka allows.
        A ``group_instance_id`` (v7+) must be the member's (FENCED_INSTANCE_ID)."""
        self._advance(now)
        error = self._check_group_id(group_id)
        if error is ErrorCode.NONE:
            group = self._groups.get(group_id)
            if group is not None:
                error = group.check_commit(member_id, generation, now, group_instance_id)
            elif generation >= 0:
                error = ErrorCode.ILLEGAL_GENERATION
        if error is not ErrorCode.NONE:
            return CommitResult(error)
        limit = self.config.max_offset_metadata_bytes
        refused = {
            tp: ErrorCode.OFFSET_METADATA_TOO_LARGE
            for tp, om in offsets.items()
            if len(om.metadata.encode()) > limit
        }
        accepted = {tp: om for tp, om in offsets.items() if tp not in refused}
        to_persist = OffsetsToPersist(group_id, accepted) if accepted else None
        return CommitResult(ErrorCode.NONE, refused, to_persist)

    def offsets_persisted(self, persisted: OffsetsToPersist) -> None:
        """``persisted`` is durable now: make it visible to ``fetch_offsets``."""
        self.load_offsets(persisted.group_id, persisted.offsets)

    def load_offsets(
        self, group_id: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None:
        """Restore offsets read back from storage (startup, or after taking a group over)."""
        if self._check_group_id(group_id) is not ErrorCode.NONE:
            raise InvalidArgumentError(f"invalid group id {group_id!r}")
        group = self._groups.get(group_id)
        if group is None:
            group = self._groups[group_id] = self._new_group(group_id)
        group.offsets.update(offsets)

    def fetch_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """Committed offsets of ``partitions`` (all if None); a partition without one is
        left out (the Kafka door answers offset -1 for it)."""
        group = self._groups.get(group_id)
        if group is None:
            return {}
        if partitions is None:
            return dict(group.offsets)
        return {tp: group.offsets[tp] for tp in partitions if tp in group.offsets}

    def delete_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition]
    ) -> OffsetDeleteResult:
        """OffsetDelete (KIP-496), Kafka's rules: an unknown group is GROUP_ID_NOT_FOUND;
        an Empty group's offsets may all go; a consumer group with members keeps those
        of the topics its members subscribe to (GROUP_SUBSCRIBED_TO_TOPIC, per
        partition; every topic counts when a member's subscription could not be read);
        a group with members of another protocol type, whose subscriptions are opaque,
        keeps them all (NON_EMPTY_GROUP). Nothing changes here: the driver removes
        ``to_delete`` durably, then calls ``offsets_deleted``."""
        asked = tuple(partitions)
        error = self._check_group_id(group_id)
        group = self._groups.get(group_id)
        if error is ErrorCode.NONE and group is None:
            error = ErrorCode.GROUP_ID_NOT_FOUND
        if error is not ErrorCode.NONE:
            return OffsetDeleteResult(error)
        assert group is not None
        subscribed: frozenset[str] | None = frozenset()
        if group.state is not GroupState.EMPTY:
            if group.protocol_type != CONSUMER:
                return OffsetDeleteResult(ErrorCode.NON_EMPTY_GROUP)
            subscribed = group.subscribed_topics()  # None: unknown, so every topic
        refused = {
            tp: ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC
            for tp in asked
            if subscribed is None or tp[0] in subscribed
        }
        to_delete = {
            tp: group.offsets[tp] for tp in asked if tp not in refused and tp in group.offsets
        }
        return OffsetDeleteResult(ErrorCode.NONE, refused, to_delete)

    def offsets_deleted(
        self, group_id: str, deleted: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None:
        """``deleted`` (a ``delete_offsets`` result's ``to_delete``) is durably gone:
        forget each offset unless a commit replaced it meanwhile (a commit persisted
        after the deletion holds a new value object, which stays). An Empty group left
        without offsets is reaped by the next ``tick``, as Kafka drops it."""
        group = self._groups.get(group_id)
        if group is None:
            return
        for tp, om in deleted.items():
            if group.offsets.get(tp) is om:
                del group.offsets[tp]

    # --- administration ---------------------------------------------------------------

    def list_groups(self, states: Collection[GroupState] | None = None) -> list[GroupListing]:
        return [
            GroupListing(gid, g.protocol_type, g.state)
            for gid, g in sorted(self._groups.items())
            if states is None or g.state in states
        ]

    def describe_group(self, group_id: str) -> GroupDescription:
        group = self._groups.get(group_id)
        if group is None:
            return GroupDescription(
                group_id, ErrorCode.GROUP_ID_NOT_FOUND, GroupState.DEAD, "", "", -1, ""
            )
        return GroupDescription(
            group_id,
            ErrorCode.NONE,
            group.state,
            group.protocol_type,
            group.protocol or "",
            group.generation,
            group.leader_id or "",
            group.describe_members(),
        )

    def delete_group(self, group_id: str) -> Outcome:
        """DeleteGroups: only an Empty group; the driver deletes its stored offsets."""
        if self._check_group_id(group_id) is not ErrorCode.NONE:
            return Outcome(ErrorCode.INVALID_GROUP_ID)
        group = self._groups.get(group_id)
        if group is None:
            return Outcome(ErrorCode.GROUP_ID_NOT_FOUND)
        if group.state is not GroupState.EMPTY or group.pending_ids:
            return Outcome(ErrorCode.NON_EMPTY_GROUP)
        out: list[Event] = []
        group.delete(out)
        del self._groups[group_id]
        out.append(GroupDeleted(group_id))
        return Outcome(ErrorCode.NONE, tuple(out))

    def unload(self, group_ids: Iterable[str] | None = None) -> list[Event]:
        """Give groups up (all if None): waiting joins and syncs fail with NOT_COORDINATOR."""
        out: list[Event] = []
        for group_id in list(self._groups if group_ids is None else group_ids):
            group = self._groups.pop(group_id, None)
            if group is not None:
                group.unload(out)
        return out

    # --- helpers ----------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        if not now >= self._now:  # also refuses NaN
            raise InvalidArgumentError(f"time went backwards: {now} after {self._now}")
        self._now = now

    def _new_group(self, group_id: str) -> Group:
        return Group(
            group_id,
            max_size=self.config.max_group_size,
            initial_rebalance_delay_s=self.config.initial_rebalance_delay_s,
            server_assign=self._assign,
        )

    def _check_group_id(self, group_id: str) -> ErrorCode:
        if not group_id or len(group_id) > self.config.max_group_id_length:
            return ErrorCode.INVALID_GROUP_ID
        return ErrorCode.NONE

    def _member_spec(
        self,
        *,
        client_id: str,
        client_host: str,
        session_timeout_s: float,
        rebalance_timeout_s: float | None,
        protocol_type: str,
        protocols: Sequence[JoinProtocol],
        server_assign: bool,
    ) -> MemberSpec | ErrorCode:
        cfg = self.config
        if not cfg.min_session_timeout_s <= session_timeout_s <= cfg.max_session_timeout_s:
            return ErrorCode.INVALID_SESSION_TIMEOUT
        rebalance = session_timeout_s if rebalance_timeout_s is None else rebalance_timeout_s
        if not 0 < rebalance < math.inf:
            return ErrorCode.INVALID_REQUEST
        too_big = (
            len(client_id) > cfg.max_client_id_length
            or len(client_host) > cfg.max_client_id_length
            or len(protocols) > cfg.max_protocols
            or sum(p.size for p in protocols) > cfg.max_protocol_metadata_bytes
        )
        if too_big:
            return ErrorCode.INVALID_REQUEST
        names = [p.name for p in protocols]
        if not protocol_type or not names or "" in names or len(set(names)) != len(names):
            return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        chosen = tuple(protocols)
        if server_assign:
            chosen = tuple(p for p in protocols if p.name in ASSIGNORS)
            if not chosen:
                return ErrorCode.UNSUPPORTED_ASSIGNOR
        return MemberSpec(
            client_id,
            client_host,
            protocol_type,
            chosen,
            server_assign,
            session_timeout_s,
            rebalance,
        )

    def _assign(
        self, protocol: str, subscriptions: Mapping[str, tuple[str, ...]]
    ) -> dict[str, MemberAssignment]:
        topics = {t for ts in subscriptions.values() for t in ts}
        counts = {t: n for t in sorted(topics) if (n := self._partition_counts(t) or 0) > 0}
        raw = ASSIGNORS[protocol](subscriptions, counts)
        return {member: MemberAssignment(parts) for member, parts in raw.items()}
