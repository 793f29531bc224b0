"""The Kafka listener of a real ``sentinel-server``, spoken to byte by byte.

Unknown API keys and versions get UNSUPPORTED_VERSION; a malformed or oversized frame
closes that one connection with one log line and the others go on; answers come in
request order however many are pipelined (beyond the in-flight bound too); an
idempotent producer's duplicate is answered with the original offset and a sequence
gap refused; acks=0 is not answered (a refused one closes its connection); the door's
metrics count what it sees.
"""

from __future__ import annotations

import struct
import time
import urllib.request

import pytest
from kafka_raw import RawKafka

from broker_process import BrokerProcess, module_broker
from sentinel.protocol.kafka.connection import DEFAULT_MAX_IN_FLIGHT
from sentinel.protocol.kafka.messages import api_versions as av
from sentinel.protocol.kafka.messages import fetch as fe
from sentinel.protocol.kafka.messages import init_producer_id as ipi
from sentinel.protocol.kafka.messages import list_offsets as lo
from sentinel.protocol.kafka.messages import metadata as md
from sentinel.protocol.kafka.messages import produce as pr
from sentinel.record import build_batch

UNSUPPORTED_VERSION = 35
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
# Record timestamps of now: older ones would be removed by time retention (7 days),
# which the broker checks every second here.
NOW_MS = int(time.time() * 1000)


broker = module_broker("kafka-door")


def metadata_request(*topics: str) -> md.MetadataRequest:
    return md.MetadataRequest(
        topics=tuple(md.MetadataRequestTopic(name=t) for t in topics),
        allow_auto_topic_creation=True,
    )


def produce_request(topic: str, batch: bytes, acks: int = -1) -> pr.ProduceRequest:
    return pr.ProduceRequest(acks=acks, timeout_ms=5000, topic_data=(
        pr.TopicProduceData(name=topic, partition_data=(
            pr.PartitionProduceData(index=0, records=batch),)),))  # fmt: skip


def latest_offset(client: RawKafka, topic: str) -> int:
    answer = client.call(2, 7, lo.ListOffsetsRequest(replica_id=-1, topics=(
        lo.ListOffsetsTopic(name=topic, partitions=(
            lo.ListOffsetsPartition(partition_index=0, timestamp=-1),)),)))  # fmt: skip
    (part,) = answer.topics[0].partitions
    assert part.error_code == 0
    return int(part.offset)


def scrape(broker: BrokerProcess) -> str:
    return urllib.request.urlopen(broker.metrics_url, timeout=5).read().decode()


def test_api_versions_advertises_what_is_served(broker: BrokerProcess) -> None:
    with RawKafka(broker.kafka_address) as client:
        for version in (0, 3, 4):
            answer = client.call(18, version, av.ApiVersionsRequest(
                client_software_name="t", client_software_version="1"))  # fmt: skip
            assert answer.error_code == 0
            table = {k.api_key: (k.min_version, k.max_version) for k in answer.api_keys}
            # librdkafka needs Produce 3+ and Fetch 4+ together for the v2 batch format.
            assert table[0] == (3, 9) and table[1] == (4, 11) and table[3] == (1, 12)
            assert {2, 18, 19, 20, 21, 22, 32, 33, 37, 44, 60} <= set(table)


def test_unknown_api_key_or_version_gets_unsupported_version(broker: BrokerProcess) -> None:
    with RawKafka(broker.kafka_address) as client:
        for api_key, version in ((999, 0), (0, 2), (3, 13), (1, 99)):
            client.send_frame(struct.pack(">hhi", api_key, version, 77) + b"\x00\x00")
            frame = client.read_frame()
            assert frame == struct.pack(">ih", 77, UNSUPPORTED_VERSION)
        # ApiVersions at a version we do not speak: the v0 answer, error 35, our table.
        client.send_frame(struct.pack(">hhi", 18, 99, 78) + b"\x00\x00")
        frame = client.read_frame()
        assert frame[:4] == struct.pack(">i", 78)
        assert struct.unpack_from(">h", frame, 4)[0] == UNSUPPORTED_VERSION
        # The connection still serves.
        assert client.call(3, 12, metadata_request()).brokers[0].port == broker.kafka_port


