"""A request's work is bounded, not only its bytes: a 6 MB Metadata request naming one
topic a million times used to hold the event loop ~25 s (decoded into a million
structs, answered with a million topic entries), so that every other client, and a
consumer group's heartbeats, waited. The broker now refuses a request holding more
than ``MAX_REQUEST_ELEMENTS`` array elements (the connection is closed, as for any
malformed request) and describes a topic named twice once, as Kafka's broker does."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka_raw import RawKafka

from broker_process import BrokerProcess
from sentinel.client import Admin
from sentinel.protocol.kafka.messages import api_versions as av
from sentinel.protocol.kafka.wire import MAX_REQUEST_ELEMENTS

TOPIC = b"work"
CLIENT = b"work-test"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(Path(tmp_path_factory.mktemp("kafka-work")) / "data").start()
    with Admin(proc.address) as admin:
        admin.create_topic(TOPIC.decode(), 2)
    yield proc
    proc.kill()


def metadata_v4(correlation_id: int, repeats: int) -> bytes:
    """A Metadata v4 request naming ``TOPIC`` ``repeats`` times (built directly: our own
    encoder takes seconds for a million topics)."""
    header = struct.pack(">hhih", 3, 4, correlation_id, len(CLIENT)) + CLIENT
    one = struct.pack(">h", len(TOPIC)) + TOPIC
    return header + struct.pack(">i", repeats) + one * repeats + b"\x00"


def steady_answers(client: RawKafka) -> float:
    """Seconds an ApiVersions takes on ``client``'s connection."""
    started = time.monotonic()
    response = client.call(18, 0, av.REQUEST.body.cls())
    assert response.error_code == 0
    return time.monotonic() - started


def test_a_request_holding_too_many_elements_is_refused_at_once(broker: BrokerProcess) -> None:
    with RawKafka(broker.kafka_address, timeout=60) as steady, \
            RawKafka(broker.kafka_address, timeout=60) as attacker:
        attacker.send_frame(metadata_v4(7, 1_000_000))  # 6 MB, under the frame limit
        started = time.monotonic()
        assert attacker.read_frame() == b"", "a million-topic Metadata request was answered"
        closed_after = time.monotonic() - started
        # Before: ~25 s, the other client's ApiVersions waiting all along.
        assert closed_after < 10, f"the refusal took {closed_after:.1f} s"
        assert steady_answers(steady) < 5


def test_a_topic_named_many_times_is_described_once(broker: BrokerProcess) -> None:
    repeats = MAX_REQUEST_ELEMENTS  # as many as a request may hold: answered
    with RawKafka(broker.kafka_address, timeout=60) as client:
        client.send_frame(metadata_v4(9, repeats))
        response = client.read_response(3, 4, 9)
    assert [t.name for t in response.topics] == [TOPIC.decode()]
    assert len(response.topics[0].partitions) == 2
    with RawKafka(broker.kafka_address, timeout=60) as client:  # one more: refused
        client.send_frame(metadata_v4(11, repeats + 1))
        assert client.read_frame() == b""
