"""Static membership (KIP-345, ``group.instance.id``) in the group coordinator, pure.

Kafka's classic coordinator, as these tests pin it:

- a new member with a known instance id replaces the member holding it: a new member
  id, the old one fenced (FENCED_INSTANCE_ID on any request naming the instance), and
  in a Stable group with unchanged protocols no rebalance: same generation, the old
  member's assignment and leadership (answered as a follower, as Kafka answers JoinGroup
  before v9, so that the client does not reassign and rejoin);
- a static member's session timeout still removes it and rebalances;
- LeaveGroup v3+ names several members, each answered on its own; an empty member id
  with an instance id removes that instance (the admin tools' removal).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sentinel.broker.group_config import GroupConfig
from sentinel.broker.group_events import (
    ErrorCode,
    Event,
    JoinCompleted,
    JoinFailed,
    JoinProtocol,
    JoinResult,
    MemberAssignment,
    MemberRemoved,
    OffsetAndMetadata,
    RemovalReason,
    StateChanged,
    SyncCompleted,
    SyncFailed,
)
from sentinel.broker.group_state import GroupState
from sentinel.broker.groups import GroupCoordinator

SESSION = 10.0
G = "g"
P = GroupState.PREPARING_REBALANCE
C = GroupState.COMPLETING_REBALANCE
S = GroupState.STABLE
SHARE_A = MemberAssignment({"t": [0, 1]}, b"share-a")
SHARE_B = MemberAssignment({"t": [2, 3]}, b"share-b")


def protocols(*topics: str) -> list[JoinProtocol]:
    return [JoinProtocol("range", topics, b"sub:" + ",".join(topics).encode())]


class Door:
    """A Kafka door in miniature: every request is a Kafka-mode (leader assigns) one."""

    def __init__(self, config: GroupConfig | None = None) -> None:
        self.coord = GroupCoordinator(
            {"t": 4, "u": 4}.get,
            config or GroupConfig(min_session_timeout_s=1.0, initial_rebalance_delay_s=1.0),
        )
        self.now = 0.0
        self.events: list[Event] = []

    def join(
        self,
        member_id: str = "",
        instance: str | None = None,
        topics: Sequence[str] = ("t",),
        *,
        client: str = "c",
        require_known: bool = False,
    ) -> JoinResult:
        result = self.coord.join(
            G,
            member_id or None,
            client_id=client,
            session_timeout_s=SESSION,
            rebalance_timeout_s=SESSION,
            protocols=protocols(*topics),
            now=self.now,
            group_instance_id=instance,
            require_known_member_id=require_known,
        )
        self.events.extend(result.events)
        return result

    def sync(
        self,
        member_id: str,
        generation: int,
        instance: str | None = None,
        assignments: Mapping[str, MemberAssignment] | None = None,
    ) -> ErrorCode:
        outcome = self.coord.sync(
            G, member_id, generation, assignments, self.now, group_instance_id=instance
        )
        self.events.extend(outcome.events)
        return outcome.error

    def heartbeat(self, member_id: str, generation: int, instance: str | None = None
                  ) -> ErrorCode:
        return self.coord.heartbeat(G, member_id, generation, self.now, group_instance_id=instance)

    def commit(self, member_id: str, generation: int, instance: str | None = None) -> ErrorCode:
        result = self.coord.commit_offsets(
            G, member_id, generation, {("t", 0): OffsetAndMetadata(5)}, self.now,
            group_instance_id=instance,
        )
        return result.error

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.events.extend(self.coord.tick(self.now))

    def since(self, mark: int) -> list[Event]:
        return self.events[mark:]

    def answer(self, member_id: str, kind: type[Event]) -> Event:
        """The last join or sync answer for ``member_id`` of ``kind``'s family."""
        family = (JoinCompleted, JoinFailed) if kind in (JoinCompleted, JoinFailed) else (
            SyncCompleted, SyncFailed)
        found = [e for e in self.events if isinstance(e, family) and e.member_id == member_id]
        assert found, f"no answer for {member_id}"
        assert isinstance(found[-1], kind), found[-1]
        return found[-1]

    def state(self) -> GroupState:
        return self.coord.describe_group(G).state


def stable_pair(door: Door) -> tuple[str, str]:
    """Static members ia (the leader) and ib in generation 1, Stable, ia's share t0-1."""
    a = door.join(instance="ia", client="a").member_id
    b = door.join(instance="ib", client="b").member_id
    door.advance(1.0)  # the initial delay: both land in generation 1
    assert door.state() is C
    assert door.sync(b, 1, "ib") is ErrorCode.NONE
    assert door.sync(a, 1, "ia", {a: SHARE_A, b: SHARE_B}) is ErrorCode.NONE
    assert door.state() is S
    return a, b


