"""The consumer's fetch plan (``client/_fetch_plan``): which calls to cancel and send,
from the ready partitions and the calls in flight. Pure: inputs in, a ``Plan`` out."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.client._fetch_plan import Flight, Plan, Ready, Send, plan
from sentinel.client.types import TopicPartition

A, B = "a:1", "b:1"


def ready(
    partition: int,
    address: str | None = A,
    *,
    known_data: bool = False,
    covered_by: int | None = None,
    offset: int = 0,
) -> Ready:
    return Ready(TopicPartition("t", partition), address, offset, 1, known_data, covered_by)


def sent(result: Plan) -> list[tuple[str | None, bool, list[int], bool]]:
    return [
        (s.address, s.many, [r.tp.partition for r in s.ready], s.long_poll) for s in result.send
    ]


def test_one_fetch_many_per_broker_of_all_its_ready_partitions() -> None:
    result = plan(
        [ready(0), ready(1, B), ready(2), ready(3, None, known_data=True)],
        [],
        single_fetch=(),
        max_positions=100,
    )
    assert result.cancel == ()
    assert sent(result) == [(A, True, [0, 2], True), (B, True, [1], True), (None, True, [3], False)]


def test_nothing_new_nothing_sent() -> None:
    flights = [Flight(7, A, True, True, 2)]
    result = plan([ready(0, covered_by=7), ready(1, covered_by=7)], flights,
                  single_fetch=(), max_positions=100)  # fmt: skip
    assert result == Plan((), ())


def test_a_long_poll_is_sent_again_with_a_newcomer() -> None:
    flights = [Flight(7, A, True, True, 2)]
    result = plan(
        [ready(0, covered_by=7), ready(1, covered_by=7), ready(2)],
        flights,
        single_fetch=(),
        max_positions=100,
    )
    assert result.cancel == (7,)
    assert sent(result) == [(A, True, [0, 1, 2], True)]


def test_a_call_expected_to_bring_data_is_left_to_answer() -> None:
    flights = [Flight(7, A, True, False, 2)]
    result = plan([ready(0, covered_by=7), ready(2)], flights, single_fetch=(), max_positions=100)
    assert result == Plan((), ())


def test_the_newcomer_with_data_makes_the_new_call_no_long_poll() -> None:
    flights = [Flight(7, A, True, True, 1)]
    result = plan([ready(0, covered_by=7), ready(1, known_data=True)], flights,
                  single_fetch=(), max_positions=100)  # fmt: skip
    assert sent(result) == [(A, True, [0, 1], False)]


def test_another_brokers_long_poll_is_not_touched() -> None:
    flights = [Flight(7, B, True, True, 1)]
    result = plan([ready(0)], flights, single_fetch=(), max_positions=100)
    assert result.cancel == ()
    assert sent(result) == [(A, True, [0], True)]


def test_a_partition_still_in_a_call_to_its_old_leader_waits_for_its_answer() -> None:
    """Its leader moved to A while B's call fetches it: not fetched twice."""
    flights = [Flight(7, B, True, True, 1), Flight(8, A, True, True, 1)]
    result = plan([ready(0, covered_by=7), ready(1)], flights, single_fetch=(), max_positions=9)
    assert result.cancel == (8,)
    assert sent(result) == [(A, True, [1], True)]


def test_a_broker_without_fetch_many_gets_one_fetch_per_new_partition() -> None:
    flights = [Flight(7, A, False, True, 1)]
    result = plan([ready(0, covered_by=7), ready(1), ready(2, known_data=True)], flights,
                  single_fetch={A}, max_positions=100)  # fmt: skip
    assert result.cancel == ()
    assert sent(result) == [(A, False, [1], True), (A, False, [2], False)]


def test_past_max_positions_the_partitions_take_turns() -> None:
    parts = [ready(i) for i in range(5)]
    first = plan(parts, [], single_fetch=(), max_positions=2, turn=0)
    second = plan(parts, [], single_fetch=(), max_positions=2, turn=3)
    assert sent(first) == [(A, True, [0, 1], True)]
    assert sent(second) == [(A, True, [3, 4], True)]


def test_a_full_long_poll_is_not_sent_again() -> None:
    """Else the partitions left out would cancel it over and over."""
    flights = [Flight(7, A, True, True, 2)]
    parts = [ready(0, covered_by=7), ready(1, covered_by=7), ready(2)]
    assert plan(parts, flights, single_fetch=(), max_positions=2) == Plan((), ())


_readies = st.lists(
    st.builds(
        ready,
        st.integers(0, 30),
        st.sampled_from([A, B, None]),
        known_data=st.booleans(),
        covered_by=st.one_of(st.none(), st.integers(0, 3)),
    ),
    max_size=40,
    unique_by=lambda r: r.tp,
)
_flights = st.lists(
    st.builds(
        Flight,
        st.integers(0, 3),
        st.sampled_from([A, B, None]),
        st.booleans(),
        st.booleans(),
        st.integers(1, 40),
    ),
    max_size=4,
    unique_by=lambda f: f.key,
)


@settings(max_examples=300, deadline=None)
@given(parts=_readies, flights=_flights, cap=st.integers(1, 10), turn=st.integers(0, 50))
def test_plan_invariants(parts: list[Ready], flights: list[Flight], cap: int, turn: int) -> None:
    """Every call goes to its partitions' leader; a FetchMany names at most ``cap``, no
    partition twice and none covered by a call that goes on; a call is cancelled only
    for a partition not covered yet, and only a long-poll."""
    result = plan(parts, flights, single_fetch={B}, max_positions=cap, turn=turn)
    cancelled = set(result.cancel)
    by_key = {f.key: f for f in flights}
    for key in cancelled:
        assert by_key[key].many and by_key[key].long_poll and by_key[key].size < cap
    named: list[TopicPartition] = []
    for send in result.send:
        assert isinstance(send, Send)
        assert all(r.address == send.address for r in send.ready)
        assert send.many == (send.address != B)
        assert 1 <= len(send.ready) <= (cap if send.many else 1)
        assert send.long_poll == (not any(r.known_data for r in send.ready))
        for r in send.ready:
            assert r.covered_by is None or r.covered_by in cancelled
        named += [r.tp for r in send.ready]
    assert len(named) == len(set(named))
    fresh = {r.address for r in parts if r.covered_by is None}
    for key in cancelled:
        assert by_key[key].address in fresh
