"""``RequestOrder`` alone (no socket, no event loop): which requests of one connection may
run together. The table in ``server/kafka/request_order.py`` row by row, cancellation,
and a property over random interleavings checked against Kafka's one-at-a-time model."""

from __future__ import annotations

from fake_waiter import Waiter
from hypothesis import given
from hypothesis import strategies as st

from sentinel.server.kafka.request_order import BARRIER_KEYS, RequestOrder

PRODUCE, FETCH, METADATA, OFFSET_COMMIT, JOIN_GROUP = 0, 1, 3, 8, 11
CREATE_TOPICS, DELETE_TOPICS, ALTER_CONFIGS = 19, 20, 33




class Driver:
    """What ``_serve`` does with the order: a ticket per request as it arrives, a waiter
    for those that must wait; ``started`` lists the requests running."""

    def __init__(self) -> None:
        self.order = RequestOrder()
        self.waiters: dict[int, Waiter] = {}
        self.finished: set[int] = set()

    def arrive(self, *api_keys: int) -> list[int]:
        tickets = []
        for api_key in api_keys:
            ticket = self.order.arrived(api_key)
            if self.order.must_wait(ticket):
                waiter = self.waiters[ticket] = Waiter()
                self.order.wait(ticket, waiter)
            tickets.append(ticket)
        return tickets

    def finish(self, ticket: int) -> None:
        self.order.finished(ticket)
        self.finished.add(ticket)

    def running(self, ticket: int) -> bool:
        waiter = self.waiters.get(ticket)
        return ticket not in self.finished and (waiter is None or waiter.state == "let through")

    def started(self, tickets: list[int]) -> list[int]:
        return [t for t in tickets if self.running(t)]


def test_the_barriers_are_the_admin_requests_that_change_state() -> None:
    assert {19, 20, 21, 22, 33, 37, 42, 44, 45, 47} == BARRIER_KEYS
    assert not {PRODUCE, FETCH, METADATA, OFFSET_COMMIT, JOIN_GROUP, 12, 13, 14} & BARRIER_KEYS


def test_requests_that_are_not_barriers_start_at_once_and_overlap() -> None:
    driver = Driver()
    tickets = driver.arrive(PRODUCE, PRODUCE, FETCH, METADATA, PRODUCE)
    assert driver.started(tickets) == tickets
    driver.finish(tickets[2])
    assert driver.order.unfinished == 4


def test_a_barrier_waits_for_every_earlier_request_and_holds_back_every_later_one() -> None:
    driver = Driver()
    p1, p2, create, p3, meta = tickets = driver.arrive(
        PRODUCE, PRODUCE, CREATE_TOPICS, PRODUCE, METADATA
    )
    assert driver.started(tickets) == [p1, p2]
    driver.finish(p2)  # finishing out of order is fine: p1 still runs
    assert driver.started(tickets) == [p1]
    driver.finish(p1)
    assert driver.started(tickets) == [create]
    assert driver.started(driver.arrive(PRODUCE)) == []  # a newcomer waits too
    driver.finish(create)
    assert driver.started(tickets) == [p3, meta]


def test_a_barrier_first_starts_at_once_and_barriers_run_one_at_a_time() -> None:
    driver = Driver()
    create, delete, alter, meta = tickets = driver.arrive(
        CREATE_TOPICS, DELETE_TOPICS, ALTER_CONFIGS, METADATA
    )
    assert driver.started(tickets) == [create]
    driver.finish(create)
    assert driver.started(tickets) == [delete]
    driver.finish(delete)
    assert driver.started(tickets) == [alter]
    driver.finish(alter)
    assert driver.started(tickets) == [meta]


def test_requests_between_two_barriers_overlap_and_the_second_waits_for_them() -> None:
    driver = Driver()
    tickets = driver.arrive(CREATE_TOPICS, PRODUCE, FETCH, DELETE_TOPICS, PRODUCE)
    create, produce, fetch, delete, last = tickets
    driver.finish(create)
    assert driver.started(tickets) == [produce, fetch]
    driver.finish(produce)
    assert driver.started(tickets) == [fetch]  # a long poll: the barrier waits for it
    driver.finish(fetch)
    assert driver.started(tickets) == [delete]
    driver.finish(delete)
    assert driver.started(tickets) == [last]