def test_a_new_static_member_is_admitted_without_member_id_required() -> None:
    door = Door()
    result = door.join(instance="ia", require_known=True)
    assert result.error is ErrorCode.NONE and result.member_id
    door.advance(1.0)
    joined = door.answer(result.member_id, JoinCompleted)
    assert isinstance(joined, JoinCompleted) and joined.generation == 1
    assert [m.group_instance_id for m in joined.members] == ["ia"]


def test_static_rejoin_with_the_same_protocols_keeps_generation_and_assignment() -> None:
    door = Door()
    a, b = stable_pair(door)
    mark = len(door.events)
    door.advance(3.0)  # the old ib is gone without a LeaveGroup (a restart)
    rejoined = door.join(instance="ib", client="b")
    b2 = rejoined.member_id
    assert rejoined.error is ErrorCode.NONE and b2 not in (a, b)
    assert door.state() is S
    assert not [e for e in door.since(mark) if isinstance(e, StateChanged)]
    joined = door.answer(b2, JoinCompleted)
    assert isinstance(joined, JoinCompleted)
    assert (joined.generation, joined.leader_id, joined.members) == (1, a, ())
    assert door.sync(b2, 1, "ib") is ErrorCode.NONE
    synced = door.answer(b2, SyncCompleted)
    assert isinstance(synced, SyncCompleted) and synced.assignment == SHARE_B
    assert door.heartbeat(a, 1, "ia") is ErrorCode.NONE  # nobody else rebalances
    described = {m.member_id: m.group_instance_id for m in door.coord.describe_group(G).members}
    assert described == {a: "ia", b2: "ib"}


def test_the_replaced_member_id_is_fenced_on_heartbeat_sync_commit_and_join() -> None:
    door = Door()
    a, b = stable_pair(door)
    b2 = door.join(instance="ib", client="b").member_id
    assert door.heartbeat(b, 1, "ib") is ErrorCode.FENCED_INSTANCE_ID
    assert door.sync(b, 1, "ib") is ErrorCode.FENCED_INSTANCE_ID
    assert door.commit(b, 1, "ib") is ErrorCode.FENCED_INSTANCE_ID
    assert door.join(b, "ib", client="b").error is ErrorCode.FENCED_INSTANCE_ID
    assert door.heartbeat(b, 1) is ErrorCode.UNKNOWN_MEMBER_ID  # no instance id: unknown
    # Another member's instance id is not yours.
    assert door.heartbeat(a, 1, "ib") is ErrorCode.FENCED_INSTANCE_ID
    assert door.heartbeat(a, 1, "ic") is ErrorCode.UNKNOWN_MEMBER_ID
    assert door.heartbeat(b2, 1, "ib") is ErrorCode.NONE
    assert door.commit(b2, 1, "ib") is ErrorCode.NONE
    assert door.state() is S


def test_a_replaced_leader_leads_but_is_answered_as_a_follower_so_nothing_rebalances(
) -> None:
    door = Door()
    a, b = stable_pair(door)
    a2 = door.join(instance="ia", client="a").member_id
    assert door.heartbeat(a, 1, "ia") is ErrorCode.FENCED_INSTANCE_ID
    joined = door.answer(a2, JoinCompleted)
    assert isinstance(joined, JoinCompleted)
    # Kafka's answer before JoinGroup v9: the old leader id, no members to assign.
    assert (joined.generation, joined.leader_id, joined.members) == (1, a, ())
    assert door.coord.describe_group(G).leader_id == a2
    assert door.state() is S
    assert door.sync(a2, 1, "ia") is ErrorCode.NONE
    synced = door.answer(a2, SyncCompleted)
    assert isinstance(synced, SyncCompleted) and synced.assignment == SHARE_A
    # It leads the next generation, with every member's instance id.
    door.join(b, "ib", topics=("t", "u"), client="b")
    door.join(a2, "ia", client="a")
    again = door.answer(a2, JoinCompleted)
    assert isinstance(again, JoinCompleted) and again.leader_id == a2
    assert [(m.member_id, m.group_instance_id) for m in again.members] == [
        (a2, "ia"), (b, "ib")]


