"""``Turns`` alone (no socket, no event loop): which waiting handler of a connection may
start while its answers do not drain. The table in ``server/kafka/turns.py``, row by
row, then a property over random interleavings of requests, cancellations, pauses and
answers held."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fake_waiter import Waiter
from hypothesis import given
from hypothesis import strategies as st

from sentinel.server.kafka.turns import HELD_RESPONSE_BYTES, Turns

BEYOND = HELD_RESPONSE_BYTES + 1


@dataclass
class Answers:
    """The connection's answers as ``Turns`` reads them."""

    held_response_bytes: int = 0
    oldest_unanswered: int | None = None




def queue(turns: Turns, *correlation_ids: int) -> list[Waiter]:
    waiters = []
    for correlation_id in correlation_ids:
        waiter = Waiter()
        turns.wait(correlation_id, waiter)
        waiters.append(waiter)
    return waiters


def let_through(waiters: list[Waiter]) -> list[int]:
    return [i for i, w in enumerate(waiters) if w.state == "let through"]


def test_handlers_start_at_once_while_answers_drain() -> None:
    turns = Turns(Answers(held_response_bytes=HELD_RESPONSE_BYTES, oldest_unanswered=1))
    assert not turns.congested()
    assert not turns.must_wait(2)
    turns.finished(None)
    assert not turns.must_wait(3)


def test_the_oldest_unanswered_request_is_let_through_when_answers_are_held() -> None:
    answers = Answers(held_response_bytes=BEYOND, oldest_unanswered=2)
    turns = Turns(answers)
    assert turns.congested()
    assert not turns.must_wait(2)  # the answers held wait for it: it starts
    assert turns.must_wait(3)
    # Queued behind others, it still goes first (the second Fetch behind a long poll).
    waiters = queue(turns, 3, 4, 2)
    assert let_through(waiters) == [2]
    answers.oldest_unanswered = 3  # 2 answered; the answers held now wait for 3
    turns.finished(waiters[2])
    assert let_through(waiters) == [0, 2]
    turns.finished(waiters[0])
    assert waiters[1].state == "waiting"  # 4 is not the oldest: it waits


def test_nothing_starts_while_writing_is_paused_not_even_the_oldest() -> None:
    turns = Turns(Answers(oldest_unanswered=1))
    turns.write_paused = True
    assert turns.congested() and turns.must_wait(1)
    waiters = queue(turns, 1, 2)
    assert let_through(waiters) == []
    turns.write_paused = False
    turns.let_next()
    assert let_through(waiters) == [0]


def test_after_congestion_handlers_start_one_at_a_time_in_order() -> None:
    turns = Turns(Answers(oldest_unanswered=1))
    turns.write_paused = True
    waiters = queue(turns, 1, 2, 3, 4)
    turns.write_paused = False
    turns.let_next()
    assert let_through(waiters) == [0]
    assert turns.must_wait(5)  # others wait: a newcomer goes after them
    turns.let_next()
    assert let_through(waiters) == [0]  # one at a time
    for started in range(1, 4):
        turns.finished(waiters[started - 1])
        assert let_through(waiters) == list(range(started + 1))
    turns.finished(waiters[3])
    assert turns.waiting == 0 and not turns.must_wait(5)


def test_cancelled_waiters_are_skipped() -> None:
    turns = Turns(Answers(oldest_unanswered=1))
    turns.write_paused = True
    waiters = queue(turns, 1, 2, 3)
    waiters[0].cancel()
    waiters[1].cancel()
    turns.write_paused = False
    turns.let_next()
    assert [w.state for w in waiters] == ["cancelled", "cancelled", "let through"]
    assert turns.waiting == 0


def test_a_handler_cancelled_once_let_through_frees_the_turn() -> None:
    turns = Turns(Answers())
    turns.write_paused = True
    first, second = queue(turns, 1, 2)
    turns.write_paused = False
    turns.let_next()
    assert first.state == "let through"
    turns.finished(second)  # cancelled while waiting: the turn stays with the first
    assert second.state == "waiting"
    turns.finished(first)  # its task was cancelled after it was let through
    assert second.state == "let through"


