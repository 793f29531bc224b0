"""The Kafka door draws from the broker's request budget (``--max-request-bytes-in-flight``,
Kafka's ``queued.max.request.bytes``): a large frame's room is held step by step before
its bytes are read, a connection without room stops being read, and small requests are
never held up.

Raw frames on real sockets against a real ``sentinel-server``; the budget is read from
``sentinel_request_bytes_in_flight``."""

from __future__ import annotations

import re
import socket
import struct
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from broker_process import BrokerProcess
from metrics_polling import wait_for

MIB = 1024 * 1024
BUDGET = 8 * MIB
LARGE = 6 * MIB  # two do not fit in the budget together


@pytest.fixture
def broker(start_broker: Callable[..., BrokerProcess]) -> Iterator[BrokerProcess]:
    yield start_broker(max_request_bytes_in_flight=BUDGET, max_request_bytes=LARGE + MIB)


def in_flight(broker: BrokerProcess) -> float:
    text = urllib.request.urlopen(broker.metrics_url, timeout=5).read().decode()
    found = re.search(r"^sentinel_request_bytes_in_flight (\S+)$", text, re.M)
    assert found, "the broker exports sentinel_request_bytes_in_flight"
    return float(found.group(1))


def connect(broker: BrokerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", broker.kafka_port), timeout=10)


def start_large_produce(broker: BrokerProcess, correlation_id: int) -> socket.socket:
    """A Produce v3 frame that announces LARGE bytes and sends 1 MiB of them, then stalls."""
    header = struct.pack(">hhih", 0, 3, correlation_id, 4) + b"test"
    sock = connect(broker)
    sock.sendall(struct.pack(">i", LARGE) + header + bytes(MIB))
    return sock


def api_versions_answered(broker: BrokerProcess) -> bool:
    with connect(broker) as sock:
        request = struct.pack(">hhih", 18, 0, 7, 4) + b"test"
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))
        body = sock.recv(size, socket.MSG_WAITALL)
        correlation_id, error_code = struct.unpack_from(">ih", body)
        return correlation_id == 7 and error_code == 0


def test_large_frames_hold_room_as_they_arrive_and_small_requests_pass(
    broker: BrokerProcess,
) -> None:
    """A large frame holds what it delivered and room for a step of at most as much
    again, never the whole frame it announced (a client that announces and stalls would
    hold room it never sends: the attack of test_kafka_connection_bounds_e2e)."""
    assert in_flight(broker) == 0
    first = start_large_produce(broker, 1)
    wait_for(lambda: in_flight(broker) >= MIB, "the first frame's MiB to be held")
    assert in_flight(broker) <= 2 * MIB + 128 * 1024
    waiting = [start_large_produce(broker, 2 + i) for i in range(3)]
    try:
        wait_for(lambda: in_flight(broker) >= 4 * MIB, "every frame's MiB to be held")
        time.sleep(0.3)  # give the broker the chance to overdraw, which it must not take
        assert in_flight(broker) <= 4 * (2 * MIB + 128 * 1024)
        # Small requests are admitted at once, even with large ones waiting.
        assert api_versions_answered(broker)
        # A sender goes away: its room is returned.
        first.close()
        wait_for(lambda: in_flight(broker) <= 3 * (2 * MIB + 128 * 1024),
                 "the first frame's room to be returned")
    finally:
        for sock in waiting:
            sock.close()
    wait_for(lambda: in_flight(broker) == 0, "the budget to be free again")
    assert api_versions_answered(broker)


def test_a_client_that_stalls_mid_frame_is_cut_off_and_its_room_returned(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    """--kafka-frame-timeout-ms: a frame announced and left unfinished does not hold its
    room in the budget until the client goes (the budget is back; the socket is closed)."""
    broker = start_broker(
        max_request_bytes_in_flight=BUDGET, max_request_bytes=LARGE + MIB,
        kafka_frame_timeout_ms=500,
    )
    stalled = start_large_produce(broker, 1)
    with stalled:
        stalled.settimeout(30)
        # The broker closes it: recv returns b"" (or the reset surfaces as an error).
        try:
            closed = stalled.recv(1) == b""
        except ConnectionError:
            closed = True
        assert closed
    wait_for(lambda: in_flight(broker) == 0 or None, "the stalled frame's room returned", 10)
    assert api_versions_answered(broker)
    log = broker.read_log()
    assert "did not arrive within 0.5 s" in log
