"""The sans-IO server connection: framing, order, back-pressure, limits, unsupported."""

from __future__ import annotations

import struct

import pytest
from test_kafka_golden import API_VERSIONS_V0_REQ, frame, header_v1, header_v2, i16, i32, uv

from sentinel.errors import InvalidArgumentError
from sentinel.protocol.kafka import serde
from sentinel.protocol.kafka.connection import DIRECT_FRAME_BYTES, KafkaServerConnection
from sentinel.protocol.kafka.events import ConnectionClosed, RequestReceived, UnsupportedRequest
from sentinel.protocol.kafka.messages import api_versions as av
from sentinel.protocol.kafka.messages import delete_topics as dt
from sentinel.protocol.kafka.messages import heartbeat as hb
from sentinel.protocol.kafka.versions import SUPPORTED, UNSUPPORTED_VERSION


def heartbeat(corr: int) -> bytes:
    return frame(header_v1(12, 0, corr, "c") + struct.pack(">h", 1) + b"g" + i32(1)
                 + struct.pack(">h", 1) + b"m")


def test_byte_at_a_time_delivers_the_same_requests() -> None:
    wire = b"".join(heartbeat(c) for c in range(5))
    conn = KafkaServerConnection()
    events = []
    for i in range(len(wire)):
        events += conn.receive_data(wire[i : i + 1])
    assert [e.correlation_id for e in events if isinstance(e, RequestReceived)] == list(range(5))
    assert conn.buffered_bytes == 0


def test_responses_leave_in_request_order() -> None:
    conn = KafkaServerConnection()
    events = conn.receive_data(heartbeat(1) + heartbeat(2) + heartbeat(3))
    first, second, third = (e for e in events if isinstance(e, RequestReceived))
    resp = hb.HeartbeatResponse()
    assert conn.send_response(third, resp) == b""
    assert conn.send_response(second, resp) == b""
    out = conn.send_response(first, resp)
    ids = []
    pos = 0
    while pos < len(out):
        (size, corr) = struct.unpack_from(">ii", out, pos)
        ids.append(corr)
        pos += 4 + size
    assert ids == [1, 2, 3]
    assert conn.in_flight == 0


def test_in_flight_is_bounded_and_reading_resumes() -> None:
    conn = KafkaServerConnection(max_in_flight=2)
    events = conn.receive_data(b"".join(heartbeat(c) for c in range(5)))
    assert len(events) == 2 and conn.reading_paused
    conn.send_response(events[0], hb.HeartbeatResponse())  # type: ignore[arg-type]
    assert not conn.reading_paused
    more = conn.receive_data(b"")
    assert [e.correlation_id for e in more] == [2]  # type: ignore[union-attr]


def test_peer_far_ahead_while_paused_is_closed() -> None:
    conn = KafkaServerConnection(max_in_flight=1, max_frame_bytes=64, max_buffered_bytes=200)
    events = conn.receive_data(b"".join(heartbeat(c) for c in range(20)))
    assert isinstance(events[-1], ConnectionClosed)
    assert conn.closed and conn.receive_data(heartbeat(99)) == []


def test_oversized_frame_closes_before_the_body_arrives() -> None:
    conn = KafkaServerConnection(max_frame_bytes=1024)
    events = conn.receive_data(i32(1025))
    assert events == [ConnectionClosed("frame of 1025 bytes exceeds the 1024 limit")]
    assert conn.closed


@pytest.mark.parametrize("size", [-1, 0, 7])
def test_short_or_negative_frame_closes(size: int) -> None:
    events = KafkaServerConnection().receive_data(i32(size) + b"\x00" * 8)
    assert len(events) == 1 and isinstance(events[0], ConnectionClosed)


def test_malformed_body_closes_after_earlier_requests() -> None:
    bad = frame(header_v1(12, 0, 9, "c") + i16(50) + b"g")  # group id longer than the frame
    events = KafkaServerConnection().receive_data(heartbeat(1) + bad + heartbeat(2))
    assert isinstance(events[0], RequestReceived)
    assert isinstance(events[1], ConnectionClosed) and "correlation id 9" in events[1].reason
    assert len(events) == 2