def test_a_closed_connection_lets_nobody_through() -> None:
    turns = Turns(Answers())
    turns.write_paused = True
    (waiter,) = queue(turns, 1)
    turns.close()
    turns.write_paused = False
    turns.let_next()
    assert waiter.state == "waiting"


async def test_asyncio_futures_are_waiters() -> None:
    """The driver's use: a task waits on a future, one at a time, a cancelled one skipped."""
    turns = Turns(Answers())
    turns.write_paused = True
    started: list[int] = []

    async def handler(correlation_id: int) -> None:
        turn: asyncio.Future[None] | None = None
        try:
            if turns.must_wait(correlation_id):
                turn = asyncio.get_running_loop().create_future()
                turns.wait(correlation_id, turn)
                await turn
            started.append(correlation_id)
            await asyncio.sleep(0)
        finally:
            turns.finished(turn)

    tasks = [asyncio.create_task(handler(cid)) for cid in (1, 2, 3)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    turns.write_paused = False
    turns.let_next()
    await asyncio.wait(tasks)
    assert started == [1, 3]
    assert turns.waiting == 0 and not turns.must_wait(4)


# ----------------------------------------------------------------- a property

steps = st.lists(
    st.one_of(
        st.tuples(st.just("request"), st.none()),
        st.tuples(st.just("cancel"), st.integers(0, 20)),
        st.tuples(st.just("finish"), st.none()),
        st.tuples(st.just("pause"), st.booleans()),
        st.tuples(st.just("held"), st.booleans()),
    ),
    max_size=60,
)


@given(steps)
def test_one_at_a_time_in_order_and_all_once_answers_drain(
    script: list[tuple[str, object]],
) -> None:
    """Whatever happened, at most one handler let through runs at a time, a cancelled
    one is never let through, every one let through while answers drain is the first
    still waiting, and once answers drain every handler still waiting starts, in
    request order."""
    answers = Answers()
    turns = Turns(answers)
    waiters: list[Waiter] = []  # by correlation id
    finished: set[int] = set()
    at_once: set[int] = set()  # started without waiting for a turn

    def running() -> list[int]:
        return [c for c, w in enumerate(waiters) if w.state == "let through" and c not in finished]

    def unanswered() -> list[int]:
        return [c for c, w in enumerate(waiters) if c not in finished and not w.cancelled()]

    def check(before: list[str]) -> None:
        before += ["waiting"] * (len(waiters) - len(before))  # a request just queued
        newly = [c for c, w in enumerate(waiters) if w.state == "let through"
                 and before[c] != "let through" and c not in at_once]
        assert len(running()) <= 1
        for c in newly:
            if not turns.congested():
                assert all(before[e] != "waiting" or waiters[e].cancelled() for e in range(c))
            else:
                assert c == answers.oldest_unanswered

    for action, arg in script:
        answers.oldest_unanswered = min(unanswered(), default=None)
        before = [w.state for w in waiters]
        if action == "request":
            waiter = Waiter()
            waiters.append(waiter)
            if turns.must_wait(len(waiters) - 1):
                turns.wait(len(waiters) - 1, waiter)
            else:
                waiter.set_result(None)  # started at once (no turn taken)
                at_once.add(len(waiters) - 1)
                finished.add(len(waiters) - 1)  # and done before anything else happens
                turns.finished(None)
        elif action == "cancel" and isinstance(arg, int) and arg < len(waiters):
            if waiters[arg].state == "waiting":
                waiters[arg].cancel()
                turns.finished(waiters[arg])
        elif action == "finish" and running():
            (c,) = running()
            finished.add(c)
            turns.finished(waiters[c])
        elif action == "pause":
            turns.write_paused = bool(arg)
            turns.let_next()
        elif action == "held":
            answers.held_response_bytes = BEYOND if arg else 0
            turns.let_next()
        check(before)
    # Answers drain: everyone still waiting starts, one after the other, in order.
    answers.held_response_bytes = 0
    turns.write_paused = False
    waiting = [c for c, w in enumerate(waiters) if w.state == "waiting"]
    turns.let_next()
    started = []
    while running():
        (c,) = running()
        started.append(c)
        finished.add(c)
        turns.finished(waiters[c])
    assert sorted(started) == sorted(set(started))
    assert [c for c in started if c in waiting] == waiting
    assert turns.waiting == 0