def test_a_cancelled_waiter_only_has_to_be_finished() -> None:
    driver = Driver()
    tickets = driver.arrive(PRODUCE, CREATE_TOPICS, PRODUCE, DELETE_TOPICS, METADATA)
    produce, create, later, delete, meta = tickets
    driver.waiters[create].cancel()  # its connection closed; its task's finally runs
    driver.finish(create)
    assert driver.started(tickets) == [produce, later]
    driver.waiters[delete].cancel()
    driver.finish(delete)
    assert driver.started(tickets) == [produce, later, meta]
    driver.finish(produce)
    driver.finish(later)
    driver.finish(meta)
    assert driver.order.unfinished == 0


def test_a_cancelled_waiter_that_comes_free_is_not_set() -> None:
    driver = Driver()
    create, meta = driver.arrive(CREATE_TOPICS, METADATA)
    driver.waiters[meta].cancel()
    driver.finish(create)  # would set it: it is done already, so it is skipped
    assert driver.waiters[meta].state == "cancelled"
    driver.finish(meta)
    assert driver.order.unfinished == 0


def test_finishing_twice_or_after_close_is_harmless() -> None:
    driver = Driver()
    create, produce = driver.arrive(CREATE_TOPICS, PRODUCE)
    driver.finish(create)
    driver.finish(create)
    assert driver.started([create, produce]) == [produce]
    assert driver.order.unfinished == 1
    delete, meta = driver.arrive(DELETE_TOPICS, METADATA)
    driver.order.close()
    driver.finish(produce)
    driver.finish(delete)
    assert driver.waiters[delete].state == "waiting"  # nobody is let through any more
    assert driver.waiters[meta].state == "waiting"
    assert driver.order.unfinished == 0


def test_waiting_on_a_free_ticket_is_let_through_at_once() -> None:
    order = RequestOrder()
    ticket = order.arrived(PRODUCE)
    waiter = Waiter()
    order.wait(ticket, waiter)
    assert waiter.state == "let through"


# --------------------------------------------------------------- the property

KEYS = st.sampled_from([PRODUCE, FETCH, METADATA, CREATE_TOPICS, DELETE_TOPICS])
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), KEYS),
        st.tuples(st.just("finish"), st.integers(0, 1000)),
        st.tuples(st.just("cancel"), st.integers(0, 1000)),
    ),
    max_size=60,
)


@given(STEPS)
def test_every_interleaving_keeps_the_one_at_a_time_order_and_never_wedges(
    steps: list[tuple[str, int]],
) -> None:
    """Against the model: a barrier runs alone after everything before it finished; a
    request never runs while an earlier barrier is unfinished; and while anything is
    unfinished, something runs (or may be finished: a cancelled waiter's task)."""
    driver = Driver()
    barrier: dict[int, bool] = {}
    unfinished: list[int] = []  # in arrival order
    cancelled: set[int] = set()
    for action, value in steps:
        if action == "arrive":
            (ticket,) = driver.arrive(value)
            barrier[ticket] = value in BARRIER_KEYS
            unfinished.append(ticket)
        elif unfinished:
            ticket = unfinished[value % len(unfinished)]
            if action == "cancel":
                if ticket in driver.waiters and not driver.running(ticket):
                    driver.waiters[ticket].cancel()
                    cancelled.add(ticket)
                continue
            if not driver.running(ticket) and ticket not in cancelled:
                continue  # a waiting request does not finish: it has not started
            driver.finish(ticket)
            unfinished.remove(ticket)
        running = [t for t in unfinished if driver.running(t)]
        for t in running:
            before = unfinished[: unfinished.index(t)]
            if barrier[t]:
                assert not before, f"barrier {t} runs before {before} finished"
            else:
                assert not any(barrier[b] for b in before), f"{t} overtook a barrier"
        if unfinished:
            assert running or cancelled & set(unfinished), "nothing can go on"
        assert driver.order.unfinished == len(unfinished)
