"""The group coordinator: transition table, scenarios with exact traces, random sequences.

``Door`` plays a front door: it parks one answer per waiting join or sync and delivers
events, asserting that the coordinator never answers a request nobody is waiting for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.broker.assignors import round_robin
from sentinel.broker.group_config import GroupConfig
from sentinel.broker.group_events import (
    ErrorCode,
    Event,
    GroupDeleted,
    JoinCompleted,
    JoinFailed,
    JoinProtocol,
    JoinResult,
    MemberAssignment,
    MemberRemoved,
    MemberSubscription,
    OffsetAndMetadata,
    Outcome,
    RemovalReason,
    StateChanged,
    SyncCompleted,
    SyncFailed,
)
from sentinel.broker.group_state import (
    TRANSITIONS,
    GroupState,
    IllegalTransitionError,
    Trigger,
    next_state,
)
from sentinel.broker.groups import GroupCoordinator
from sentinel.errors import InvalidArgumentError, StateError

E = GroupState.EMPTY
P = GroupState.PREPARING_REBALANCE
C = GroupState.COMPLETING_REBALANCE
S = GroupState.STABLE
D = GroupState.DEAD

SESSION = 10.0
REBALANCE = 30.0


def mid(client: str, n: int) -> str:
    """The id the default (counter) id source gives the ``n``-th new member."""
    return f"{client}-00000000-0000-0000-0000-{n:012x}"


def rr(*topics: str, metadata: bytes = b"") -> list[JoinProtocol]:
    return [JoinProtocol("roundrobin", topics, metadata)]


class Door:
    def __init__(
        self,
        counts: Mapping[str, int] | None = None,
        config: GroupConfig | None = None,
    ) -> None:
        self.counts = dict(counts if counts is not None else {"t": 6})
        self.coord = GroupCoordinator(
            self.counts.get, config or GroupConfig(min_session_timeout_s=1.0)
        )
        self.now = 0.0
        self.waiting_join: set[tuple[str, str]] = set()
        self.waiting_sync: set[tuple[str, str]] = set()
        self.joins: dict[tuple[str, str], JoinCompleted | JoinFailed] = {}
        self.syncs: dict[tuple[str, str], SyncCompleted | SyncFailed] = {}
        self.trace: list[Event] = []

    def join(
        self,
        group: str,
        member: str | None = None,
        *,
        client: str = "c",
        protocols: Sequence[JoinProtocol] | None = None,
        server: bool = True,
        session: float = SESSION,
        rebalance: float | None = REBALANCE,
        **kw: Any,
    ) -> JoinResult:
        res = self.coord.join(
            group,
            member,
            client_id=client,
            session_timeout_s=session,
            rebalance_timeout_s=rebalance,
            protocols=protocols if protocols is not None else rr("t"),
            now=self.now,
            server_assign=server,
            **kw,
        )
        if res.error is ErrorCode.NONE:
            self.waiting_join.add((group, res.member_id))
            self.joins.pop((group, res.member_id), None)
        self.deliver(res.events)
        return res

    def sync(
        self,
        group: str,
        member: str,
        generation: int,
        assignments: Mapping[str, MemberAssignment] | None = None,
    ) -> Outcome:
        out = self.coord.sync(group, member, generation, assignments, self.now)
        if out.error is ErrorCode.NONE:
            self.waiting_sync.add((group, member))
            self.syncs.pop((group, member), None)
        self.deliver(out.events)
        return out

    def heartbeat(self, group: str, member: str, generation: int | None = None) -> ErrorCode:
        if generation is None:
            generation = self.joined(group, member).generation
        return self.coord.heartbeat(group, member, generation, self.now)

    def leave(self, group: str, member: str) -> Outcome:
        out = self.coord.leave(group, member, self.now)
        self.deliver(out.events)
        return out

    def advance(self, seconds: float) -> list[Event]:
        self.now += seconds
        events = self.coord.tick(self.now)
        self.deliver(events)
        return events

    def deliver(self, events: Sequence[Event]) -> None:
        for e in events:
            self.trace.append(e)
            if isinstance(e, JoinCompleted | JoinFailed):
                key = (e.group_id, e.member_id)
                assert key in self.waiting_join, f"nobody waits for {e}"
                self.waiting_join.remove(key)
                self.joins[key] = e
            elif isinstance(e, SyncCompleted | SyncFailed):
                key = (e.group_id, e.member_id)
                assert key in self.waiting_sync, f"nobody waits for {e}"
                self.waiting_sync.remove(key)
                self.syncs[key] = e

    def joined(self, group: str, member: str) -> JoinCompleted:
        e = self.joins[group, member]
        assert isinstance(e, JoinCompleted), e
        return e

    def owned(self, group: str, member: str) -> dict[str, tuple[int, ...]]:
        assignment = self.joined(group, member).assignment
        assert assignment is not None
        return {t: tuple(p) for t, p in assignment.partitions.items()}

    def state(self, group: str) -> GroupState:
        return self.coord.describe_group(group).state

    def trace_since(self, mark: int) -> list[Event]:
        return self.trace[mark:]


A, B, Cc = mid("a", 1), mid("b", 2), mid("c", 3)


def three_stable(door: Door) -> None:
    """a, b, c join one after another (no initial delay); each join rebalances."""
    assert door.join("g", client="a").member_id == A
    assert door.join("g", client="b").member_id == B
    assert door.heartbeat("g", A) is ErrorCode.REBALANCE_IN_PROGRESS
    door.join("g", A, client="a")
    assert door.join("g", client="c").member_id == Cc
    for m, client in ((A, "a"), (B, "b")):
        assert door.heartbeat("g", m) is ErrorCode.REBALANCE_IN_PROGRESS
        door.join("g", m, client=client)


# --- the transition table -------------------------------------------------------------


def test_transition_table_is_kafkas() -> None:
    edges = {(old, new) for (old, _), new in TRANSITIONS.items()}
    assert edges == {
        (E, P), (E, D),
        (P, C), (P, E), (P, D),
        (C, S), (C, P), (C, D),
        (S, P), (S, D),
    }  # fmt: skip


@pytest.mark.parametrize("state", list(GroupState))
@pytest.mark.parametrize("trigger", list(Trigger))
def test_anything_not_in_the_table_raises(state: GroupState, trigger: Trigger) -> None:
    if (state, trigger) in TRANSITIONS:
        assert next_state(state, trigger) is TRANSITIONS[state, trigger]
    else:
        with pytest.raises(IllegalTransitionError) as info:
            next_state(state, trigger)
        assert isinstance(info.value, StateError)
        assert (info.value.state, info.value.trigger) == (state, trigger)


def test_dead_is_terminal_and_state_events_validate() -> None:
    assert not [k for k in TRANSITIONS if k[0] is D]
    StateChanged("g", S, P, 1, "ok")
    with pytest.raises(InvalidArgumentError):
        StateChanged("g", S, C, 1, "no such edge")
    with pytest.raises(InvalidArgumentError):
        JoinFailed("g", "m", ErrorCode.NONE)


# --- server-side assignment (the gRPC door) -------------------------------------------


def test_first_member_alone_gets_everything_at_once() -> None:
    door = Door()
    res = door.join("g", client="a")
    assert res == JoinResult(ErrorCode.NONE, A, res.events)
    assert list(res.events) == [
        StateChanged("g", E, P, 0, f"member {A} joined"),
        StateChanged("g", P, C, 1, "1 members joined"),
        StateChanged("g", C, S, 1, "coordinator assigned with roundrobin"),
        JoinCompleted(
            "g", A, 1, "consumer", "roundrobin", A, (), MemberAssignment({"t": range(6)})
        ),
    ]


def test_events_are_hashable_values() -> None:
    one = MemberAssignment({"t": [2, 0], "u": []}, b"x")
    assert one == MemberAssignment({"t": (0, 2)}, b"x")
    assert one.topic_partitions() == [("t", 0), ("t", 2)]
    event = JoinCompleted("g", A, 1, "consumer", "range", A, (), one)
    assert hash(event) == hash(JoinCompleted("g", A, 1, "consumer", "range", A, (), one))
    with pytest.raises(InvalidArgumentError):
        JoinCompleted("g", A, 0, "consumer", "range", A)
    with pytest.raises(InvalidArgumentError):  # only the leader gets the member list
        JoinCompleted("g", B, 1, "consumer", "range", A, (MemberSubscription(A, (), b""),))


def test_three_members_over_six_partitions_get_two_each() -> None:
    door = Door()
    three_stable(door)
    assert door.state("g") is S
    assert {m: door.joined("g", m).generation for m in (A, B, Cc)} == {A: 3, B: 3, Cc: 3}
    assert door.owned("g", A) == {"t": (0, 3)}
    assert door.owned("g", B) == {"t": (1, 4)}
    assert door.owned("g", Cc) == {"t": (2, 5)}
    assert not door.waiting_join


def test_initial_delay_gathers_members_into_one_generation() -> None:
    door = Door(config=GroupConfig(min_session_timeout_s=1.0, initial_rebalance_delay_s=3.0))
    door.join("g", client="a")
    door.now = 0.5
    door.join("g", client="b")
    door.now = 1.0
    door.join("g", client="c")
    assert door.advance(1.9) == []  # t = 2.9
    assert door.advance(0.1) == [  # t = 3.0
        StateChanged("g", P, C, 1, "3 members joined"),
        StateChanged("g", C, S, 1, "coordinator assigned with roundrobin"),
        JoinCompleted("g", A, 1, "consumer", "roundrobin", A, (), MemberAssignment({"t": [0, 3]})),
        JoinCompleted("g", B, 1, "consumer", "roundrobin", A, (), MemberAssignment({"t": [1, 4]})),
        JoinCompleted("g", Cc, 1, "consumer", "roundrobin", A, (), MemberAssignment({"t": [2, 5]})),
    ]


def test_leave_moves_partitions_to_the_rest_in_the_next_generation() -> None:
    door = Door()
    three_stable(door)
    mark = len(door.trace)
    assert door.leave("g", Cc).error is ErrorCode.NONE
    assert door.trace_since(mark) == [
        MemberRemoved("g", Cc, RemovalReason.LEFT),
        StateChanged("g", S, P, 3, f"member {Cc} left"),
    ]
    assert door.heartbeat("g", A) is ErrorCode.REBALANCE_IN_PROGRESS
    door.join("g", A, client="a")
    assert (("g", A)) in door.waiting_join  # b has not rejoined yet
    door.join("g", B, client="b")
    assert door.joined("g", A).generation == door.joined("g", B).generation == 4
    assert door.owned("g", A) == {"t": (0, 2, 4)}
    assert door.owned("g", B) == {"t": (1, 3, 5)}
    assert door.heartbeat("g", Cc, 3) is ErrorCode.UNKNOWN_MEMBER_ID
    assert door.leave("g", Cc).error is ErrorCode.UNKNOWN_MEMBER_ID


def test_session_timeout_expires_a_member_and_rebalances() -> None:
    door = Door()
    three_stable(door)
    for _ in range(2):  # a and b heartbeat every 4 s; c is silent
        door.advance(4.0)
        assert door.heartbeat("g", A) is ErrorCode.NONE
        assert door.heartbeat("g", B) is ErrorCode.NONE
    assert door.state("g") is S
    # c's session (10 s from its join at t = 0) ended at t = 10; the tick at t = 12 sees it.
    door.advance(4.0)
    removed = [e for e in door.trace if isinstance(e, MemberRemoved)]
    assert removed == [MemberRemoved("g", Cc, RemovalReason.SESSION_TIMEOUT)]
    assert StateChanged("g", S, P, 3, f"session timeout of {Cc}") in door.trace
    assert door.heartbeat("g", A) is ErrorCode.REBALANCE_IN_PROGRESS
    door.join("g", A, client="a")
    door.join("g", B, client="b")
    assert door.joined("g", B).generation == 4
    assert door.owned("g", B) == {"t": (1, 3, 5)}


def test_member_waiting_in_a_rebalance_is_not_expired_by_its_session() -> None:
    door = Door()
    door.join("g", client="a")
    door.join("g", client="b")  # waits for a to rejoin
    door.advance(SESSION + 1)  # b waits; a has not heartbeated: a expires, b completes
    assert MemberRemoved("g", A, RemovalReason.SESSION_TIMEOUT) in door.trace
    assert door.joined("g", B).generation == 2
    assert door.owned("g", B) == {"t": tuple(range(6))}


def test_member_not_rejoining_within_rebalance_timeout_is_dropped() -> None:
    door = Door()
    door.join("g", client="a")
    door.join("g", client="b")
    door.join("g", A, client="a")  # generation 2: a and b
    door.join("g", client="c")  # rebalance; a rejoins, b only heartbeats
    door.join("g", A, client="a")
    for _ in range(5):  # t = 5 .. 25
        door.advance(5.0)
        assert door.heartbeat("g", B, 2) is ErrorCode.REBALANCE_IN_PROGRESS
    assert door.state("g") is P and ("g", A) in door.waiting_join
    mark = len(door.trace)
    door.advance(5.0)  # t = 30: the rebalance timeout has passed; the phase ends without b
    assert door.trace_since(mark)[:2] == [
        MemberRemoved("g", B, RemovalReason.REBALANCE_TIMEOUT),
        StateChanged("g", P, C, 3, "2 members joined"),
    ]
    assert door.owned("g", A) == {"t": (0, 2, 4)}
    assert door.owned("g", Cc) == {"t": (1, 3, 5)}
    assert door.heartbeat("g", B, 2) is ErrorCode.UNKNOWN_MEMBER_ID


def test_heartbeat_errors() -> None:
    door = Door()
    door.join("g", client="a")
    assert door.heartbeat("g", A, 1) is ErrorCode.NONE
    assert door.heartbeat("g", A, 0) is ErrorCode.ILLEGAL_GENERATION
    assert door.heartbeat("g", A, 2) is ErrorCode.ILLEGAL_GENERATION
    assert door.heartbeat("g", "nobody", 1) is ErrorCode.UNKNOWN_MEMBER_ID
    assert door.heartbeat("other", A, 1) is ErrorCode.UNKNOWN_MEMBER_ID
    assert door.join("g", "nobody").error is ErrorCode.UNKNOWN_MEMBER_ID
    assert door.join("other", "nobody").error is ErrorCode.UNKNOWN_MEMBER_ID


def test_rejoin_in_stable_with_same_subscription_answers_at_once() -> None:
    door = Door()
    door.join("g", client="a")
    res = door.join("g", A, client="a")
    assert [type(e) for e in res.events] == [JoinCompleted]
    assert door.joined("g", A).generation == 1 and door.state("g") is S
    res = door.join("g", A, client="a", protocols=rr("t", "u"))  # new subscription
    assert isinstance(res.events[0], StateChanged) and door.joined("g", A).generation == 2


def test_leave_while_waiting_to_join_fails_that_join() -> None:
    door = Door()
    door.join("g", client="a")
    door.join("g", client="b")
    door.leave("g", B)
    assert door.joins["g", B] == JoinFailed("g", B, ErrorCode.UNKNOWN_MEMBER_ID)
    # a was the only one left to rejoin; the phase ends when it does.
    door.join("g", A, client="a")
    assert door.joined("g", A).generation == 2


def test_partition_count_change_rebalances_subscribed_groups() -> None:
    door = Door(counts={"t": 2, "u": 1})
    door.join("g", client="a")
    door.join("h", client="b", protocols=rr("u"))
    door.counts["t"] = 4
    events = door.coord.partitions_changed("t", door.now)
    assert events == [StateChanged("g", S, P, 1, "partitions of topic t changed")]
    assert door.state("h") is S
    assert door.heartbeat("g", A) is ErrorCode.REBALANCE_IN_PROGRESS
    door.join("g", A, client="a")
    assert door.owned("g", A) == {"t": (0, 1, 2, 3)}


def test_range_is_chosen_when_everyone_prefers_it_and_unknown_topics_get_nothing() -> None:
    door = Door(counts={"t": 5})
    both = [JoinProtocol("range", ("t", "nope")), JoinProtocol("roundrobin", ("t",))]
    door.join("g", client="a", protocols=both)
    door.join("g", client="b", protocols=both)
    door.join("g", A, client="a", protocols=both)
    assert door.joined("g", A).protocol == "range"
    assert door.owned("g", A) == {"t": (0, 1, 2)}
    assert door.owned("g", B) == {"t": (3, 4)}


# --- Kafka mode: the leader assigns ---------------------------------------------------


def test_kafka_leader_sync_flow() -> None:
    door = Door()
    a_meta, b_meta = b"\x00sub-a", b"\x00sub-b"
    door.join("g", client="a", server=False, protocols=rr("t", metadata=a_meta))
    lead = door.joined("g", A)
    assert lead.is_leader and lead.assignment is None
    assert lead.members == (MemberSubscription(A, ("t",), a_meta),)
    assert door.state("g") is C
    assert door.heartbeat("g", A) is ErrorCode.NONE  # heartbeats are fine while syncing
    door.sync("g", A, 1, {A: MemberAssignment({"t": range(6)}, b"raw-a")})
    assert door.syncs["g", A] == SyncCompleted(
        "g", A, 1, "consumer", "roundrobin", MemberAssignment({"t": range(6)}, b"raw-a")
    )
    # b joins; a learns of it from its heartbeat and rejoins as leader.
    door.join("g", client="b", server=False, protocols=rr("t", metadata=b_meta))
    assert door.heartbeat("g", A) is ErrorCode.REBALANCE_IN_PROGRESS
    door.join("g", A, client="a", server=False, protocols=rr("t", metadata=a_meta))
    lead, follower = door.joined("g", A), door.joined("g", B)
    assert lead.generation == follower.generation == 2
    assert lead.members == (
        MemberSubscription(A, ("t",), a_meta),
        MemberSubscription(B, ("t",), b_meta),
    )
    assert follower.members == () and not follower.is_leader
    # the follower syncs first and waits; the leader's sync answers both.
    assert door.sync("g", B, 2) == Outcome(ErrorCode.NONE, ())
    mark = len(door.trace)
    plan = {
        A: MemberAssignment({"t": [0, 2, 4]}, b"ra"),
        B: MemberAssignment({"t": [1, 3, 5]}, b"rb"),
    }
    door.sync("g", A, 2, plan)
    assert door.trace_since(mark) == [
        StateChanged("g", C, S, 2, f"leader {A} sent the assignment"),
        SyncCompleted("g", A, 2, "consumer", "roundrobin", plan[A]),
        SyncCompleted("g", B, 2, "consumer", "roundrobin", plan[B]),
    ]
    # a sync in Stable answers at once; a stale one is refused.
    assert door.sync("g", B, 2).events == (
        SyncCompleted("g", B, 2, "consumer", "roundrobin", plan[B]),
    )
    assert door.sync("g", B, 1).error is ErrorCode.ILLEGAL_GENERATION
    described = door.coord.describe_group("g")
    assert [(m.member_id, m.metadata, m.assignment) for m in described.members] == [
        (A, a_meta, plan[A]),
        (B, b_meta, plan[B]),
    ]


def test_kafka_rebalance_fails_waiting_syncs_and_leader_rejoin_forces_rebalance() -> None:
    door = Door()
    door.join("g", client="a", server=False)
    door.sync("g", A, 1, {})
    door.join("g", client="b", server=False)
    door.join("g", A, client="a", server=False)  # generation 2, CompletingRebalance
    door.sync("g", B, 2)  # waits for the leader
    door.join("g", B, client="b", server=False)  # same metadata: answered again at once
    assert door.joined("g", B).generation == 2
    door.join("g", B, client="b", server=False, protocols=rr("t", "u"))  # changed: rebalance
    assert door.syncs["g", B] == SyncFailed("g", B, ErrorCode.REBALANCE_IN_PROGRESS)
    assert door.sync("g", A, 2).error is ErrorCode.REBALANCE_IN_PROGRESS
    door.join("g", A, client="a", server=False)
    door.sync("g", A, 3, {A: MemberAssignment({"t": [0]}), B: MemberAssignment({"u": [0]})})
    assert door.state("g") is S
    door.join("g", A, client="a", server=False)  # the Kafka leader rejoins: rebalance
    assert door.state("g") is P


def test_kafka_sync_timeout_removes_a_leader_that_never_assigns() -> None:
    door = Door()
    door.join("g", client="a", server=False)
    door.sync("g", A, 1, {})
    door.join("g", client="b", server=False)
    door.join("g", A, client="a", server=False)  # generation 2
    door.sync("g", B, 2)
    for _ in range(5):  # t = 5 .. 25: the leader heartbeats but never syncs; b waits
        door.advance(5.0)
        assert door.heartbeat("g", A) is ErrorCode.NONE
    assert ("g", B) in door.waiting_sync
    door.advance(5.0)  # t = 30: the rebalance timeout since generation 2 began
    assert MemberRemoved("g", A, RemovalReason.SYNC_TIMEOUT) in door.trace
    assert door.syncs["g", B] == SyncFailed("g", B, ErrorCode.REBALANCE_IN_PROGRESS)
    door.join("g", B, client="b", server=False)
    assert door.joined("g", B).is_leader and door.joined("g", B).generation == 3


def test_member_id_required_dance() -> None:
    door = Door()
    res = door.join("g", client="a", require_known_member_id=True)
    assert res == JoinResult(ErrorCode.MEMBER_ID_REQUIRED, A)
    assert door.state("g") is E
    door.join("g", A, client="a")
    assert door.joined("g", A).generation == 1
    # an id handed out but never used is forgotten after the session timeout
    res = door.join("g", client="b", require_known_member_id=True)
    door.advance(SESSION + 1)
    assert door.join("g", res.member_id, client="b").error is ErrorCode.UNKNOWN_MEMBER_ID


# --- refusals and bounds --------------------------------------------------------------


def test_bounds_and_protocol_refusals() -> None:
    door = Door(config=GroupConfig(min_session_timeout_s=1.0, max_group_size=2))
    assert door.join("", client="a").error is ErrorCode.INVALID_GROUP_ID
    assert door.join("g" * 256, client="a").error is ErrorCode.INVALID_GROUP_ID
    assert door.join("g", session=0.5).error is ErrorCode.INVALID_SESSION_TIMEOUT
    assert door.join("g", session=1801.0).error is ErrorCode.INVALID_SESSION_TIMEOUT
    assert door.join("g", rebalance=0.0).error is ErrorCode.INVALID_REQUEST
    assert door.join("g", client="x" * 256).error is ErrorCode.INVALID_REQUEST
    huge = [JoinProtocol("roundrobin", ("t",), b"\0" * (256 * 1024))]
    assert door.join("g", protocols=huge, server=False).error is ErrorCode.INVALID_REQUEST
    many = [JoinProtocol(f"p{i}") for i in range(33)]
    assert door.join("g", protocols=many, server=False).error is ErrorCode.INVALID_REQUEST
    assert door.join("g", protocols=[]).error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    twice = rr("t") + rr("u")
    assert door.join("g", protocols=twice).error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    assert door.join("g", protocol_type="").error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    sticky = [JoinProtocol("sticky", ("t",))]
    assert door.join("g", protocols=sticky).error is ErrorCode.UNSUPPORTED_ASSIGNOR
    assert door.coord.list_groups() == []  # nothing above left a group behind

    door.join("g", client="a")
    assert door.join("g", protocols=sticky, server=False).error is (
        ErrorCode.INCONSISTENT_GROUP_PROTOCOL  # no protocol in common
    )
    assert door.join("g", server=False).error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL  # mode
    assert door.join("g", protocol_type="connect").error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    door.join("g", client="b")
    assert door.join("g", client="c").error is ErrorCode.GROUP_MAX_SIZE_REACHED


def test_unknown_assignors_are_dropped_in_server_mode() -> None:
    door = Door()
    door.join("g", client="a", protocols=[JoinProtocol("sticky", ("t",)), *rr("t")])
    assert door.joined("g", A).protocol == "roundrobin"


def test_time_going_backwards_is_a_caller_error() -> None:
    door = Door()
    door.advance(5.0)
    with pytest.raises(InvalidArgumentError):
        door.coord.tick(4.0)
    with pytest.raises(InvalidArgumentError):
        door.coord.heartbeat("g", "m", 1, float("nan"))


def test_config_is_validated() -> None:
    with pytest.raises(InvalidArgumentError):
        GroupConfig(min_session_timeout_s=10.0, max_session_timeout_s=5.0)
    with pytest.raises(InvalidArgumentError):
        GroupConfig(max_group_size=0)


# --- offsets --------------------------------------------------------------------------

OM = OffsetAndMetadata


def test_offsets_are_visible_only_once_persisted_and_load_back() -> None:
    door = Door()
    door.join("g", client="a")
    res = door.coord.commit_offsets("g", A, 1, {("t", 0): OM(10, "m"), ("t", 1): OM(7)}, 0.0)
    assert res.error is ErrorCode.NONE and res.partition_errors == {}
    assert res.to_persist is not None
    assert door.coord.fetch_offsets("g") == {}  # not durable yet
    door.coord.offsets_persisted(res.to_persist)
    assert door.coord.fetch_offsets("g") == {("t", 0): OM(10, "m"), ("t", 1): OM(7)}
    assert door.coord.fetch_offsets("g", [("t", 1), ("t", 5)]) == {("t", 1): OM(7)}
    assert door.coord.fetch_offsets("nope") == {}

    restarted = GroupCoordinator(lambda _: 6)
    restarted.load_offsets("g", dict(res.to_persist.offsets))
    assert restarted.fetch_offsets("g") == door.coord.fetch_offsets("g")
    assert restarted.describe_group("g").state is E
    restarted.tick(100.0)
    assert restarted.fetch_offsets("g") != {}, "a group holding offsets is not reaped"


def test_commit_generation_checks() -> None:
    door = Door()
    door.join("g", client="a")
    door.join("g", client="b")
    door.join("g", A, client="a")  # generation 2
    offsets = {("t", 0): OM(1)}
    commit = door.coord.commit_offsets
    assert commit("g", A, 1, offsets, door.now).error is ErrorCode.ILLEGAL_GENERATION
    assert commit("g", A, 1, offsets, door.now).to_persist is None
    assert commit("g", "x", 2, offsets, door.now).error is ErrorCode.UNKNOWN_MEMBER_ID
    assert commit("g", "", -1, offsets, door.now).error is ErrorCode.UNKNOWN_MEMBER_ID
    assert commit("g", A, 2, offsets, door.now).error is ErrorCode.NONE
    # while rebalancing, the old generation may still commit (before it rejoins) ...
    door.join("g", client="c")
    assert commit("g", B, 2, offsets, door.now).error is ErrorCode.NONE
    # ... but not in CompletingRebalance, before the assignment is known
    kafka = Door()
    kafka.join("g", client="a", server=False)
    assert kafka.coord.commit_offsets("g", A, 1, offsets, 0.0).error is (
        ErrorCode.REBALANCE_IN_PROGRESS
    )


def test_standalone_commits_and_metadata_bound() -> None:
    door = Door()
    big = "x" * 4097
    res = door.coord.commit_offsets("solo", "", -1, {("t", 0): OM(5), ("t", 1): OM(6, big)}, 0.0)
    assert res.error is ErrorCode.NONE
    assert res.partition_errors == {("t", 1): ErrorCode.OFFSET_METADATA_TOO_LARGE}
    assert res.error_for(("t", 1)) is ErrorCode.OFFSET_METADATA_TOO_LARGE
    assert res.error_for(("t", 0)) is ErrorCode.NONE
    assert res.to_persist is not None and dict(res.to_persist.offsets) == {("t", 0): OM(5)}
    door.coord.offsets_persisted(res.to_persist)
    assert door.coord.fetch_offsets("solo") == {("t", 0): OM(5)}
    assert door.coord.commit_offsets("nope", "m", 3, {}, 0.0).error is ErrorCode.ILLEGAL_GENERATION
    assert door.coord.commit_offsets("", "", -1, {}, 0.0).error is ErrorCode.INVALID_GROUP_ID


# --- administration -------------------------------------------------------------------


def test_list_describe_delete_and_reap() -> None:
    door = Door()
    door.join("g", client="a")
    door.coord.load_offsets("kept", {("t", 0): OM(1)})
    listed = {(x.group_id, x.state) for x in door.coord.list_groups()}
    assert listed == {("g", S), ("kept", E)}
    assert [x.group_id for x in door.coord.list_groups([E])] == ["kept"]
    described = door.coord.describe_group("g")
    assert (described.state, described.protocol, described.generation, described.leader_id) == (
        S, "roundrobin", 1, A,
    )  # fmt: skip
    assert [(m.member_id, m.client_id, m.topics) for m in described.members] == [(A, "a", ("t",))]
    missing = door.coord.describe_group("nope")
    assert (missing.error, missing.state) == (ErrorCode.GROUP_ID_NOT_FOUND, D)

    assert door.coord.delete_group("g").error is ErrorCode.NON_EMPTY_GROUP
    assert door.coord.delete_group("nope").error is ErrorCode.GROUP_ID_NOT_FOUND
    assert door.coord.delete_group("kept").events == (
        StateChanged("kept", E, D, 0, "deleted"),
        GroupDeleted("kept"),
    )
    door.leave("g", A)
    assert door.state("g") is E and door.coord.describe_group("g").generation == 2
    events = door.advance(1.0)
    assert events == [StateChanged("g", E, D, 2, "deleted")]  # empty, no offsets: reaped
    assert door.coord.list_groups() == []


def test_unload_fails_waiting_requests_with_not_coordinator() -> None:
    door = Door()
    door.join("g", client="a")
    door.join("g", client="b")
    events = door.coord.unload()
    door.deliver(events)
    assert door.joins["g", B] == JoinFailed("g", B, ErrorCode.NOT_COORDINATOR)
    assert events[-1] == StateChanged("g", P, D, 1, "unloaded")
    assert door.coord.list_groups() == []
    assert door.heartbeat("g", A, 1) is ErrorCode.UNKNOWN_MEMBER_ID


# --- random sequences -----------------------------------------------------------------

SERVER_GROUP, KAFKA_GROUP = "srv", "kfk"
CLIENTS = [(g, name) for g in (SERVER_GROUP, KAFKA_GROUP) for name in ("a", "b", "c", "d")]
SUBSCRIPTIONS = [("t",), ("u",), ("t", "u")]

client_st = st.integers(0, len(CLIENTS) - 1)
join_st = st.tuples(st.just("join"), client_st, st.sampled_from(SUBSCRIPTIONS), st.booleans())
op_st = st.one_of(
    st.tuples(st.just("act"), client_st),
    st.tuples(st.just("act"), client_st),
    st.tuples(st.just("act"), client_st),
    join_st,
    st.tuples(st.just("sync"), client_st),
    st.tuples(st.just("sync"), client_st),
    st.tuples(st.just("heartbeat"), client_st, st.booleans()),
    st.tuples(st.just("heartbeat"), client_st, st.booleans()),
    st.tuples(st.just("leave"), client_st),
    st.tuples(st.just("commit"), client_st, st.integers(-1, 1)),
    st.tuples(st.just("tick"), st.sampled_from([0.0, 1.0, 4.0, 9.0, 16.0])),
    st.tuples(st.just("grow"), st.sampled_from(["t", "u"])),
    st.tuples(st.just("stray"), st.sampled_from([SERVER_GROUP, KAFKA_GROUP]), st.integers(-1, 4)),
    st.tuples(st.just("unload"), st.sampled_from([SERVER_GROUP, KAFKA_GROUP]), st.integers(0, 9)),
)


class Model:
    """Clients that behave as Kafka's do, over a ``Door``, checking invariants after each step."""

    def __init__(self) -> None:
        self.door = Door(counts={"t": 3, "u": 2})
        self.ids: dict[int, str] = {}  # client -> member id it holds
        self.subscriptions: dict[int, tuple[str, ...]] = {}
        self.generations: dict[str, int] = {}

    def generation_of(self, group: str, member: str) -> int:
        answer = self.door.joins.get((group, member))
        return answer.generation if isinstance(answer, JoinCompleted) else -1

    def step(self, op: tuple[Any, ...]) -> None:
        door = self.door
        kind = op[0]
        if kind == "tick":
            door.advance(op[1])
            return
        if kind == "grow":
            door.counts[op[1]] += 1
            door.deliver(door.coord.partitions_changed(op[1], door.now))
            return
        if kind == "unload":
            if op[2] == 0:  # rarely: it throws the whole group away
                door.deliver(door.coord.unload([op[1]]))
            return
        if kind == "stray":  # a stale or confused client
            door.heartbeat(op[1], "stray", op[2])
            door.coord.commit_offsets(op[1], "stray", op[2], {("t", 0): OM(1)}, door.now)
            door.sync(op[1], "stray", op[2])
            return
        group = CLIENTS[op[1]][0]
        member = self.ids.get(op[1])
        if kind == "join":
            self.subscriptions[op[1]] = op[2]
            self.join(op[1], op[3])
            return
        if member is None:
            if kind == "act":
                self.join(op[1], False)
            return
        generation = self.generation_of(group, member)
        if kind == "act":
            self.act(op[1], group, member, generation)
        elif kind == "sync":
            door.sync(group, member, generation, self.plan(group, member))
        elif kind == "heartbeat":
            error = door.heartbeat(group, member, generation)
            if error is ErrorCode.UNKNOWN_MEMBER_ID:
                del self.ids[op[1]]
            elif error is ErrorCode.REBALANCE_IN_PROGRESS and op[2]:
                self.join(op[1], False)  # as a Kafka client does (or not: a slow one)
        elif kind == "leave":
            door.leave(group, member)
            del self.ids[op[1]]
        elif kind == "commit":
            gen = generation + op[2]
            res = door.coord.commit_offsets(group, member, gen, {("t", 0): OM(1)}, door.now)
            if res.to_persist is not None:
                door.coord.offsets_persisted(res.to_persist)

    def act(self, client: int, group: str, member: str, generation: int) -> None:
        """The next thing a well-behaved client does."""
        door = self.door
        key = (group, member)
        synced = door.syncs.get(key)
        if key in door.waiting_join or key in door.waiting_sync:
            error = door.heartbeat(group, member, generation)
            error = ErrorCode.NONE if error is ErrorCode.REBALANCE_IN_PROGRESS else error
        elif (
            group == KAFKA_GROUP
            and generation > 0
            and not (isinstance(synced, SyncCompleted) and synced.generation == generation)
        ):
            error = door.sync(group, member, generation, self.plan(group, member)).error
        else:
            error = door.heartbeat(group, member, generation)
        if error is ErrorCode.UNKNOWN_MEMBER_ID:
            del self.ids[client]
        elif error in (ErrorCode.REBALANCE_IN_PROGRESS, ErrorCode.ILLEGAL_GENERATION):
            self.join(client, False)

    def join(self, client: int, require_known_member_id: bool) -> None:
        group, name = CLIENTS[client]
        res = self.door.join(
            group,
            self.ids.get(client),
            client=name,
            protocols=rr(*self.subscriptions.get(client, ("t",))),
            server=group == SERVER_GROUP,
            rebalance=15.0,
            require_known_member_id=require_known_member_id,
        )
        if res.error in (ErrorCode.NONE, ErrorCode.MEMBER_ID_REQUIRED):
            self.ids[client] = res.member_id
        elif res.error is ErrorCode.UNKNOWN_MEMBER_ID:
            self.ids.pop(client, None)

    def plan(self, group: str, member: str) -> dict[str, MemberAssignment] | None:
        """What a Kafka leader sends: round robin over the members it was given."""
        answer = self.door.joins.get((group, member))
        if not isinstance(answer, JoinCompleted) or not answer.members:
            return None
        subs = {m.member_id: m.topics for m in answer.members}
        return {m: MemberAssignment(p) for m, p in round_robin(subs, self.door.counts).items()}

    def check(self) -> None:
        door = self.door
        waiting_join, waiting_sync = set(), set()
        for group_id, group in door.coord._groups.items():
            last = self.generations.get(group_id, 0)
            assert group.generation >= last, "generations only go up"
            self.generations[group_id] = group.generation
            for m in group.members.values():
                if m.awaiting_join:
                    assert group.state is P
                    waiting_join.add((group_id, m.member_id))
                if m.awaiting_sync:
                    assert group.state is C
                    waiting_sync.add((group_id, m.member_id))
            if group.members:
                assert group.leader_id in group.members
            if group.state is S:
                assert all(m.assignment is not None for m in group.members.values())
                if group_id == SERVER_GROUP:
                    self.check_cover(door.coord.describe_group(group_id).members)
        for group_id in set(self.generations) - set(door.coord._groups):
            del self.generations[group_id]  # reaped: a new group starts again at 0
        # Every parked request is still known to the coordinator, and nothing else is.
        assert waiting_join == door.waiting_join
        assert waiting_sync == door.waiting_sync

    def check_cover(self, members: Sequence[Any]) -> None:
        owners: list[tuple[str, int]] = []
        for m in members:
            for topic, parts in m.assignment.partitions.items():
                assert topic in m.topics
                owners.extend((topic, p) for p in parts)
        subscribed = {t for m in members for t in m.topics}
        wanted = [(t, p) for t in sorted(subscribed) for p in range(self.door.counts[t])]
        assert sorted(owners) == wanted, "each partition owned by exactly one member"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op_st, min_size=10, max_size=80))
def test_random_sequences_keep_invariants(ops: list[tuple[Any, ...]]) -> None:
    model = Model()
    for op in ops:
        model.step(op)
        model.check()
    # Left alone long enough, every member expires and every group is reaped or Empty.
    for _ in range(4):
        model.door.advance(20.0)
        model.check()
    assert not model.door.waiting_join and not model.door.waiting_sync
    assert all(x.state is E for x in model.door.coord.list_groups())
