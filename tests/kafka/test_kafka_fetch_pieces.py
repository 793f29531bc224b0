"""A fetch answer's stored batches go to the socket by reference, and the bytes are the
same as if they had been joined and copied.

The codec writes a ``records`` field given as ``wire.Pieces`` (several buffers) exactly as
the joined bytes; into a ``ScatterOutput`` every buffer of at least ``SCATTER_MIN_BYTES``
goes by reference; the connection's ``send_response_pieces`` joined is ``send_response``,
in request order; the broker's fetch hands over the log's stored batches unjoined; and a
real broker answers fetches of many large batches over several partitions, cut by the
response limit, with exactly the batches produced, counted by the traffic metrics.
"""

from __future__ import annotations

import struct
import time
import urllib.request

import pytest
from kafka_raw import RawKafka
from test_kafka_golden import frame, header_v1

from broker_process import BrokerProcess, module_broker
from sentinel.client import Admin
from sentinel.protocol.kafka import serde, wire
from sentinel.protocol.kafka.connection import KafkaServerConnection
from sentinel.protocol.kafka.events import RequestReceived
from sentinel.protocol.kafka.messages import fetch as fe
from sentinel.protocol.kafka.messages import produce as pr
from sentinel.protocol.kafka.wire import SCATTER_MIN_BYTES, Pieces, ScatterOutput
from sentinel.record import build_batch, iter_batches, parse_header

BIG = SCATTER_MIN_BYTES
NOW_MS = int(time.time() * 1000)


def parts_of(*sizes: int) -> tuple[bytes | memoryview, ...]:
    """Distinct buffers of ``sizes``; odd positions as views of a larger bytes."""
    out: list[bytes | memoryview] = []
    for i, n in enumerate(sizes):
        data = bytes([i % 251]) * (n + 3)
        out.append(memoryview(data)[1 : n + 1] if i % 2 else data[:n])
    return tuple(out)


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize(
    "sizes", [(), (0,), (10,), (BIG,), (10, BIG, 5), (BIG, BIG + 1), (BIG - 1, 3, BIG * 2)]
)
def test_pieces_write_as_their_join_and_large_ones_by_reference(
    sizes: tuple[int, ...], compact: bool
) -> None:
    parts = parts_of(*sizes)
    joined = b"".join(parts)
    expected = bytearray(b"head")
    wire.write_bytes(expected, joined, compact)
    copied = bytearray(b"head")
    wire.write_bytes(copied, Pieces(parts), compact)
    assert copied == expected
    out = ScatterOutput()
    out += b"head"
    wire.write_bytes(out, Pieces(parts), compact)
    out += b"tail"
    pieces = out.pieces()
    assert b"".join(pieces) == bytes(expected) + b"tail"
    assert out.size == len(expected) + 4
    by_reference = [p for p in parts if len(p) >= BIG]
    assert [p for p in pieces if any(p is q for q in parts)] == by_reference
    assert all(len(p) < BIG or any(p is q for q in parts) for p in pieces[1:-1])


def test_a_single_large_bytes_value_is_attached_too() -> None:
    value = b"v" * BIG
    out = ScatterOutput()
    wire.write_bytes(out, value, False)
    assert out.pieces()[1] is value and b"".join(out.pieces()) == struct.pack(">i", BIG) + value


def test_pieces_compare_as_their_bytes() -> None:
    parts = parts_of(3, 4)
    assert Pieces(parts) == b"".join(parts) and b"".join(parts) == Pieces(parts)
    assert Pieces(parts) == Pieces((b"".join(parts),))
    assert Pieces(parts) != b"other" and len(Pieces(parts)) == 7 and bytes(Pieces(())) == b""


def fetch_response(records: object) -> fe.FetchResponse:
    return fe.FetchResponse(responses=(fe.FetchableTopicResponse(topic="t", partitions=(
        fe.PartitionData(partition_index=0, high_watermark=9, records=records),  # type: ignore[arg-type]
        fe.PartitionData(partition_index=1, high_watermark=0, records=b""),
    )),))  # fmt: skip


@pytest.mark.parametrize("version", [4, 7, 11])
def test_a_fetch_response_with_pieces_encodes_as_with_joined_records(version: int) -> None:
    parts = parts_of(BIG, 100, BIG * 3)
    expected = bytearray()
    serde.encode_into(expected, fe.RESPONSE, version, fetch_response(b"".join(parts)))
    out = ScatterOutput()
    serde.encode_into(out, fe.RESPONSE, version, fetch_response(Pieces(parts)))
    assert b"".join(out.pieces()) == expected
    decoded = serde.decode(fe.RESPONSE, version, expected)
    assert bytes(decoded.responses[0].partitions[0].records) == b"".join(parts)


