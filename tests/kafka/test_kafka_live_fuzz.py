"""Hostile bytes over real sockets to a live ``sentinel-server``'s Kafka listener: random
frames, valid requests mutated, lying length prefixes. Every bad connection ends (the
broker closes it, after at most well-framed responses such as UNSUPPORTED_VERSION), and
the listener keeps serving a well-behaved client (ApiVersions) on a connection opened
before the attack and on new ones.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka_raw import RawKafka

from broker_process import BrokerProcess, module_broker
from sentinel.protocol.kafka import serde
from sentinel.protocol.kafka.headers import (
    RequestHeader,
    encode_request_header,
    request_header_version,
)
from sentinel.protocol.kafka.messages import REQUESTS
from sentinel.protocol.kafka.messages import api_versions as av
from sentinel.protocol.kafka.messages import heartbeat as hb
from sentinel.protocol.kafka.messages import metadata as md

# Requests that answer at once (no long-poll, no waiting for a group) whatever they say.
VALID = [
    (18, 0, av.REQUEST.body.cls()),
    (18, 3, av.REQUEST.body.cls(client_software_name="fuzz", client_software_version="1")),
    (3, 1, md.REQUEST.body.cls(topics=[])),
    (3, 12, md.REQUEST.body.cls(topics=[])),
    (12, 3, hb.REQUEST.body.cls(group_id="fuzz", generation_id=1, member_id="m")),
]
SLOW_KEYS = {1, 11, 14}  # Fetch, JoinGroup, SyncGroup may wait by design


broker = module_broker("kafka-fuzz")


@pytest.fixture(scope="module")
def steady(broker: BrokerProcess) -> Iterator[RawKafka]:
    """A well-behaved client connected before the attack and kept throughout."""
    with RawKafka(broker.kafka_address) as client:
        yield client


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


@st.composite
def mutated_request(draw: st.DrawFn) -> bytes:
    api_key, version, request = draw(st.sampled_from(VALID))
    data = bytearray()
    header = RequestHeader(api_key, version, draw(st.integers(0, 2**31 - 1)), "fuzz")
    encode_request_header(data, header, request_header_version(api_key, version))
    serde.encode_into(data, REQUESTS[api_key], version, request)
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["truncate", "flip", "extend", "set_ff"]))
        if how == "truncate" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        elif how == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        elif how == "set_ff" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i : i + 4] = b"\xff\xff\xff\x7f"
        else:
            data += draw(st.binary(min_size=1, max_size=16))
    if bytes(data[:2]) in {struct.pack(">h", k) for k in SLOW_KEYS}:
        data[:2] = b"\x00\x12"  # ApiVersions instead
    return frame(bytes(data))


random_header = st.builds(
    lambda key, version, cid, body: frame(struct.pack(">hhi", key, version, cid) + body),
    st.integers(-1, 80).filter(lambda k: k not in SLOW_KEYS), st.integers(-2, 20),
    st.integers(-(2**31), 2**31 - 1), st.binary(max_size=48))
lying_length = st.builds(
    lambda size, body: struct.pack(">i", size) + body,
    st.sampled_from([-1, -(2**31), 0, 1, 3, 2**31 - 1, 200 * 1024 * 1024]),
    st.binary(max_size=32))
attack = st.lists(st.one_of(mutated_request(), random_header, lying_length,
                            st.binary(min_size=1, max_size=64)), min_size=1, max_size=3)


def received_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the broker sends until it closes the connection (asserted)."""
    data = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except ConnectionError:  # closed with a reset
            return bytes(data)
        except TimeoutError:
            pytest.fail(f"the broker kept a bad connection open; it sent {bytes(data)!r}")
        if not chunk:
            return bytes(data)
        data += chunk


def assert_framed(data: bytes) -> None:
    """Whole response frames, each with at least a correlation id."""
    at = 0
    while at < len(data):
        assert len(data) - at >= 4, data
        (size,) = struct.unpack_from(">i", data, at)
        assert size >= 4 and at + 4 + size <= len(data), (size, data)
        at += 4 + size


def assert_serving(broker: BrokerProcess, steady: RawKafka) -> None:
    for client in (steady, RawKafka(broker.kafka_address)):
        response = client.call(18, 3, av.REQUEST.body.cls(client_software_name="ok",
                                                          client_software_version="1"))
        assert response.error_code == 0
        assert any(k.api_key == 0 for k in response.api_keys)
    client.close()


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(frames=attack)
def test_hostile_connections_end_and_the_listener_keeps_serving(
        broker: BrokerProcess, steady: RawKafka, frames: list[bytes]) -> None:
    host, _, port = broker.kafka_address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        try:
            for data in frames:
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)  # no more: the broker must end this connection
        except OSError:
            pass  # it already did (EPIPE, ECONNRESET, ENOTCONN, as the race goes)
        assert_framed(received_until_closed(sock))
    assert_serving(broker, steady)


def test_the_broker_is_still_healthy_after_the_attack(
        broker: BrokerProcess, steady: RawKafka) -> None:
    assert_serving(broker, steady)
    assert broker.proc is not None and broker.proc.poll() is None