def test_trailing_bytes_after_a_body_are_ignored_as_kafka_does() -> None:
    # librdkafka 2.16's Metadata v12 request for every topic carries 3 such bytes.
    events = KafkaServerConnection().receive_data(frame(heartbeat(1)[4:] + b"\x01\x00\x00"))
    assert isinstance(events[0], RequestReceived)
    assert events[0].correlation_id == 1


def test_reused_correlation_id_in_flight_closes() -> None:
    events = KafkaServerConnection().receive_data(heartbeat(1) + heartbeat(1))
    assert isinstance(events[1], ConnectionClosed)


def test_unknown_api_key_gets_unsupported_version() -> None:
    conn = KafkaServerConnection()
    (event,) = conn.receive_data(frame(header_v1(999, 0, 5, "c") + b"junk"))
    assert event == UnsupportedRequest(999, 0, 5)
    assert conn.send_unsupported(event) == frame(i32(5) + i16(UNSUPPORTED_VERSION))


def test_unsupported_api_versions_version_gets_a_v0_answer_with_our_table() -> None:
    conn = KafkaServerConnection()
    (event,) = conn.receive_data(frame(header_v2(18, 99, 6, "c") + b"\x00\x00"))
    assert isinstance(event, UnsupportedRequest)
    out = conn.send_unsupported(event)
    size, corr = struct.unpack_from(">ii", out)
    assert size == len(out) - 4 and corr == 6
    body = serde.decode(av.RESPONSE, 0, out[8:])
    assert body.error_code == UNSUPPORTED_VERSION
    assert {k.api_key: (k.min_version, k.max_version) for k in body.api_keys} == SUPPORTED


def test_unsupported_version_of_a_known_api() -> None:
    conn = KafkaServerConnection()
    (event,) = conn.receive_data(frame(header_v1(0, 2, 3, "c")))  # Produce v2: too old
    assert event == UnsupportedRequest(0, 2, 3)


def test_api_versions_v0_request_round_trip_through_the_connection() -> None:
    conn = KafkaServerConnection()
    (event,) = conn.receive_data(API_VERSIONS_V0_REQ)
    assert isinstance(event, RequestReceived)
    out = conn.send_response(event, av.ApiVersionsResponse())
    assert out == frame(i32(7) + i16(0) + i32(0))


def test_acks_zero_produce_frees_its_slot_silently() -> None:
    body = i16(-1) + i16(0) + i32(100) + i32(0)
    conn = KafkaServerConnection()
    (event,) = conn.receive_data(frame(header_v1(0, 3, 4, "p") + body))
    assert isinstance(event, RequestReceived) and not event.expects_response
    assert conn.send_response(event, None) == b""
    assert conn.in_flight == 0


def test_answering_twice_is_the_callers_error() -> None:
    conn = KafkaServerConnection()
    (event,) = conn.receive_data(heartbeat(1))
    assert isinstance(event, RequestReceived)
    conn.send_response(event, hb.HeartbeatResponse())
    with pytest.raises(InvalidArgumentError):
        conn.send_response(event, hb.HeartbeatResponse())


def test_a_response_of_the_wrong_type_is_the_callers_error() -> None:
    conn = KafkaServerConnection()
    (event,) = conn.receive_data(heartbeat(1))
    assert isinstance(event, RequestReceived)
    with pytest.raises(InvalidArgumentError):
        conn.send_response(event, av.ApiVersionsResponse())


