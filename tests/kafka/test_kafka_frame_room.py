"""``FrameRoom`` and ``LongestReceiving`` alone (no socket, no event loop): the room a
connection holds in the broker's request budget for the frame it receives, a large one
in steps; the table in ``server/kafka/frame_room.py``, with a real ``RequestBudget`` and
``KafkaServerConnection``."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from test_kafka_connection import big_produce

from sentinel.broker.request_budget import RequestBudget
from sentinel.protocol.kafka.connection import KafkaServerConnection
from sentinel.protocol.kafka.events import RequestReceived
from sentinel.server.kafka.frame_room import (
    LEAD_MAX_BYTES,
    LEAD_MIN_BYTES,
    SMALL_FRAME_BYTES,
    FrameRoom,
    LongestReceiving,
    Step,
    next_step_bytes,
)


class Client:
    """A connection as ``LongestReceiving`` knows it: counts its promotions."""

    def __init__(self) -> None:
        self.promotions = 0

    def promoted(self) -> None:
        self.promotions += 1


def receiver(
    budget: RequestBudget, longest: LongestReceiving[Client]
) -> tuple[KafkaServerConnection, FrameRoom, Client]:
    conn = KafkaServerConnection()
    client = Client()
    return conn, FrameRoom(conn, budget, longest, client), client


def read_ahead(conn: KafkaServerConnection, room: FrameRoom, wire: bytes, pos: int) -> int:
    """Read what the room held allows (as the driver's ``get_buffer`` does); the new
    position, or 0 once the frame is whole (handed out)."""
    into = conn.receive_buffer(room.ahead())
    assert into is not None and len(into) > 0
    n = len(into)
    into[:] = wire[pos : pos + n]
    events = conn.body_received(n)
    return 0 if events else pos + n


@given(st.integers(SMALL_FRAME_BYTES + 1, 64 << 20), st.data())
def test_a_step_is_what_the_frame_delivered_within_the_bounds(
    need: int, data: st.DataObject
) -> None:
    have = data.draw(st.integers(0, need - 1))
    step = next_step_bytes(need, have)
    assert 0 < step <= need - have
    assert step <= max(have, LEAD_MIN_BYTES) and step <= LEAD_MAX_BYTES
    assert step == need - have or step >= min(max(have, LEAD_MIN_BYTES), LEAD_MAX_BYTES)


def test_no_frame_no_room() -> None:
    budget = RequestBudget(1 << 20)
    conn, room, _ = receiver(budget, LongestReceiving())
    assert room.advance() is Step.NONE and room.ahead() == 0
    conn.receive_data(b"\x00\x00")  # half a size prefix
    assert room.advance() is Step.NONE
    assert budget.available == budget.capacity


def test_a_small_frame_is_held_as_it_arrives_without_waiting() -> None:
    budget = RequestBudget(100)  # far less than the frame: it is read all the same
    conn, room, _ = receiver(budget, LongestReceiving())
    wire = big_produce(1, b"x" * 1000)
    conn.receive_data(wire[:500])
    assert room.advance() is Step.READ
    assert room.head is not None and room.head.size == 500 and room.ahead() == 0
    (event,) = conn.receive_data(wire[500:])
    assert room.advance() is Step.NONE
    assert isinstance(event, RequestReceived)
    held = room.frame_received(event.frame_bytes)
    assert held.size == len(wire) and budget.in_flight == len(wire)
    held.release()
    assert budget.available == budget.capacity


def test_a_large_frame_holds_room_one_step_ahead_of_what_it_delivered() -> None:
    budget = RequestBudget(64 << 20)
    conn, room, _ = receiver(budget, LongestReceiving())
    wire = big_produce(1, bytes(3 << 20))
    conn.receive_data(wire[:100])
    pos, steps = 100, 0
    while pos:
        assert room.advance() is Step.READ and room.head is not None
        have = conn.head_received_bytes()
        ahead = room.head.size - have
        assert ahead == next_step_bytes(len(wire), have)  # never more than it delivered
        assert budget.in_flight == room.head.size
        pos = read_ahead(conn, room, wire, pos)
        steps += 1
    assert 5 < steps < 15  # the steps double: 64 KiB, 64 KiB, 128 KiB ...
    held = room.frame_received(len(wire))
    assert room.head is None and held.size == len(wire) == budget.in_flight


def test_a_stalled_frame_holds_what_it_sent_and_one_step() -> None:
    budget = RequestBudget(64 << 20)
    conn, room, _ = receiver(budget, LongestReceiving())
    wire = big_produce(1, bytes(10 << 20))
    conn.receive_data(wire[:4096])
    assert room.advance() is Step.READ
    assert budget.in_flight == 4096 + LEAD_MIN_BYTES
    assert room.advance() is Step.READ  # nothing more came: no more room taken
    assert budget.in_flight == 4096 + LEAD_MIN_BYTES
    room.close()
    assert budget.available == budget.capacity


def test_without_room_a_step_waits_unless_its_frame_was_received_longest() -> None:
    budget = RequestBudget(100_000)
    longest: LongestReceiving[Client] = LongestReceiving()
    conn_a, room_a, client_a = receiver(budget, longest)
    conn_b, room_b, client_b = receiver(budget, longest)
    wire_a, wire_b = big_produce(1, bytes(1 << 20)), big_produce(1, bytes(1 << 20))
    conn_a.receive_data(wire_a[:100])
    assert room_a.advance() is Step.READ  # first: room for 64 KiB
    conn_b.receive_data(wire_b[:100])
    assert room_b.advance() is Step.WAIT and room_b.wanted == LEAD_MIN_BYTES
    pos = read_ahead(conn_a, room_a, wire_a, 100)
    assert room_a.advance() is Step.READ  # no room, but received longest: past the budget
    assert budget.available < 0
    assert room_b.advance() is Step.WAIT
    while pos:
        assert room_a.advance() is Step.READ
        pos = read_ahead(conn_a, room_a, wire_a, pos)
    assert client_b.promotions == 0
    held = room_a.frame_received(len(wire_a))
    assert client_b.promotions == 1 and client_a.promotions == 0
    assert room_b.advance() is Step.READ  # now the one received longest
    held.release()
    room_b.close()
    assert budget.available == budget.capacity and len(longest) == 0


def test_room_that_comes_after_the_frame_is_gone_is_given_back() -> None:
    budget = RequestBudget(1 << 20)
    conn, room, _ = receiver(budget, LongestReceiving())
    conn.receive_data(big_produce(1, bytes(1 << 20))[:100])
    assert room.advance() is Step.READ
    late = budget.try_reserve(1000)
    assert late is not None
    assert room.room_came(late) and room.head is not None
    assert room.head.size == 100 + LEAD_MIN_BYTES + 1000
    room.close()
    gone = budget.try_reserve(1000)
    assert gone is not None and not room.room_came(gone)
    assert budget.available == budget.capacity


def test_a_refused_frame_gives_its_room_back_and_promotes_the_next() -> None:
    budget = RequestBudget(1 << 30)
    longest: LongestReceiving[Client] = LongestReceiving()
    conn_a, room_a, _ = receiver(budget, longest)
    conn_b, room_b, client_b = receiver(budget, longest)
    for conn, room in ((conn_a, room_a), (conn_b, room_b)):
        conn.receive_data(big_produce(1, bytes(1 << 20))[:100])
        assert room.advance() is Step.READ
    held = room_a.frame_ended()
    assert held is not None and client_b.promotions == 1
    held.release()
    assert room_a.frame_ended() is None  # nothing held any more
    room_b.close()
    room_b.close()
    assert budget.available == budget.capacity and client_b.promotions == 1


def test_longest_receiving_promotes_only_when_the_first_is_done() -> None:
    longest: LongestReceiving[Client] = LongestReceiving()
    a, b, c = Client(), Client(), Client()
    assert longest.receiving(a) and not longest.receiving(b) and not longest.receiving(c)
    assert longest.receiving(a)  # asked again: still first
    longest.done(b)  # not the first: nobody promoted
    assert (a.promotions, b.promotions, c.promotions) == (0, 0, 0)
    longest.done(a)
    assert c.promotions == 1 and longest.receiving(c)
    longest.done(a)  # not receiving: nothing
    longest.done(c)
    assert len(longest) == 0 and c.promotions == 1


def test_a_frame_whole_but_not_handed_out_takes_no_more_room() -> None:
    budget = RequestBudget(1 << 30)
    conn = KafkaServerConnection(max_in_flight=1)
    room = FrameRoom(conn, budget, LongestReceiving(), Client())
    first, second = big_produce(1, bytes(100)), big_produce(2, bytes(1 << 20))
    (event,) = conn.receive_data(first + second)  # the second waits for max_in_flight
    assert isinstance(event, RequestReceived)
    held = room.frame_received(event.frame_bytes)
    assert room.advance() is Step.WHOLE
    assert room.head is not None and room.head.size == len(second)
    assert budget.in_flight == len(first) + len(second)
    held.release()
    room.close()
    assert budget.available == budget.capacity