def test_static_rejoin_with_a_new_subscription_rebalances() -> None:
    door = Door()
    a, b = stable_pair(door)
    b2 = door.join(instance="ib", topics=("t", "u"), client="b").member_id
    assert door.state() is P
    assert door.heartbeat(a, 1, "ia") is ErrorCode.REBALANCE_IN_PROGRESS
    door.join(a, "ia", client="a")
    joined = door.answer(b2, JoinCompleted)
    assert isinstance(joined, JoinCompleted) and joined.generation == 2
    assert door.heartbeat(b, 2, "ib") is ErrorCode.FENCED_INSTANCE_ID


def test_a_replaced_member_waiting_to_join_is_answered_fenced() -> None:
    door = Door()
    a, b = stable_pair(door)
    door.join(b, "ib", topics=("t", "u"), client="b")  # a new subscription: b waits
    assert door.state() is P
    b2 = door.join(instance="ib", client="b").member_id
    failed = door.answer(b, JoinFailed)
    assert isinstance(failed, JoinFailed) and failed.error is ErrorCode.FENCED_INSTANCE_ID
    assert door.state() is P  # b2 waits in b's place for a
    door.join(a, "ia", client="a")
    joined = door.answer(b2, JoinCompleted)
    assert isinstance(joined, JoinCompleted) and joined.generation == 2
    assert door.state() is C


def test_a_replaced_member_waiting_for_its_sync_is_fenced_and_the_group_rebalances() -> None:
    door = Door()
    a = door.join(instance="ia", client="a").member_id
    b = door.join(instance="ib", client="b").member_id
    door.advance(1.0)
    assert door.state() is C
    assert door.sync(b, 1, "ib") is ErrorCode.NONE  # waits for the leader
    b2 = door.join(instance="ib", client="b").member_id
    failed = door.answer(b, SyncFailed)
    assert isinstance(failed, SyncFailed) and failed.error is ErrorCode.FENCED_INSTANCE_ID
    # The leader may have been sent the old id: Kafka rebalances rather than lose b2.
    assert door.state() is P
    door.join(a, "ia", client="a")
    joined = door.answer(b2, JoinCompleted)
    assert isinstance(joined, JoinCompleted) and joined.generation == 2


def test_a_static_members_session_timeout_removes_it_and_rebalances() -> None:
    door = Door()
    a, b = stable_pair(door)
    mark = len(door.events)
    for _ in range(4):
        door.advance(3.0)
        assert door.heartbeat(a, 1, "ia") in (ErrorCode.NONE, ErrorCode.REBALANCE_IN_PROGRESS)
    removed = [e for e in door.since(mark) if isinstance(e, MemberRemoved)]
    assert removed == [MemberRemoved(G, b, RemovalReason.SESSION_TIMEOUT)]
    assert door.heartbeat(a, 1, "ia") is ErrorCode.REBALANCE_IN_PROGRESS
    # The instance id is free again: a new ib is a new member, not a replacement.
    assert door.join(instance="ib", client="b").error is ErrorCode.NONE


def test_a_full_group_still_lets_a_static_member_replace_itself() -> None:
    door = Door(GroupConfig(min_session_timeout_s=1.0, initial_rebalance_delay_s=1.0,
                            max_group_size=2))
    stable_pair(door)
    assert door.join(instance="ic").error is ErrorCode.GROUP_MAX_SIZE_REACHED
    assert door.join(instance="ib", client="b").error is ErrorCode.NONE


def test_leave_group_v3_answers_each_member_on_its_own() -> None:
    door = Door()
    a, b = stable_pair(door)
    b2 = door.join(instance="ib", client="b").member_id
    outcomes = door.coord.leave_members(
        G,
        [(b, "ib"), (a, "ic"), ("nobody", None), (a, "ia")],
        door.now,
    )
    assert [o.error for o in outcomes] == [
        ErrorCode.FENCED_INSTANCE_ID,
        ErrorCode.UNKNOWN_MEMBER_ID,
        ErrorCode.UNKNOWN_MEMBER_ID,
        ErrorCode.NONE,
    ]
    assert [m.member_id for m in door.coord.describe_group(G).members] == [b2]
    # The admin tools remove a member by its instance id alone.
    (by_instance,) = door.coord.leave_members(G, [("", "ib")], door.now)
    assert by_instance.error is ErrorCode.NONE
    assert door.coord.describe_group(G).members == ()
    assert door.coord.leave_members("unknown", [("x", "ix")], door.now)[0].error is (
        ErrorCode.UNKNOWN_MEMBER_ID)
