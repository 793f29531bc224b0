"""Large frames' receive buffers, reused (``frame_buffers``): a buffer is written again
only once nothing refers to its bytes, and the buffers kept are bounded."""

from __future__ import annotations

import mmap

from hypothesis import given, settings
from hypothesis import strategies as st
from test_kafka_connection import big_produce

from sentinel.protocol.kafka.connection import DIRECT_FRAME_BYTES, KafkaServerConnection
from sentinel.protocol.kafka.events import RequestReceived
from sentinel.protocol.kafka.frame_buffers import FrameBuffers
from sentinel.protocol.kafka.messages import produce as pr

KIB = 1024


def test_a_buffer_nobody_refers_to_is_reused() -> None:
    buffers = FrameBuffers(max_bytes=4 * 64 * KIB, max_buffer_bytes=64 * KIB)
    first = buffers.take(64 * KIB)
    first[:3] = b"abc"
    first.release()
    second = buffers.take(64 * KIB)
    assert buffers.reused == 1 and buffers.kept_bytes == 64 * KIB
    assert len(second) == 64 * KIB


def test_a_buffer_still_viewed_is_never_written_again() -> None:
    buffers = FrameBuffers(max_bytes=4 * 64 * KIB, max_buffer_bytes=64 * KIB)
    first = buffers.take(64 * KIB)
    first[:] = b"a" * len(first)
    kept = first[10:20]  # what a handler kept of a request (a batch)
    del first
    second = buffers.take(64 * KIB)
    second[:] = b"b" * len(second)
    assert bytes(kept) == b"a" * 10 and buffers.reused == 0
    assert buffers.kept_bytes == 2 * 64 * KIB


def test_kept_buffers_are_bounded_and_large_frames_get_a_fresh_one() -> None:
    buffers = FrameBuffers(max_bytes=128 * KIB, max_buffer_bytes=64 * KIB)
    held = [buffers.take(64 * KIB), buffers.take(64 * KIB)]
    beyond = buffers.take(64 * KIB)  # both kept ones are in use: a fresh one
    assert isinstance(beyond, mmap.mmap) and buffers.kept_bytes == 128 * KIB
    assert isinstance(buffers.take(65 * KIB), mmap.mmap)  # over max_buffer_bytes
    del held


def test_a_small_frame_does_not_pin_a_large_buffer_and_free_ones_make_room() -> None:
    buffers = FrameBuffers(max_bytes=192 * KIB, max_buffer_bytes=192 * KIB)
    buffers.take(160 * KIB).release()
    small = buffers.take(64 * KIB)  # 160 > 2 x 64: not this one; no room: 160 given up
    assert buffers.reused == 0 and buffers.kept_bytes == 64 * KIB
    assert not isinstance(small, mmap.mmap)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.booleans()), min_size=1, max_size=40))
def test_no_held_view_ever_changes(steps: list[tuple[int, bool]]) -> None:
    """Any sequence of frames, each kept (a view held) or not: every held view keeps
    the bytes written into it, and the kept buffers stay within their bound."""
    buffers = FrameBuffers(max_bytes=20 * KIB, max_buffer_bytes=6 * KIB)
    held: list[tuple[memoryview | mmap.mmap, bytes]] = []
    for n, (kib, keep) in enumerate(steps):
        buffer = buffers.take(kib * KIB)
        assert len(buffer) == kib * KIB
        fill = bytes([n % 251]) * len(buffer)
        buffer[:] = fill
        if keep:
            held.append((buffer, fill))
        elif isinstance(buffer, memoryview):
            buffer.release()
        del buffer
        assert buffers.kept_bytes <= 20 * KIB
        for view, content in held:
            assert bytes(view) == content


def test_a_connection_receives_its_frames_into_reused_buffers() -> None:
    """Frames received in place through a connection with shared buffers: the second
    reuses the first's buffer once its request is gone, not while a batch of it is
    kept, and every request's records are the bytes sent."""
    buffers = FrameBuffers()
    conn = KafkaServerConnection(buffers=buffers)
    records = [bytes([n]) * (DIRECT_FRAME_BYTES + 100) for n in range(3)]

    def receive(corr: int) -> RequestReceived:
        wire = big_produce(corr, records[corr])
        events = conn.receive_data(wire[:100])
        into = conn.receive_buffer()
        assert into is not None
        into[:] = wire[100:]
        del into
        events += conn.body_received(len(wire) - 100)
        (event,) = events
        assert isinstance(event, RequestReceived)
        return event

    def records_of(event: RequestReceived) -> memoryview:
        request = event.request
        assert isinstance(request, pr.ProduceRequest)
        (part,) = request.topic_data[0].partition_data
        assert isinstance(part.records, memoryview)
        return part.records

    first = receive(0)
    kept = records_of(first)
    conn.send_response(first, pr.ProduceResponse())
    del first
    second = receive(1)
    assert buffers.reused == 0  # a batch of the first is still kept
    assert bytes(kept) == records[0] and bytes(records_of(second)) == records[1]
    conn.send_response(second, pr.ProduceResponse())
    del second, kept
    third = receive(2)
    assert buffers.reused == 1
    assert bytes(records_of(third)) == records[2]
