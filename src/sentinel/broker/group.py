"""One consumer group as a pure state machine (Kafka's classic group protocol).

Every method takes ``now`` (monotonic seconds) and returns what happened; the group
never reads a clock, and nothing happens between calls: timeouts fire in ``tick``.
States and their edges are in ``group_state``; this module decides *when* to take them.
How each request is answered in each state (``wait``: answered later by an event)::

    request         Empty     PreparingRebalance   CompletingRebalance     Stable
    join, new       rebalance wait                 rebalance, wait         rebalance, wait
    join, known     -         wait                 same metadata: answer   same metadata and
                                                   now; else rebalance     not the Kafka leader:
                                                                           answer now; else
                                                                           rebalance, wait
    sync            UNKNOWN   REBALANCE_IN_PROG.   leader: Stable, answer  answer now
                                                   all; follower: wait
    heartbeat       UNKNOWN   REBALANCE_IN_PROG.   NONE                    NONE
    leave           UNKNOWN   maybe end the phase  rebalance               rebalance
    commit (member) UNKNOWN   accepted             REBALANCE_IN_PROG.      accepted

Dead answers COORDINATOR_NOT_AVAILABLE to everything. A known member's sync, heartbeat
and commit first check its generation (ILLEGAL_GENERATION).

Static members (KIP-345, ``group.instance.id``) never get MEMBER_ID_REQUIRED. A join
with no member id and an instance id some member holds *replaces* that member: a new
member id takes its place, its assignment and its leadership; the old id's waiting join
or sync fails and any later request naming it with the instance id, with
FENCED_INSTANCE_ID. Stable with the same protocols: answered at once, same generation,
no rebalance. A replaced leader leads from then on, but its answer names the old leader
id and no members, as Kafka answers JoinGroup before v9 (no SkipAssignment): a client
told it leads would assign, find nothing changed in Stable, and rejoin.
PreparingRebalance: it waits in the old member's place. Otherwise (CompletingRebalance,
where the leader may be assigning to the old id, or a new subscription): rebalance. A
static member's session timeout removes it as any other's.

Timers (all checked by ``tick``):

- session: a member that does not heartbeat (or join, sync, commit) within its session
  timeout is removed, unless it is waiting for a join or sync answer (KIP-62: a member
  busy rejoining is alive; the rebalance timeout bounds that instead);
- rebalance: the join phase ends once every member has rejoined, or when the largest
  rebalance timeout of the members has passed since it began; members that did not
  rejoin are removed. Joining an Empty group waits ``initial_rebalance_delay_s`` first,
  so that members starting together land in one generation;
- sync: in CompletingRebalance, if the leader has not sent the assignment within the
  rebalance timeout, the members that have not synced are removed and it rebalances;
- member id: an id handed out with MEMBER_ID_REQUIRED is forgotten after the session
  timeout if the client never comes back with it.

Server-assigned mode (the gRPC door): every member asked for it and names assignors the
coordinator knows. When the join phase ends the group runs the assignor itself and goes
through CompletingRebalance to Stable at once; every ``JoinCompleted`` carries the
member's assignment and nobody needs to sync.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from sentinel.broker.group_events import (
    ErrorCode,
    Event,
    JoinCompleted,
    JoinFailed,
    JoinResult,
    MemberAssignment,
    MemberDescription,
    MemberRemoved,
    MemberSubscription,
    OffsetAndMetadata,
    Outcome,
    RemovalReason,
    StateChanged,
    SyncCompleted,
    SyncFailed,
    TopicPartition,
)
from sentinel.broker.group_member import (
    Member,
    MemberSpec,
    check_identity,
    incompatibility,
    select_protocol,
    static_member,
)
from sentinel.broker.group_state import GroupState, Trigger, next_state

ServerAssign = Callable[[str, Mapping[str, tuple[str, ...]]], Mapping[str, MemberAssignment]]
"""(assignor name, member -> topics) -> member -> assignment."""

_EMPTY_ASSIGNMENT = MemberAssignment()


class Group:
    """One group. The coordinator validates arguments; this decides what happens."""

    def __init__(
        self,
        group_id: str,
        *,
        max_size: int,
        initial_rebalance_delay_s: float,
        server_assign: ServerAssign,
    ) -> None:
        self.group_id = group_id
        self.state = GroupState.EMPTY
        self.generation = 0
        self.protocol_type = ""
        self.protocol: str | None = None
        self.leader_id: str | None = None
        self.members: dict[str, Member] = {}  # in join order
        self.pending_ids: dict[str, float] = {}  # MEMBER_ID_REQUIRED ids -> expiry
        self.offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        self._max_size = max_size
        self._initial_delay = initial_rebalance_delay_s
        self._server_assign = server_assign
        self._rebalance_deadline = 0.0
        self._earliest_join_end = 0.0
        self._sync_deadline = 0.0

    # --- requests ---------------------------------------------------------------------

    def join(
        self,
        member_id: str,
        spec: MemberSpec,
        now: float,
        *,
        new_id: Callable[[], str],
        require_known_id: bool,
        instance_id: str | None = None,
    ) -> JoinResult:
        if self.state is GroupState.DEAD:
            return JoinResult(ErrorCode.COORDINATOR_NOT_AVAILABLE, member_id)
        out: list[Event] = []
        if not member_id and instance_id is not None:
            holder = static_member(self.members, instance_id)
            if holder is not None:
                return self._replace(holder, spec, now, new_id)
        if not member_id or (member_id in self.pending_ids and instance_id is None):
            refused = incompatibility(list(self.members.values()), spec)
            if refused is not None:
                return self._inconsistent(member_id, refused)
            if not member_id:
                if len(self.members) + len(self.pending_ids) >= self._max_size:
                    return JoinResult(ErrorCode.GROUP_MAX_SIZE_REACHED, "")
                member_id = self._unused_id(new_id)
                if require_known_id and instance_id is None:
                    self.pending_ids[member_id] = now + spec.session_timeout_s
                    return JoinResult(ErrorCode.MEMBER_ID_REQUIRED, member_id)
            self.pending_ids.pop(member_id, None)
            self._add(member_id, spec, now, out, instance_id)
            return JoinResult(ErrorCode.NONE, member_id, tuple(out))
        error = check_identity(self.members, member_id, instance_id)
        if error is not ErrorCode.NONE:
            return JoinResult(error, member_id)
        member = self.members[member_id]
        refused = incompatibility(self._others(member_id), spec)
        if refused is not None:
            return self._inconsistent(member_id, refused)
        self._rejoin(member, spec, now, out)
        return JoinResult(ErrorCode.NONE, member_id, tuple(out))

    def _inconsistent(self, member_id: str, why: str) -> JoinResult:
        return JoinResult(
            ErrorCode.INCONSISTENT_GROUP_PROTOCOL,
            member_id,
            reason=f"cannot join group {self.group_id!r}: {why}",
        )

    def sync(
        self,
        member_id: str,
        generation: int,
        assignments: Mapping[str, MemberAssignment] | None,
        now: float,
        instance_id: str | None = None,
    ) -> Outcome:
        error = self._check_member(member_id, instance_id, generation)
        if error is not ErrorCode.NONE:
            return Outcome(error)
        member = self.members[member_id]
        if self.state is GroupState.PREPARING_REBALANCE:
            return Outcome(ErrorCode.REBALANCE_IN_PROGRESS)
        member.keep_alive(now)
        if self.state is GroupState.STABLE:
            return Outcome(ErrorCode.NONE, (self._sync_completed(member),))
        out: list[Event] = []
        member.awaiting_sync = True
        if member_id == self.leader_id:
            given = assignments or {}
            for mid, m in self.members.items():
                m.assignment = given.get(mid, _EMPTY_ASSIGNMENT)
            self._move(Trigger.ASSIGNED, f"leader {member_id} sent the assignment", out)
            for m in self.members.values():
                if m.awaiting_sync:
                    m.awaiting_sync = False
                    out.append(self._sync_completed(m))
        return Outcome(ErrorCode.NONE, tuple(out))

    def heartbeat(
        self, member_id: str, generation: int, now: float, instance_id: str | None = None
    ) -> ErrorCode:
        error = self._check_member(member_id, instance_id, generation)
        if error is not ErrorCode.NONE:
            return error
        self.members[member_id].keep_alive(now)
        if self.state is GroupState.PREPARING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        return ErrorCode.NONE

    def leave(self, member_id: str, now: float, instance_id: str | None = None) -> Outcome:
        """LeaveGroup of one member; no ``member_id`` but an ``instance_id``: the static
        member holding it (the admin tools' removal, KIP-345)."""
        if self.state is GroupState.DEAD:
            return Outcome(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        out: list[Event] = []
        if not member_id and instance_id is not None:
            holder = static_member(self.members, instance_id)
            if holder is None:
                return Outcome(ErrorCode.UNKNOWN_MEMBER_ID)
            member_id = holder.member_id
        elif member_id in self.pending_ids:
            del self.pending_ids[member_id]
            self._maybe_end_join_phase(now, out)
            return Outcome(ErrorCode.NONE, tuple(out))
        error = check_identity(self.members, member_id, instance_id)
        if error is not ErrorCode.NONE:
            return Outcome(error)
        self._remove(member_id, RemovalReason.LEFT, out)
        self._after_removal(now, f"member {member_id} left", out)
        return Outcome(ErrorCode.NONE, tuple(out))

    def check_commit(
        self, member_id: str, generation: int, now: float, instance_id: str | None = None
    ) -> ErrorCode:
        """Whether ``member_id`` may commit offsets for ``generation`` now (Kafka's rules)."""
        if self.state is GroupState.DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if generation < 0 and self.state is GroupState.EMPTY:
            return ErrorCode.NONE  # a standalone consumer or an admin tool
        error = self._check_member(member_id, instance_id, generation)
        if error is not ErrorCode.NONE:
            return error
        if self.state is GroupState.COMPLETING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        self.members[member_id].keep_alive(now)
        return ErrorCode.NONE

    # --- things that happen to the group ----------------------------------------------

    def tick(self, now: float, out: list[Event]) -> None:
        for pending, expiry in list(self.pending_ids.items()):
            if expiry <= now:
                del self.pending_ids[pending]
        expired = [
            m.member_id
            for m in self.members.values()
            if not (m.awaiting_join or m.awaiting_sync) and m.session_deadline <= now
        ]
        for mid in expired:
            self._remove(mid, RemovalReason.SESSION_TIMEOUT, out)
        if expired:
            self._after_removal(now, f"session timeout of {', '.join(expired)}", out)
        if self.state is GroupState.PREPARING_REBALANCE:
            self._maybe_end_join_phase(now, out)
        elif self.state is GroupState.COMPLETING_REBALANCE and now >= self._sync_deadline:
            laggards = [m.member_id for m in self.members.values() if not m.awaiting_sync]
            for mid in laggards:
                self._remove(mid, RemovalReason.SYNC_TIMEOUT, out)
            self._after_removal(now, f"no assignment in time; removed {', '.join(laggards)}", out)

    def partitions_changed(self, topic: str, now: float, out: list[Event]) -> None:
        if self.state not in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            return  # Empty: nobody to tell; PreparingRebalance: will assign afresh anyway
        if any(topic in m.protocol(self.protocol).topics for m in self.members.values()):
            self._prepare_rebalance(now, f"partitions of topic {topic} changed", out)

    def delete(self, out: list[Event]) -> None:
        self._move(Trigger.DELETED, "deleted", out)

    def unload(self, out: list[Event]) -> None:
        if self.state is GroupState.DEAD:
            return
        for m in self.members.values():
            if m.awaiting_join:
                out.append(JoinFailed(self.group_id, m.member_id, ErrorCode.NOT_COORDINATOR))
            if m.awaiting_sync:
                out.append(SyncFailed(self.group_id, m.member_id, ErrorCode.NOT_COORDINATOR))
        self.members.clear()
        self.pending_ids.clear()
        self._move(Trigger.UNLOADED, "unloaded", out)

    # --- views ------------------------------------------------------------------------

    @property
    def server_assigned(self) -> bool:
        return any(m.spec.server_assign for m in self.members.values())

    def subscribed_topics(self) -> frozenset[str] | None:
        """The topics the members subscribe to (their chosen protocol's); None when a
        member's subscription could not be read (``JoinProtocol.unread``)."""
        topics: set[str] = set()
        for m in self.members.values():
            p = m.protocol(self.protocol)
            if p.unread:
                return None
            topics.update(p.topics)
        return frozenset(topics)

    def describe_members(self) -> tuple[MemberDescription, ...]:
        result = []
        for m in self.members.values():
            p = m.protocol(self.protocol)
            result.append(
                MemberDescription(
                    m.member_id,
                    m.spec.client_id,
                    m.spec.client_host,
                    p.topics,
                    p.metadata,
                    m.assignment,
                    m.instance_id,
                )
            )
        return tuple(result)

    # --- the machinery ----------------------------------------------------------------

    def _check_member(
        self, member_id: str, instance_id: str | None, generation: int
    ) -> ErrorCode:
        if self.state is GroupState.DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        error = check_identity(self.members, member_id, instance_id)
        if error is not ErrorCode.NONE:
            return error
        if generation != self.generation:
            return ErrorCode.ILLEGAL_GENERATION
        return ErrorCode.NONE

    def _others(self, member_id: str) -> list[Member]:
        return [m for mid, m in self.members.items() if mid != member_id]

    def _unused_id(self, new_id: Callable[[], str]) -> str:
        while True:
            candidate = new_id()
            if candidate not in self.members and candidate not in self.pending_ids:
                return candidate

    def _add(
        self,
        member_id: str,
        spec: MemberSpec,
        now: float,
        out: list[Event],
        instance_id: str | None = None,
    ) -> None:
        member = Member(
            member_id,
            spec,
            now + spec.session_timeout_s,
            awaiting_join=True,
            instance_id=instance_id,
        )
        self.members[member_id] = member
        self.protocol_type = spec.protocol_type
        if self.leader_id is None:
            self.leader_id = member_id
        if self.state is not GroupState.PREPARING_REBALANCE:
            self._prepare_rebalance(now, f"member {member_id} joined", out)
        self._maybe_end_join_phase(now, out)

    def _rejoin(self, member: Member, spec: MemberSpec, now: float, out: list[Event]) -> None:
        member.keep_alive(now)
        same = spec.protocol_type == member.spec.protocol_type and (
            spec.protocols == member.spec.protocols
        )
        kafka_leader = member.member_id == self.leader_id and not spec.server_assign
        if self.state is GroupState.COMPLETING_REBALANCE and same:
            out.append(self._join_completed(member))  # it lost its JoinGroup answer
            return
        if self.state is GroupState.STABLE and same and not kafka_leader:
            out.append(self._join_completed(member))
            return
        # A Kafka leader rejoining a Stable group asks for a rebalance (for instance for
        # topic metadata changes the coordinator does not see); so does a new subscription.
        member.spec = spec
        member.awaiting_join = True
        if self.state is not GroupState.PREPARING_REBALANCE:
            why = "changed its subscription" if not same else "asked for a rebalance"
            self._prepare_rebalance(now, f"member {member.member_id} {why}", out)
        self._maybe_end_join_phase(now, out)

    def _replace(
        self, old: Member, spec: MemberSpec, now: float, new_id: Callable[[], str]
    ) -> JoinResult:
        """A new member with ``old``'s instance id takes ``old``'s place (KIP-345)."""
        old_id = old.member_id
        refused = incompatibility(self._others(old_id), spec)
        if refused is not None:
            return self._inconsistent("", refused)
        member_id = self._unused_id(new_id)
        out: list[Event] = []
        if old.awaiting_join:
            out.append(JoinFailed(self.group_id, old_id, ErrorCode.FENCED_INSTANCE_ID))
        if old.awaiting_sync:
            out.append(SyncFailed(self.group_id, old_id, ErrorCode.FENCED_INSTANCE_ID))
        out.append(MemberRemoved(self.group_id, old_id, RemovalReason.REPLACED))
        self.members = {(member_id if k == old_id else k): m for k, m in self.members.items()}
        if self.leader_id == old_id:
            self.leader_id = member_id
        same = spec.protocol_type == old.spec.protocol_type and (
            spec.protocols == old.spec.protocols
        )
        member = old
        member.member_id, member.spec = member_id, spec
        member.awaiting_join = member.awaiting_sync = False
        member.keep_alive(now)
        if self.state is GroupState.STABLE and same:
            answer = self._join_completed(member)
            if answer.is_leader:
                answer = replace(answer, leader_id=old_id, members=())
            out.append(answer)
            return JoinResult(ErrorCode.NONE, member_id, tuple(out))
        member.awaiting_join = True
        if self.state is not GroupState.PREPARING_REBALANCE:
            why = "a new subscription" if not same else "the group completing a rebalance"
            self._prepare_rebalance(
                now, f"static member {member.instance_id} rejoined as {member_id} ({why})", out
            )
        self._maybe_end_join_phase(now, out)
        return JoinResult(ErrorCode.NONE, member_id, tuple(out))

    def _remove(self, member_id: str, reason: RemovalReason, out: list[Event]) -> None:
        member = self.members.pop(member_id)
        if member.awaiting_join:
            out.append(JoinFailed(self.group_id, member_id, ErrorCode.UNKNOWN_MEMBER_ID))
        if member.awaiting_sync:
            out.append(SyncFailed(self.group_id, member_id, ErrorCode.UNKNOWN_MEMBER_ID))
        out.append(MemberRemoved(self.group_id, member_id, reason))
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)

    def _after_removal(self, now: float, reason: str, out: list[Event]) -> None:
        if self.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(now, reason, out)
        self._maybe_end_join_phase(now, out)

    def _prepare_rebalance(self, now: float, reason: str, out: list[Event]) -> None:
        was_empty = self.state is GroupState.EMPTY
        for m in self.members.values():
            if m.awaiting_sync:
                m.awaiting_sync = False
                out.append(SyncFailed(self.group_id, m.member_id, ErrorCode.REBALANCE_IN_PROGRESS))
            m.assignment = None
        self._move(Trigger.REBALANCE, reason, out)
        timeout = max((m.spec.rebalance_timeout_s for m in self.members.values()), default=0.0)
        self._rebalance_deadline = now + timeout
        delay = min(self._initial_delay, timeout) if was_empty else 0.0
        self._earliest_join_end = now + delay

    def _maybe_end_join_phase(self, now: float, out: list[Event]) -> None:
        if self.state is not GroupState.PREPARING_REBALANCE or now < self._earliest_join_end:
            return
        everyone = not self.pending_ids and all(m.awaiting_join for m in self.members.values())
        if everyone or now >= self._rebalance_deadline:
            self._end_join_phase(now, out)

    def _end_join_phase(self, now: float, out: list[Event]) -> None:
        for m in list(self.members.values()):
            if not m.awaiting_join:
                self._remove(m.member_id, RemovalReason.REBALANCE_TIMEOUT, out)
        self.generation += 1
        if not self.members:
            self.protocol = None
            self.leader_id = None
            self._move(Trigger.EMPTIED, "no members left", out)
            return
        leader = self.members.get(self.leader_id or "") or next(iter(self.members.values()))
        self.leader_id = leader.member_id
        self.protocol = select_protocol(list(self.members.values()), leader)
        self._move(Trigger.JOINED, f"{len(self.members)} members joined", out)
        for m in self.members.values():
            m.awaiting_join = False
            m.keep_alive(now)
        if self.server_assigned:
            topics = {mid: m.protocol(self.protocol).topics for mid, m in self.members.items()}
            assignment = self._server_assign(self.protocol, topics)
            for mid, m in self.members.items():
                m.assignment = assignment.get(mid, _EMPTY_ASSIGNMENT)
            self._move(Trigger.ASSIGNED, f"coordinator assigned with {self.protocol}", out)
        else:
            timeout = max(m.spec.rebalance_timeout_s for m in self.members.values())
            self._sync_deadline = now + timeout
        out.extend(self._join_completed(m) for m in self.members.values())

    def _move(self, trigger: Trigger, reason: str, out: list[Event]) -> None:
        new = next_state(self.state, trigger)
        out.append(StateChanged(self.group_id, self.state, new, self.generation, reason))
        self.state = new

    def _join_completed(self, member: Member) -> JoinCompleted:
        assert self.protocol is not None and self.leader_id is not None
        server = member.spec.server_assign
        members: tuple[MemberSubscription, ...] = ()
        if member.member_id == self.leader_id and not server:
            members = tuple(
                MemberSubscription(
                    mid,
                    m.protocol(self.protocol).topics,
                    m.protocol(self.protocol).metadata,
                    m.instance_id,
                )
                for mid, m in self.members.items()
            )
        return JoinCompleted(
            self.group_id,
            member.member_id,
            self.generation,
            self.protocol_type,
            self.protocol,
            self.leader_id,
            members,
            member.assignment if server else None,
        )

    def _sync_completed(self, member: Member) -> SyncCompleted:
        assert self.protocol is not None
        return SyncCompleted(
            self.group_id,
            member.member_id,
            self.generation,
            self.protocol_type,
            self.protocol,
            member.assignment or _EMPTY_ASSIGNMENT,
        )
