"""A group member's record, and the protocol rules that look across members.

Kafka's rules, as pure functions over members:

- a member may join only if it speaks the group's protocol type and shares at least one
  protocol (assignor) with every other member (``supports``);
- when the join phase ends, each member votes for its most preferred protocol that every
  member supports, and the most votes wins (``select_protocol``); a tie goes to the
  leader's preference, so the choice is deterministic;
- a request naming a static member's instance id (KIP-345) must come from the member
  that holds it now; an older holder, replaced, is fenced (``check_identity``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sentinel.broker.group_events import ErrorCode, JoinProtocol, MemberAssignment


@dataclass(frozen=True, slots=True)
class MemberSpec:
    """What a JoinGroup says about the member, validated by the coordinator."""

    client_id: str
    client_host: str
    protocol_type: str
    protocols: tuple[JoinProtocol, ...]  # by preference; never empty
    server_assign: bool
    session_timeout_s: float
    rebalance_timeout_s: float


@dataclass(slots=True)
class Member:
    """A member as the group tracks it; mutable, owned by one ``Group``."""

    member_id: str
    spec: MemberSpec
    session_deadline: float
    awaiting_join: bool = False  # a JoinGroup is parked (only in PreparingRebalance)
    awaiting_sync: bool = False  # a SyncGroup is parked (only in CompletingRebalance)
    assignment: MemberAssignment | None = None  # set in Stable, None while rebalancing
    instance_id: str | None = None  # group.instance.id of a static member (KIP-345)

    def protocol(self, name: str | None) -> JoinProtocol:
        """The member's protocol called ``name`` (its first one if there is none yet)."""
        for p in self.spec.protocols:
            if p.name == name:
                return p
        return self.spec.protocols[0]

    def keep_alive(self, now: float) -> None:
        self.session_deadline = now + self.spec.session_timeout_s


def static_member(members: Mapping[str, Member], instance_id: str) -> Member | None:
    """The member that holds ``instance_id`` now, if any."""
    for m in members.values():
        if m.instance_id == instance_id:
            return m
    return None


def check_identity(
    members: Mapping[str, Member], member_id: str, instance_id: str | None
) -> ErrorCode:
    """Kafka's check of who sends a request (``validateCurrentMember``): with an instance
    id, it must be held, and by ``member_id`` (FENCED_INSTANCE_ID: another member took
    it over); then ``member_id`` must be a member (UNKNOWN_MEMBER_ID)."""
    if instance_id is not None:
        holder = static_member(members, instance_id)
        if holder is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if holder.member_id != member_id:
            return ErrorCode.FENCED_INSTANCE_ID
    if member_id not in members:
        return ErrorCode.UNKNOWN_MEMBER_ID
    return ErrorCode.NONE


def common_protocols(members: Sequence[Member]) -> set[str]:
    """The protocol names every one of ``members`` (at least one) supports."""
    names = {p.name for p in members[0].spec.protocols}
    for m in members[1:]:
        names &= {p.name for p in m.spec.protocols}
    return names


def supports(others: Sequence[Member], spec: MemberSpec) -> bool:
    """Whether a member described by ``spec`` may be in a group with ``others``."""
    return incompatibility(others, spec) is None


def incompatibility(others: Sequence[Member], spec: MemberSpec) -> str | None:
    """Why a member described by ``spec`` may not be in a group with ``others`` (its
    INCONSISTENT_GROUP_PROTOCOL message), or None if it may. Members of the gRPC door
    (the broker assigns) and of the Kafka door (the leader member assigns) never mix."""
    if not others:
        return None
    first = others[0].spec
    if spec.server_assign != first.server_assign:
        doors = ("the gRPC door, where the broker assigns partitions",
                 "the Kafka door, where the leader member assigns them")
        theirs, mine = doors if first.server_assign else doors[::-1]
        return (f"the group's members joined through {theirs}; a member of {mine} "
                "cannot join the same group (use another group id)")
    if spec.protocol_type != first.protocol_type:
        return (f"the group's protocol type is {first.protocol_type!r}, "
                f"not {spec.protocol_type!r}")
    common = common_protocols(others)
    if not {p.name for p in spec.protocols} & common:
        return (f"none of the assignors {[p.name for p in spec.protocols]} is supported "
                f"by every member of the group (they share {sorted(common)})")
    return None


def select_protocol(members: Sequence[Member], leader: Member) -> str:
    """The vote: one vote per member for its favourite common protocol; ties go to the
    one ``leader`` prefers."""
    candidates = common_protocols(members)
    votes = dict.fromkeys(candidates, 0)
    for m in members:
        votes[next(p.name for p in m.spec.protocols if p.name in candidates)] += 1
    preference = [p.name for p in leader.spec.protocols if p.name in candidates]
    return max(preference, key=lambda name: (votes[name], -preference.index(name)))