@pytest.mark.parametrize(
    "garbage",
    [
        struct.pack(">i", 12) + struct.pack(">hhi", 3, 12, 5) + b"\xff\xff\xff\xff",  # bad body
        struct.pack(">i", 2**31 - 1),  # oversized: refused on the size prefix
        struct.pack(">i", 3) + b"abc",  # shorter than a request header
    ],
    ids=["malformed", "oversized", "short"],
)
def test_bad_frame_closes_only_that_connection(broker: BrokerProcess, garbage: bytes) -> None:
    with RawKafka(broker.kafka_address) as good, RawKafka(broker.kafka_address) as bad:
        assert good.call(3, 12, metadata_request()).controller_id == 0
        bad.sock.sendall(garbage)
        assert bad.read_frame() == b""  # closed by the broker
        assert good.call(3, 12, metadata_request()).controller_id == 0
    deadline = time.monotonic() + 10
    while "kafka connection 127.0.0.1:" not in broker.read_log():
        assert time.monotonic() < deadline, "no log line for the closed connection"
        time.sleep(0.05)


def test_pipelined_requests_beyond_the_in_flight_bound_are_answered_in_order(
    broker: BrokerProcess,
) -> None:
    count = DEFAULT_MAX_IN_FLIGHT * 3
    with RawKafka(broker.kafka_address) as client:
        ids = []
        payload = bytearray()
        for _ in range(count):
            cid, body = client.request_bytes(3, 9, metadata_request())
            ids.append(cid)
            payload += struct.pack(">i", len(body)) + body
        client.sock.sendall(payload)  # all at once: the broker pauses reading and resumes
        for cid in ids:
            assert client.read_response(3, 9, cid).brokers[0].node_id == 0


def test_pipelined_produces_to_one_partition_append_in_request_order(
    broker: BrokerProcess,
) -> None:
    with RawKafka(broker.kafka_address) as client:
        client.call(3, 12, metadata_request("piped"))
        ids, payload = [], bytearray()
        for i in range(12):  # not idempotent: only the order on the wire orders them
            batch = build_batch([(None, b"%d" % i, (), NOW_MS)])
            cid, body = client.request_bytes(0, 9, produce_request("piped", batch, acks=1))
            ids.append(cid)
            payload += struct.pack(">i", len(body)) + body
        client.sock.sendall(payload)
        offsets = [client.read_response(0, 9, cid).responses[0].partition_responses[0]
                   .base_offset for cid in ids]  # fmt: skip
        assert offsets == list(range(12))


def test_idempotent_producer_duplicates_and_gaps(broker: BrokerProcess) -> None:
    with RawKafka(broker.kafka_address) as client:
        client.call(3, 12, metadata_request("idem"))  # auto-created
        ident = client.call(22, 4, ipi.InitProducerIdRequest(transactional_id=None,
                                                             transaction_timeout_ms=-1))
        assert ident.error_code == 0 and ident.producer_id >= 0 and ident.producer_epoch == 0

        def batch(seq: int, n: int = 5) -> bytes:
            return build_batch([(b"k", b"v%d" % (seq + i), (), NOW_MS)
                                for i in range(n)], producer_id=ident.producer_id,
                               producer_epoch=0, base_sequence=seq)

        def send(seq: int) -> pr.PartitionProduceResponse:
            answer = client.call(0, 9, produce_request("idem", batch(seq)))
            return answer.responses[0].partition_responses[0]

        first = send(0)
        assert (first.error_code, first.base_offset) == (0, 0)
        again = send(0)  # a retry: answered with the original offset, not stored twice
        assert (again.error_code, again.base_offset) == (0, 0)
        assert send(10).error_code == OUT_OF_ORDER_SEQUENCE_NUMBER  # a gap
        nxt = send(5)
        assert (nxt.error_code, nxt.base_offset) == (0, 5)
        assert latest_offset(client, "idem") == 10
        # KIP-360: the producer names itself and gets its next epoch.
        bumped = client.call(22, 4, ipi.InitProducerIdRequest(
            transactional_id=None, transaction_timeout_ms=-1,
            producer_id=ident.producer_id, producer_epoch=0))  # fmt: skip
        assert (bumped.producer_id, bumped.producer_epoch) == (ident.producer_id, 1)


