"""What a ``KafkaServerConnection`` tells its driver so it can bound memory per
connection: how much of the frame being received is in memory, a frame read in steps
(``receive_buffer(limit)``), the answers waiting for an earlier one; and the request
budget's reservations grown step by step."""

from __future__ import annotations

import mmap

from test_kafka_connection import big_produce, heartbeat

from sentinel.broker.request_budget import RequestBudget
from sentinel.protocol.kafka.connection import DIRECT_FRAME_BYTES, KafkaServerConnection
from sentinel.protocol.kafka.events import RequestReceived
from sentinel.protocol.kafka.messages import heartbeat as hb


def test_head_received_bytes_counts_what_arrived_of_the_next_frame() -> None:
    conn = KafkaServerConnection()
    wire = big_produce(1, b"x" * DIRECT_FRAME_BYTES)
    assert conn.head_received_bytes() == 0
    conn.receive_data(wire[:3])
    assert conn.head_frame_bytes() == 0 and conn.head_received_bytes() == 0
    conn.receive_data(wire[3:100])
    assert conn.head_frame_bytes() == len(wire)
    assert conn.head_received_bytes() == 100
    into = conn.receive_buffer()
    assert into is not None
    into[:50] = wire[100:150]
    conn.body_received(50)
    assert conn.head_received_bytes() == 150


def test_a_large_frame_read_in_steps_gives_the_same_request() -> None:
    records = bytes(range(256)) * (DIRECT_FRAME_BYTES // 256 + 10)
    wire = big_produce(1, records) + heartbeat(2)
    (plain, _) = KafkaServerConnection().receive_data(wire)
    conn = KafkaServerConnection()
    events = conn.receive_data(wire[:20])
    pos, steps = 20, 0
    while not events:
        into = conn.receive_buffer(limit=1000)
        assert into is not None and 0 < len(into) <= 1000
        n = len(into)
        into[:] = wire[pos : pos + n]
        pos += n
        steps += 1
        events = conn.body_received(n)
    assert steps > DIRECT_FRAME_BYTES // 1000
    (got,) = events
    assert isinstance(got, RequestReceived) and isinstance(plain, RequestReceived)
    assert got.request == plain.request
    (part,) = got.request.topic_data[0].partition_data
    # The frame's own buffer is an anonymous mapping: its pages are taken as written.
    assert isinstance(part.records.obj, mmap.mmap)
    assert [e.correlation_id for e in conn.receive_data(wire[pos:])] == [2]  # type: ignore[attr-defined]


def test_held_response_bytes_counts_answers_waiting_for_an_earlier_one() -> None:
    conn = KafkaServerConnection()
    first, second, third = conn.receive_data(heartbeat(1) + heartbeat(2) + heartbeat(3))
    assert isinstance(first, RequestReceived) and isinstance(second, RequestReceived)
    assert isinstance(third, RequestReceived)
    answer = hb.HeartbeatResponse()
    assert conn.held_response_bytes == 0
    assert conn.send_response(third, answer) == b""
    one = conn.held_response_bytes
    assert one > 0
    conn.send_response(second, answer)
    assert conn.held_response_bytes == 2 * one
    out = conn.send_response(first, answer)
    assert len(out) == 3 * one and conn.held_response_bytes == 0


def test_a_reservation_grows_past_the_budget_and_absorbs_another() -> None:
    budget = RequestBudget(100, trim=lambda: None)
    held = budget.force(30)
    held.grow(50)
    assert held.size == 80 and budget.available == 20
    step = budget.try_reserve(20)
    assert step is not None
    held.absorb(step)
    assert held.size == 100 and step.size == 0 and budget.available == 0
    held.grow(10)  # already in memory: may go below zero
    assert budget.available == -10
    step.release()  # holds nothing any more
    assert budget.available == -10
    held.release()
    assert budget.available == 100
