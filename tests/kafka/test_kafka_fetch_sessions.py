"""Fetch sessions (KIP-227), sans-IO: what a request fetches and what its answer names."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.broker.outcomes import FetchOutcome
from sentinel.clock import ManualClock
from sentinel.errors import NotLeaderError
from sentinel.protocol.kafka.messages import fetch as fe
from sentinel.server.kafka.fetch_sessions import (
    FETCH_SESSION_ID_NOT_FOUND,
    INVALID_FETCH_SESSION_EPOCH,
    FetchSessions,
    FetchStart,
)


def sessions_on(clock: ManualClock | None = None, **bounds: Any) -> FetchSessions:
    """Fetch sessions on a manual clock (a fresh one unless given)."""
    return FetchSessions(clock=(clock or ManualClock(1000.0)).monotonic, **bounds)


def request(session_id: int, epoch: int, parts: dict[tuple[str, int], int],
            forget: tuple[tuple[str, int], ...] = ()) -> fe.FetchRequest:
    topics: dict[str, list[fe.FetchPartition]] = {}
    for (topic, partition), offset in parts.items():
        topics.setdefault(topic, []).append(fe.FetchPartition(
            partition=partition, fetch_offset=offset, partition_max_bytes=1 << 20))
    forgotten: dict[str, list[int]] = {}
    for topic, partition in forget:
        forgotten.setdefault(topic, []).append(partition)
    return fe.FetchRequest(
        session_id=session_id, session_epoch=epoch,
        topics=tuple(fe.FetchTopic(topic=t, partitions=tuple(p)) for t, p in topics.items()),
        forgotten_topics_data=tuple(fe.ForgottenTopic(topic=t, partitions=tuple(p))
                                    for t, p in forgotten.items()))


def outcome(topic: str, partition: int, hw: int, records: bytes = b"",
            log_start: int = 0, error: NotLeaderError | None = None) -> FetchOutcome:
    return FetchOutcome(topic, partition, (records,) if records else (), hw, log_start,
                        hw, error)


def finish(sessions: FetchSessions, start: FetchStart,
           outcomes: list[FetchOutcome]) -> list[FetchOutcome]:
    answered, session_id = sessions.finish(start, outcomes)
    assert session_id == start.session_id
    return answered


def names(outcomes: list[FetchOutcome]) -> list[tuple[str, int]]:
    return [(o.topic, o.partition) for o in outcomes]


def test_a_session_answers_only_what_is_new_and_takes_only_what_changed() -> None:
    sessions = sessions_on()
    first = sessions.begin(request(0, 0, {("a", 0): 0, ("a", 1): 0, ("b", 0): 5}))
    assert first.session_id != 0 and not first.incremental and first.error_code == 0
    assert [(p.topic, p.partition, p.offset) for p in first.positions] == [
        ("a", 0, 0), ("a", 1, 0), ("b", 0, 5)]
    quiet = [outcome("a", 0, 0), outcome("a", 1, 0), outcome("b", 0, 5)]
    # The answer that opens the session names every partition.
    assert names(finish(sessions, first, quiet)) == [("a", 0), ("a", 1), ("b", 0)]
    assert (len(sessions), sessions.partitions) == (1, 3)

    # Epoch 1 names nothing: every partition of the session is fetched, at its offset.
    second = sessions.begin(request(first.session_id, 1, {}))
    assert second.incremental and second.session_id == first.session_id
    assert [(p.topic, p.partition, p.offset) for p in second.positions] == [
        ("a", 0, 0), ("a", 1, 0), ("b", 0, 5)]
    # Only the partition with records, and the one whose log start moved, are named.
    answer = finish(sessions, second, [
        outcome("a", 0, 3, b"batch"), outcome("a", 1, 0), outcome("b", 0, 5, log_start=2)])
    assert names(answer) == [("a", 0), ("b", 0)]

    # Epoch 2 moves a/0 on and forgets b/0; a/1's high watermark moved: named.
    third = sessions.begin(request(first.session_id, 2, {("a", 0): 3}, forget=(("b", 0),)))
    assert {(p.topic, p.partition, p.offset) for p in third.positions} == {
        ("a", 0, 3), ("a", 1, 0)}
    assert sessions.partitions == 2
    answer = finish(sessions, third, [outcome("a", 1, 4), outcome("a", 0, 3)])
    assert names(answer) == [("a", 1)]
    # Nothing new at all: an empty answer.
    fourth = sessions.begin(request(first.session_id, 3, {}))
    assert finish(sessions, fourth, [outcome("a", 0, 3), outcome("a", 1, 4)]) == []


def test_an_error_is_answered_each_time_and_the_partition_heard_again_after() -> None:
    sessions = sessions_on()
    start = sessions.begin(request(0, 0, {("a", 0): 0}))
    finish(sessions, start, [outcome("a", 0, 7)])
    failing = outcome("a", 0, -1, error=NotLeaderError("moved"))
    for epoch in (1, 2):
        step = sessions.begin(request(start.session_id, epoch, {}))
        assert names(finish(sessions, step, [failing])) == [("a", 0)]
    step = sessions.begin(request(start.session_id, 3, {}))
    assert names(finish(sessions, step, [outcome("a", 0, 7)])) == [("a", 0)]


def test_partitions_that_returned_records_go_to_the_back() -> None:
    sessions = sessions_on()
    start = sessions.begin(request(0, 0, {("a", 0): 0, ("a", 1): 0, ("a", 2): 0}))
    finish(sessions, start, [outcome("a", 0, 1, b"x"), outcome("a", 1, 0), outcome("a", 2, 0)])
    step = sessions.begin(request(start.session_id, 1, {("a", 0): 1}))
    assert [p.partition for p in step.positions] == [1, 2, 0]


def test_wrong_epochs_unknown_ids_and_closing() -> None:
    sessions = sessions_on()
    start = sessions.begin(request(0, 0, {("a", 0): 0}))
    assert sessions.begin(request(start.session_id, 5, {})).error_code \
        == INVALID_FETCH_SESSION_EPOCH
    assert sessions.begin(request(start.session_id + 1, 1, {})).error_code \
        == FETCH_SESSION_ID_NOT_FOUND
    # A refused request does not move the epoch: 1 is still the one expected.
    assert sessions.begin(request(start.session_id, 1, {})).error_code == 0
    # Epoch -1 closes the session and is answered as a full fetch without one.
    closing = sessions.begin(request(start.session_id, -1, {("a", 0): 0}))
    assert closing.session_id == 0 and len(closing.positions) == 1
    assert (len(sessions), sessions.partitions) == (0, 0)
    assert sessions.begin(request(start.session_id, 2, {})).error_code \
        == FETCH_SESSION_ID_NOT_FOUND
    # Epoch 0 with an id replaces that session by a new one.
    again = sessions.begin(request(0, 0, {("a", 0): 0}))
    renewed = sessions.begin(request(again.session_id, 0, {("a", 0): 0, ("a", 1): 0}))
    assert renewed.session_id not in (0, again.session_id)
    assert (len(sessions), sessions.partitions) == (1, 2)


def test_a_full_fetch_without_a_session_keeps_what_it_names() -> None:
    sessions = sessions_on()
    plain = sessions.begin(request(0, -1, {("a", 0): 4, ("a", 1): 9}))
    assert plain.session_id == 0 and [p.offset for p in plain.positions] == [4, 9]
    assert len(sessions) == 0
    got = [outcome("a", 0, 4), outcome("a", 1, 9)]
    assert finish(sessions, plain, got) == got


def test_the_cache_is_bounded_stale_then_smaller_sessions_give_way() -> None:
    clock = ManualClock(1000.0)
    sessions = sessions_on(clock, max_sessions=2, max_partitions=10, evict_after_s=120)
    small = sessions.begin(request(0, 0, {("a", 0): 0}))
    large = sessions.begin(request(0, 0, {("a", p): 0 for p in range(3)}))
    assert small.session_id and large.session_id and len(sessions) == 2
    # Full: a session of one partition takes no one's place (none stale, none smaller).
    refused = sessions.begin(request(0, 0, {("b", 0): 0}))
    assert refused.session_id == 0 and len(refused.positions) == 1
    # A larger one takes the smallest's place.
    larger = sessions.begin(request(0, 0, {("c", p): 0 for p in range(2)}))
    assert larger.session_id != 0
    assert sessions.begin(request(small.session_id, 1, {})).error_code \
        == FETCH_SESSION_ID_NOT_FOUND
    # Once a session is unused for evict_after_s, any new one may take its place.
    clock.advance(60)
    sessions.begin(request(larger.session_id, 1, {}))
    clock.advance(61)
    fresh = sessions.begin(request(0, 0, {("d", 0): 0}))
    assert fresh.session_id != 0
    assert sessions.begin(request(large.session_id, 1, {})).error_code \
        == FETCH_SESSION_ID_NOT_FOUND
    assert sessions.begin(request(larger.session_id, 2, {})).error_code == 0
    # The partitions bound: a session over it is never kept.
    assert sessions.begin(request(0, 0, {("e", p): 0 for p in range(11)})).session_id == 0
    assert sessions.partitions <= 10


def test_growing_a_session_counts_its_partitions() -> None:
    sessions = sessions_on()
    start = sessions.begin(request(0, 0, {("a", 0): 0}))
    sessions.begin(request(start.session_id, 1, {("a", 1): 0, ("a", 2): 0}))
    assert sessions.partitions == 3
    sessions.begin(request(start.session_id, 2, {}, forget=(("a", 0), ("zz", 9))))
    assert sessions.partitions == 2
    # Named and forgotten in one request: forgotten, as Kafka's session update does.
    step = sessions.begin(request(start.session_id, 3, {("a", 1): 5}, forget=(("a", 1),)))
    assert [(p.topic, p.partition) for p in step.positions] == [("a", 2)]
    assert sessions.partitions == 1


def test_a_session_grown_past_the_bound_gives_way_to_smaller_ones_or_ends() -> None:
    sessions = sessions_on(max_partitions=6)
    other = sessions.begin(request(0, 0, {("b", 0): 0}))
    start = sessions.begin(request(0, 0, {("a", 0): 0}))
    grown = sessions.begin(request(start.session_id, 1, {("a", p): 0 for p in range(1, 6)}))
    assert grown.error_code == 0 and sessions.partitions == 6  # the smaller one gave way
    assert sessions.begin(request(other.session_id, 1, {})).error_code \
        == FETCH_SESSION_ID_NOT_FOUND
    # Past the bound with no one to give way: the session ends; the client starts anew.
    over = sessions.begin(request(start.session_id, 2, {("a", 6): 0}))
    assert over.error_code == FETCH_SESSION_ID_NOT_FOUND
    assert (len(sessions), sessions.partitions) == (0, 0)


def test_a_session_evicted_while_its_fetch_waited_is_answered_closed() -> None:
    clock = ManualClock(1000.0)
    sessions = sessions_on(clock, max_sessions=1, evict_after_s=10)
    start = sessions.begin(request(0, 0, {("a", 0): 0}))
    waiting = sessions.begin(request(start.session_id, 1, {}))
    clock.advance(11)  # the long poll outlasts the eviction time; another takes its place
    assert sessions.begin(request(0, 0, {("b", 0): 0})).session_id != 0
    got = [outcome("a", 0, 0)]
    assert sessions.finish(waiting, got) == (got, 0)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_clients_view_through_incremental_answers_is_the_whole_truth(
    data: st.DataObject,
) -> None:
    """KIP-227's promise: what a client heard in the answer that opened its session,
    updated by each incremental answer, is what a full fetch would have told it, for
    every partition of the session; and every partition with records or an error is
    named. Random sessions over 6 partitions: positions moved, partitions forgotten
    and named again, high watermarks and log starts moving, errors coming and going."""
    keys = [("a", p) for p in range(3)] + [("b", p) for p in range(3)]
    sessions = sessions_on()
    truth = {k: (0, 0) for k in keys}  # partition -> (high watermark, log start)
    failing: set[tuple[str, int]] = set()

    def fetch(start: FetchStart) -> list[FetchOutcome]:
        got = []
        for pos in start.positions:
            key = (pos.topic, pos.partition)
            hw, log_start = truth[key]
            if key in failing:
                got.append(outcome(*key, -1, error=NotLeaderError("moved")))
            else:
                records = b"r" if pos.offset < hw and data.draw(st.booleans()) else b""
                got.append(outcome(*key, hw, records, log_start))
        answered, session_id = sessions.finish(start, got)
        assert session_id == start.session_id
        must = {(o.topic, o.partition) for o in got if o.chunks or o.error is not None}
        assert must <= {(o.topic, o.partition) for o in answered}
        return answered

    wanted = set(data.draw(st.sets(st.sampled_from(keys), min_size=1)))
    start = sessions.begin(request(0, 0, {k: 0 for k in sorted(wanted)}))
    heard = {(o.topic, o.partition): (o.high_watermark, o.log_start_offset, o.error is None)
             for o in fetch(start)}
    assert set(heard) == wanted
    for epoch in range(1, data.draw(st.integers(1, 12)) + 1):
        for key in data.draw(st.sets(st.sampled_from(keys))):  # the logs move on
            hw, log_start = truth[key]
            hw += data.draw(st.integers(0, 3))
            truth[key] = (hw, min(hw, log_start + data.draw(st.integers(0, 1))))
        failing = set(data.draw(st.sets(st.sampled_from(keys), max_size=2)))
        add = data.draw(st.sets(st.sampled_from(keys)))
        forget = data.draw(st.sets(st.sampled_from(sorted(wanted)))) if wanted else set()
        named = {k: data.draw(st.integers(0, truth[k][0])) for k in sorted(add)}
        step = sessions.begin(request(start.session_id, epoch, named, tuple(sorted(forget))))
        assert step.error_code == 0
        wanted = (wanted | set(named)) - forget
        for key in forget:
            heard.pop(key, None)
        for key in set(named) - set(heard):
            heard[key] = (-2, -2, True)  # new to the session: must be answered
        assert {(p.topic, p.partition) for p in step.positions} == wanted
        for o in fetch(step):
            heard[(o.topic, o.partition)] = (o.high_watermark, o.log_start_offset,
                                             o.error is None)
        for key in wanted:
            if key in failing:
                assert heard[key][2] is False, key  # the error was answered
            else:
                assert heard[key] == (*truth[key], True), (key, epoch)
