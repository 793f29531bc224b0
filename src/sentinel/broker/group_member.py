"""A group member's record, and the protocol rules that look across members.

Kafka's rules, as pure functions over members:

- a member may join only if it speaks the group's protocol type and shares at least one
  protocol (assignor) with every other member (``supports``);
- when the join phase ends, each member votes for its most preferred protocol that every
  member supports, and the most votes wins (``select_protocol``); a tie goes to the
  leader's preference, so the choice is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sentinel.broker.group_events import JoinProtocol, MemberAssignment


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

    def protocol(self, name: str | None) -> JoinProtocol:
        """The member's protocol called ``name`` (its first one if there is none yet)."""
        for p in self.spec.protocols:
            if p.name == name:
                return p
        return self.spec.protocols[0]

    def keep_alive(self, now: float) -> None:
        self.session_deadline = now + self.spec.session_timeout_s


def common_protocols(members: Sequence[Member]) -> set[str]:
    """The protocol names every one of ``members`` (at least one) supports."""
    names = {p.name for p in members[0].spec.protocols}
    for m in members[1:]:
        names &= {p.name for p in m.spec.protocols}
    return names


def supports(others: Sequence[Member], spec: MemberSpec) -> bool:
    """Whether a member described by ``spec`` may be in a group with ``others``."""
    if not others:
        return True
    first = others[0].spec
    if spec.protocol_type != first.protocol_type or spec.server_assign != first.server_assign:
        return False
    return bool({p.name for p in spec.protocols} & common_protocols(others))


def select_protocol(members: Sequence[Member], leader: Member) -> str:
    """The vote: one vote per member for its favourite common protocol; ties go to the
    one ``leader`` prefers."""
    candidates = common_protocols(members)
    votes = dict.fromkeys(candidates, 0)
    for m in members:
        votes[next(p.name for p in m.spec.protocols if p.name in candidates)] += 1
    preference = [p.name for p in leader.spec.protocols if p.name in candidates]
    return max(preference, key=lambda name: (votes[name], -preference.index(name)))