def test_compact_lengths_reach_flexible_headers() -> None:
    # Header v2's client id is a legacy string even in flexible versions; body is compact.
    # An unknown tagged field (tag 7, 2 bytes) in the header and in the body is skipped.
    unknown_tag = uv(1) + uv(7) + uv(2) + b"zz"
    conn = KafkaServerConnection()
    (event,) = conn.receive_data(frame(header_v1(20, 4, 1, "cli") + unknown_tag
                                       + uv(3) + uv(2) + b"a" + uv(2) + b"b" + i32(500)
                                       + unknown_tag))
    assert isinstance(event, RequestReceived)
    assert event.client_id == "cli"
    assert event.request == dt.DeleteTopicsRequest(topic_names=("a", "b"), timeout_ms=500)


def big_produce(corr: int, records: bytes) -> bytes:
    """A Produce v3 frame for topic "t" partition 0 carrying ``records`` as they are."""
    body = (i16(-1) + i16(1) + i32(100) + i32(1) + i16(1) + b"t" + i32(1) + i32(0)
            + i32(len(records)) + records)
    return frame(header_v1(0, 3, corr, "p") + body)


@pytest.mark.parametrize("chunk", [1000, 4096, 65536 + 3, 100_000])
def test_a_large_frame_received_in_place_gives_the_same_requests(chunk: int) -> None:
    """Large frames are read into their own buffer (``receive_buffer``) however the
    socket slices them, interleaved with small ones read the ordinary way; the requests
    are those ``receive_data`` alone gives, and the records are the bytes sent."""
    records = [bytes([n]) * (DIRECT_FRAME_BYTES + 1000 * n) for n in range(1, 4)]
    wire = (heartbeat(1) + big_produce(2, records[0]) + heartbeat(3) + big_produce(4, records[1])
            + big_produce(5, records[2]) + heartbeat(6))
    plain = KafkaServerConnection().receive_data(wire)
    conn = KafkaServerConnection()
    events: list[object] = []
    pos, direct = 0, 0
    while pos < len(wire):
        into = conn.receive_buffer()
        if into is None:
            events += conn.receive_data(wire[pos : pos + chunk])
            pos += chunk
        else:
            n = min(len(into), chunk, len(wire) - pos)
            into[:n] = wire[pos : pos + n]
            pos += n
            direct += n
            events += conn.body_received(n)
        for e in events:
            if isinstance(e, RequestReceived) and e.correlation_id in (2, 4, 5):
                (part,) = e.request.topic_data[0].partition_data
                assert bytes(part.records) == records[(2, 4, 5).index(e.correlation_id)]
                # a view of the frame's own buffer, not a copy of the bytes
                assert isinstance(part.records, memoryview)
                assert len(part.records.obj) == e.frame_bytes - 4
    assert direct > 0 and conn.buffered_bytes == 0 and not conn.closed
    assert [(e.correlation_id, e.frame_bytes) for e in events] == [  # type: ignore[attr-defined]
        (e.correlation_id, e.frame_bytes) for e in plain]  # type: ignore[attr-defined]
    assert [e.request for e in events] == [e.request for e in plain]  # type: ignore[attr-defined]


def test_receive_data_completes_a_frame_being_received_in_place() -> None:
    """A driver that asked for ``receive_buffer`` once may still feed ``receive_data``:
    the bytes fill the frame first, then the ordinary buffer."""
    wire = big_produce(1, b"x" * DIRECT_FRAME_BYTES) + heartbeat(2)
    conn = KafkaServerConnection()
    assert conn.receive_data(wire[:100]) == []
    assert conn.head_frame_bytes() == len(wire) - len(heartbeat(2))
    into = conn.receive_buffer()
    assert into is not None and len(into) == len(wire) - len(heartbeat(2)) - 100
    events = conn.receive_data(wire[100:])
    assert [e.correlation_id for e in events] == [1, 2]  # type: ignore[attr-defined]
    assert conn.buffered_bytes == 0


def test_no_frame_is_received_in_place_while_in_flight_is_full() -> None:
    conn = KafkaServerConnection(max_in_flight=1)
    conn.receive_data(heartbeat(1) + big_produce(2, b"x" * DIRECT_FRAME_BYTES)[:100])
    assert conn.reading_paused and conn.receive_buffer() is None
