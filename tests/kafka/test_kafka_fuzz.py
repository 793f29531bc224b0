"""Hostile bytes: the decoder raises DecodeError or nothing; the connection emits events.

Random bytes, and valid encodings truncated, extended or with a byte flipped, for
every API and version; length fields claiming 2**31 elements in a few bytes must be
refused before anything is allocated (kio's native decoder aborts the process on the
first of these).
"""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka_values import all_versions, message_values
from test_kafka_golden import frame, header_v1, header_v2

from sentinel.errors import DecodeError
from sentinel.protocol.kafka import serde
from sentinel.protocol.kafka.connection import KafkaServerConnection
from sentinel.protocol.kafka.events import ConnectionClosed, RequestReceived, UnsupportedRequest
from sentinel.protocol.kafka.headers import RequestHeader, encode_request_header
from sentinel.protocol.kafka.headers import request_header_version as hv
from sentinel.protocol.kafka.messages import REQUESTS, RESPONSES
from sentinel.protocol.kafka.messages import metadata as md
from sentinel.protocol.kafka.messages import produce as pr

CASES = all_versions()
DEFAULT_RESPONSES = {key: message.body.cls() for key, message in RESPONSES.items()}
SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def decode_or_refuse(message: Any, version: int, data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        serde.decode(message, version, data)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[Any, int, bytes]:
    """A valid encoding of a random (message, version), then damaged."""
    _, _, message, version = draw(st.sampled_from(CASES))
    data = bytearray(serde.encode(message, version, draw(message_values(message, version))))
    how = draw(st.sampled_from(["truncate", "flip", "extend", "set_ff"]))
    if how == "truncate" and data:
        del data[draw(st.integers(0, len(data) - 1)):]
    elif how == "flip" and data:
        data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    elif how == "set_ff" and data:
        i = draw(st.integers(0, len(data) - 1))
        data[i : i + 4] = b"\xff\xff\xff\x7f"
    else:
        data += draw(st.binary(min_size=1, max_size=8))
    return message, version, bytes(data)


@SETTINGS
@given(case=st.sampled_from(CASES), data=st.binary(max_size=64))
def test_random_bytes_decode_or_raise_decode_error(case: Any, data: bytes) -> None:
    _, _, message, version = case
    decode_or_refuse(message, version, data)


@SETTINGS
@given(case=mutated())
def test_damaged_encodings_decode_or_raise_decode_error(case: tuple[Any, int, bytes]) -> None:
    decode_or_refuse(*case)


@pytest.mark.parametrize("body", [
    b"\xff\xff\xff\xff\x0f",          # compact array of 2**32 - 2 topics
    b"\x80\x80\x80\x80\x10",          # varint past 32 bits
    b"\x02\xff\xff\xff\xff\x0f",      # one topic, its UUID truncated
])
def test_metadata_v12_length_bombs(body: bytes) -> None:
    with pytest.raises(DecodeError):
        serde.decode(md.REQUEST, 12, body)


@pytest.mark.parametrize("body", [
    struct.pack(">i", 2**31 - 1),                           # 2**31 - 1 topics
    struct.pack(">i", -2),                                  # negative count
    struct.pack(">ih", 1, 32767) + b"x",                    # a name longer than the frame
    struct.pack(">ih", 1, 2) + b"\xff\xfe",                 # a name that is not UTF-8
])
def test_metadata_v1_length_bombs(body: bytes) -> None:
    with pytest.raises(DecodeError):
        serde.decode(md.REQUEST, 1, body)


def test_records_longer_than_the_frame() -> None:
    body = struct.pack(">hhiih", -1, 1, 0, 1, 1) + b"t" + struct.pack(">iii", 1, 0, 2**31 - 1)
    with pytest.raises(DecodeError):
        serde.decode(pr.REQUEST, 3, body)


def _valid_frame(message: Any, version: int, value: Any, corr: int) -> bytes:
    out = bytearray()
    encode_request_header(out, RequestHeader(message.api_key, version, corr, "fz"),
                          hv(message.api_key, version))
    serde.encode_into(out, message, version, value)
    return frame(bytes(out))


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """A few request frames (some damaged, some random) and the chunk sizes to feed."""
    parts = []
    for corr in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["valid", "damaged", "random", "header"]))
        if kind == "random":
            parts.append(draw(st.binary(max_size=40)))
            continue
        if kind == "header":
            key = draw(st.integers(-2, 70))
            version = draw(st.integers(-1, 20))
            hdr = header_v2 if draw(st.booleans()) else header_v1
            parts.append(frame(hdr(key, version, corr, "x") + draw(st.binary(max_size=24))))
            continue
        message = REQUESTS[draw(st.sampled_from(sorted(REQUESTS)))]
        version = draw(st.integers(message.lo, message.hi))
        wire = bytearray(_valid_frame(message, version,
                                      draw(message_values(message, version)), corr))
        if kind == "damaged":
            i = draw(st.integers(0, len(wire) - 1))
            wire[i] ^= 1 << draw(st.integers(0, 7))
        parts.append(bytes(wire))
    chunks = draw(st.lists(st.integers(1, 64), max_size=20))
    return b"".join(parts), chunks


@SETTINGS
@given(stream=streams())
def test_connection_only_emits_its_events(stream: tuple[bytes, list[int]]) -> None:
    data, chunks = stream
    conn = KafkaServerConnection(max_frame_bytes=4096, max_in_flight=3)
    pos = 0
    closed = False
    for size in [*chunks, len(data)]:
        events = conn.receive_data(data[pos : pos + size])
        pos += size
        for event in events:
            assert not closed, "events after ConnectionClosed"
            if isinstance(event, ConnectionClosed):
                closed = True
            elif isinstance(event, UnsupportedRequest):
                assert conn.send_unsupported(event) or conn.in_flight
            else:
                assert isinstance(event, RequestReceived)
        # answer everything in flight so reading resumes
        for event in events:
            if isinstance(event, RequestReceived) and not conn.closed:
                conn.send_response(event, DEFAULT_RESPONSES[event.api_key])
    assert conn.closed == closed