def fetch_frame(corr: int) -> bytes:
    body = struct.pack(">iiiib", -1, 0, 0, 1 << 20, 0) + struct.pack(">i", 1)
    body += struct.pack(">h", 1) + b"t" + struct.pack(">iiqi", 1, 0, 0, 1 << 20)
    return frame(header_v1(1, 4, corr, "c") + body)


def test_send_response_pieces_is_send_response_by_reference_and_in_order() -> None:
    parts = parts_of(BIG, 7, BIG * 2)
    plain = KafkaServerConnection()
    (a,) = plain.receive_data(fetch_frame(1))
    assert isinstance(a, RequestReceived)
    expected = plain.send_response(a, fetch_response(Pieces(parts)))
    (size,) = struct.unpack_from(">i", expected)
    assert size == len(expected) - 4

    conn = KafkaServerConnection()
    first, second = conn.receive_data(fetch_frame(1) + fetch_frame(2))
    assert isinstance(first, RequestReceived) and isinstance(second, RequestReceived)
    assert conn.send_response_pieces(second, fetch_response(Pieces(parts))) == []
    pieces = conn.send_response_pieces(first, fetch_response(Pieces(parts)))
    out = b"".join(pieces)
    second_bytes = expected[:4] + struct.pack(">i", 2) + expected[8:]  # correlation id 2
    assert out == expected + second_bytes
    assert sum(1 for p in pieces for q in parts if p is q) == 4  # 2 large parts, 2 answers
    assert conn.in_flight == 0


def test_an_answer_with_nothing_large_is_one_bytes() -> None:
    conn = KafkaServerConnection()
    (request,) = conn.receive_data(fetch_frame(5))
    assert isinstance(request, RequestReceived)
    (piece,) = conn.send_response_pieces(request, fetch_response(Pieces(parts_of(10, 20))))
    assert type(piece) is bytes and struct.unpack_from(">ii", piece) == (len(piece) - 4, 5)


# ---------------------------------------------------------------------- a real broker


broker = module_broker("kafka-pieces")


def big_batch(tag: int, records: int = 40, size: int = 3000) -> bytes:
    values = [(None, bytes([65 + tag % 26]) * size + b"%d" % i, (), NOW_MS) for i in range(records)]
    return build_batch(values)


def test_fetches_through_the_door_return_the_stored_batches_exactly(broker: BrokerProcess) -> None:
    with Admin(broker.grpc_address) as admin:
        admin.create_topic("pieces", partitions=2)
    produced: dict[int, list[bytes]] = {0: [], 1: []}
    with RawKafka(broker.kafka_address) as client:
        for i in range(6):
            for p in (0, 1):
                batch = big_batch(i * 2 + p)
                assert len(batch) > BIG
                answer = client.call(0, 7, pr.ProduceRequest(acks=1, timeout_ms=5000, topic_data=(
                    pr.TopicProduceData(name="pieces", partition_data=(
                        pr.PartitionProduceData(index=p, records=batch),)),)))  # fmt: skip
                assert answer.responses[0].partition_responses[0].error_code == 0
                produced[p].append(batch)
        for version in (4, 11):
            got: dict[int, list[bytes]] = {0: [], 1: []}
            offsets = {0: 0, 1: 0}
            rounds = 0
            while offsets != {0: 240, 1: 240}:
                rounds += 1
                assert rounds < 50
                # room for about 3 batches a response: partition 1 is often left out
                answer = client.call(1, version, fe.FetchRequest(
                    max_wait_ms=0, min_bytes=0, max_bytes=3 * 122_000, topics=(
                        fe.FetchTopic(topic="pieces", partitions=tuple(
                            fe.FetchPartition(partition=p, fetch_offset=offsets[p],
                                              partition_max_bytes=1 << 20)
                            for p in (0, 1))),)))  # fmt: skip
                for part in answer.responses[0].partitions:
                    assert part.error_code == 0
                    for view in iter_batches(part.records or b""):
                        header = parse_header(view)
                        assert header.base_offset == offsets[part.partition_index]
                        got[part.partition_index].append(bytes(view))
                        offsets[part.partition_index] = header.next_offset
            for p in (0, 1):  # the broker stamped the base offset (and the leader epoch)
                assert [b[17:] for b in got[p]] == [b[17:] for b in produced[p]]
    text = urllib.request.urlopen(broker.metrics_url, timeout=5).read().decode()
    assert 'sentinel_messages_fetched_total{topic="pieces"} 960.0' in text  # 2 x 480