def test_acks_zero_is_not_answered_and_the_next_request_is(broker: BrokerProcess) -> None:
    with RawKafka(broker.kafka_address) as client:
        client.call(3, 12, metadata_request("acks0"))
        batch = build_batch([(None, b"fire and forget", (), NOW_MS)])
        _cid, body = client.request_bytes(0, 9, produce_request("acks0", batch, acks=0))
        client.send_frame(body)
        # The next frame on the wire answers the Metadata request, not the produce.
        deadline = time.monotonic() + 10
        while latest_offset(client, "acks0") != 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_a_refused_acks_zero_produce_closes_its_connection(broker: BrokerProcess) -> None:
    """As Kafka's broker: a refusal has no answer to travel in, so the connection is
    closed and the producer asks for metadata again (a partition that does not exist
    here; in a cluster, a broker that is not the leader)."""
    with RawKafka(broker.kafka_address) as client, RawKafka(broker.kafka_address) as other:
        client.call(3, 12, metadata_request("acks0-refused"))
        batch = build_batch([(None, b"into the void", (), NOW_MS)])
        request = pr.ProduceRequest(acks=0, timeout_ms=5000, topic_data=(
            pr.TopicProduceData(name="acks0-refused", partition_data=(
                pr.PartitionProduceData(index=7, records=batch),)),))  # fmt: skip
        _cid, body = client.request_bytes(0, 9, request)
        client.send_frame(body)
        assert client.read_frame() == b""
        assert latest_offset(other, "acks0-refused") == 0  # the other connection goes on
    closed = [x for x in scrape(broker).splitlines()
              if x.startswith('sentinel_kafka_closed_connections_total{reason="acks0_refused"}')]
    assert closed and float(closed[0].split()[1]) >= 1


def test_metrics_count_connections_requests_and_traffic(broker: BrokerProcess) -> None:
    with RawKafka(broker.kafka_address) as a, RawKafka(broker.kafka_address) as b:
        a.call(3, 12, metadata_request("metered"))
        batch = build_batch([(None, b"r%d" % i, (), NOW_MS) for i in range(3)])
        assert a.call(0, 9, produce_request("metered", batch)).responses[0] \
            .partition_responses[0].error_code == 0
        answer = b.call(1, 11, fe.FetchRequest(max_wait_ms=0, min_bytes=0, topics=(
            fe.FetchTopic(topic="metered", partitions=(
                fe.FetchPartition(partition=0, fetch_offset=1,
                                  partition_max_bytes=1 << 20),)),)))  # fmt: skip
        assert answer.responses[0].partitions[0].records
        text = scrape(broker)
        (line,) = [x for x in text.splitlines() if x.startswith("sentinel_kafka_connections ")]
        assert float(line.split()[1]) >= 2
    assert 'sentinel_kafka_requests_total{api="metadata",code="0"}' in text
    assert 'sentinel_kafka_request_seconds_bucket{api="metadata"' in text
    # The broker-wide traffic counters count what the Kafka door moved too.
    assert 'sentinel_messages_produced_total{topic="metered"} 3.0' in text
    assert f'sentinel_bytes_produced_total{{topic="metered"}} {float(len(batch))}' in text
    assert 'sentinel_messages_fetched_total{topic="metered"} 2.0' in text  # from offset 1
    deadline = time.monotonic() + 10
    while True:  # closed connections leave the count
        (line,) = [x for x in scrape(broker).splitlines()
                   if x.startswith("sentinel_kafka_connections ")]
        if float(line.split()[1]) == 0:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
