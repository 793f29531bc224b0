"""Golden bytes: expected frames built independently with ``struct`` from Kafka's spec.

Each test writes the bytes by hand (the protocol guide's field order, nothing from our
schema rows) and checks both directions: our decoder reads them into the expected
values, and our encoder writes exactly them.
"""

from __future__ import annotations

import struct

from sentinel.protocol.kafka import serde
from sentinel.protocol.kafka.connection import KafkaServerConnection
from sentinel.protocol.kafka.events import RequestReceived
from sentinel.protocol.kafka.messages import api_versions as av
from sentinel.protocol.kafka.messages import delete_groups as dg
from sentinel.protocol.kafka.messages import metadata as md
from sentinel.protocol.kafka.messages import offset_delete as od
from sentinel.protocol.kafka.messages import produce as pr


def i8(v: int) -> bytes:
    return struct.pack(">b", v)


def i16(v: int) -> bytes:
    return struct.pack(">h", v)


def i32(v: int) -> bytes:
    return struct.pack(">i", v)


def i64(v: int) -> bytes:
    return struct.pack(">q", v)


def s16(text: str | None) -> bytes:
    """Legacy string: int16 length, -1 for null."""
    if text is None:
        return i16(-1)
    return i16(len(text.encode())) + text.encode()


def uv(n: int) -> bytes:
    """Unsigned varint (values here stay below 128 * 128)."""
    return bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7])


def cs(text: str | None) -> bytes:
    """Compact string: uvarint length + 1, 0 for null."""
    if text is None:
        return uv(0)
    return uv(len(text.encode()) + 1) + text.encode()


NO_TAGS = uv(0)


def frame(body: bytes) -> bytes:
    return i32(len(body)) + body


def header_v1(key: int, version: int, corr: int, client: str | None) -> bytes:
    return i16(key) + i16(version) + i32(corr) + s16(client)


def header_v2(key: int, version: int, corr: int, client: str | None) -> bytes:
    return header_v1(key, version, corr, client) + NO_TAGS


def received(wire: bytes) -> RequestReceived:
    conn = KafkaServerConnection()
    (event,) = conn.receive_data(wire)
    assert isinstance(event, RequestReceived)
    return event


def answer(wire: bytes, response: object) -> bytes:
    conn = KafkaServerConnection()
    (event,) = conn.receive_data(wire)
    assert isinstance(event, RequestReceived)
    return conn.send_response(event, response)


# ApiVersions ------------------------------------------------------------------------

API_VERSIONS_V0_REQ = frame(header_v1(18, 0, 7, "cli"))
API_VERSIONS_V3_REQ = frame(header_v2(18, 3, 8, "rdk") + cs("librdkafka") + cs("2.6.0") + NO_TAGS)

KEYS = ((0, 3, 9), (1, 4, 11))
RESPONSE_KEYS = tuple(
    av.ApiVersion(api_key=k, min_version=lo, max_version=hi) for k, lo, hi in KEYS)


def test_api_versions_v0_request() -> None:
    event = received(API_VERSIONS_V0_REQ)
    assert (event.api_key, event.api_version, event.correlation_id, event.client_id) == (
        18, 0, 7, "cli")
    assert event.request == av.ApiVersionsRequest()


def test_api_versions_v3_request() -> None:
    event = received(API_VERSIONS_V3_REQ)
    assert event.correlation_id == 8 and event.client_id == "rdk"
    assert event.request == av.ApiVersionsRequest(
        client_software_name="librdkafka", client_software_version="2.6.0")
    assert serde.encode(av.REQUEST, 3, event.request) == API_VERSIONS_V3_REQ[4 + 14 :]


def test_api_versions_v0_response() -> None:
    body = i16(0) + i32(2) + b"".join(i16(k) + i16(lo) + i16(hi) for k, lo, hi in KEYS)
    expected = frame(i32(7) + body)
    got = answer(API_VERSIONS_V0_REQ, av.ApiVersionsResponse(api_keys=RESPONSE_KEYS))
    assert got == expected


def test_api_versions_v3_response_uses_header_v0() -> None:
    # Flexible body, but the response header stays v0 (no tagged-field byte after the id).
    body = (i16(0) + uv(3) + b"".join(i16(k) + i16(lo) + i16(hi) + NO_TAGS for k, lo, hi in KEYS)
            + i32(5) + NO_TAGS)
    expected = frame(i32(8) + body)
    response = av.ApiVersionsResponse(api_keys=RESPONSE_KEYS, throttle_time_ms=5)
    assert answer(API_VERSIONS_V3_REQ, response) == expected


def test_api_versions_v3_response_tagged_fields() -> None:
    # Tag 1 (FinalizedFeaturesEpoch, int64) is written because it differs from -1.
    body = (i16(0) + uv(1) + i32(0) + uv(1) + uv(1) + uv(8) + i64(42))
    value = av.ApiVersionsResponse(finalized_features_epoch=42)
    assert serde.encode(av.RESPONSE, 3, value) == body
    assert serde.decode(av.RESPONSE, 3, body) == value


# Metadata ---------------------------------------------------------------------------


def test_metadata_v1_request() -> None:
    wire = frame(header_v1(3, 1, 11, "k") + i32(2) + s16("a") + s16("bb"))
    event = received(wire)
    assert event.request == md.MetadataRequest(
        topics=(md.MetadataRequestTopic(name="a"), md.MetadataRequestTopic(name="bb")))
    # null array = every topic
    event = received(frame(header_v1(3, 1, 12, "k") + i32(-1)))
    assert event.request.topics is None


def test_metadata_v1_response() -> None:
    body = (i32(1) + i32(1) + s16("h") + i32(9093) + s16(None)  # brokers
            + i32(1)  # controller id
            + i32(1) + i16(0) + s16("t") + i8(0)  # topics: error, name, internal
            + i32(1) + i16(0) + i32(0) + i32(1) + i32(1) + i32(1) + i32(1) + i32(1))
    value = md.MetadataResponse(
        brokers=(md.MetadataResponseBroker(node_id=1, host="h", port=9093, rack=None),),
        controller_id=1,
        topics=(md.MetadataResponseTopic(name="t", partitions=(
            md.MetadataResponsePartition(partition_index=0, leader_id=1,
                                         replica_nodes=(1,), isr_nodes=(1,)),)),))
    assert serde.encode(md.RESPONSE, 1, value) == body
    assert serde.decode(md.RESPONSE, 1, body) == value


def test_metadata_v9_request() -> None:
    body = uv(2) + cs("t") + NO_TAGS + i8(1) + i8(0) + i8(1) + NO_TAGS
    event = received(frame(header_v2(3, 9, 13, "k") + body))
    assert event.request == md.MetadataRequest(
        topics=(md.MetadataRequestTopic(name="t"),), allow_auto_topic_creation=True,
        include_cluster_authorized_operations=False, include_topic_authorized_operations=True)


def test_metadata_v9_response() -> None:
    body = (i32(0)  # throttle
            + uv(2) + i32(1) + cs("h") + i32(9093) + cs("r1") + NO_TAGS  # brokers
            + cs("c1") + i32(1)  # cluster id, controller id
            + uv(2) + i16(0) + cs("t") + i8(0)  # topics: error, name, internal
            + uv(2) + i16(0) + i32(0) + i32(1) + i32(4)  # partition: err, idx, leader, epoch
            + uv(2) + i32(1) + uv(2) + i32(1) + uv(1) + NO_TAGS  # replicas, isr, offline
            + i32(-2147483648) + NO_TAGS  # topic authorized operations
            + i32(-2147483648) + NO_TAGS)  # cluster authorized operations
    value = md.MetadataResponse(
        brokers=(md.MetadataResponseBroker(node_id=1, host="h", port=9093, rack="r1"),),
        cluster_id="c1", controller_id=1,
        topics=(md.MetadataResponseTopic(name="t", partitions=(
            md.MetadataResponsePartition(partition_index=0, leader_id=1, leader_epoch=4,
                                         replica_nodes=(1,), isr_nodes=(1,)),)),))
    assert serde.encode(md.RESPONSE, 9, value) == body
    assert serde.decode(md.RESPONSE, 9, body) == value
    conn = KafkaServerConnection()
    (event,) = conn.receive_data(frame(header_v2(3, 9, 21, "k") + uv(1) + i8(1) + i8(0)
                                       + i8(0) + NO_TAGS))
    assert isinstance(event, RequestReceived)
    # flexible response: header v1 carries a tagged-field section
    assert conn.send_response(event, value) == frame(i32(21) + NO_TAGS + body)


# Produce ----------------------------------------------------------------------------

RECORDS = b"\x00" * 12 + b"batch-bytes"


def test_produce_v3_request() -> None:
    body = (s16(None) + i16(-1) + i32(1500)
            + i32(1) + s16("t") + i32(1) + i32(2) + i32(len(RECORDS)) + RECORDS)
    event = received(frame(header_v1(0, 3, 1, "p") + body))
    assert event.expects_response
    assert event.request == pr.ProduceRequest(
        transactional_id=None, acks=-1, timeout_ms=1500,
        topic_data=(pr.TopicProduceData(name="t", partition_data=(
            pr.PartitionProduceData(index=2, records=RECORDS),)),))
    assert serde.encode(pr.REQUEST, 3, event.request) == body


def test_produce_v9_request() -> None:
    body = (cs("tx") + i16(0) + i32(30000)
            + uv(2) + cs("t") + uv(2) + i32(0) + uv(len(RECORDS) + 1) + RECORDS + NO_TAGS
            + NO_TAGS + NO_TAGS)
    event = received(frame(header_v2(0, 9, 2, "p") + body))
    assert not event.expects_response  # acks=0: no answer on the wire
    assert event.request == pr.ProduceRequest(
        transactional_id="tx", acks=0, timeout_ms=30000,
        topic_data=(pr.TopicProduceData(name="t", partition_data=(
            pr.PartitionProduceData(index=0, records=RECORDS),)),))
    assert serde.encode(pr.REQUEST, 9, event.request) == body


# DeleteGroups and OffsetDelete --------------------------------------------------------


def test_delete_groups_v0_request_and_response() -> None:
    body = i32(2) + s16("g1") + s16("")
    wire = frame(header_v1(42, 0, 3, "adm") + body)
    event = received(wire)
    assert event.request == dg.DeleteGroupsRequest(groups_names=("g1", ""))
    assert serde.encode(dg.REQUEST, 0, event.request) == body
    response = dg.DeleteGroupsResponse(throttle_time_ms=0, results=(
        dg.DeletableGroupResult(group_id="g1", error_code=68),
        dg.DeletableGroupResult(group_id="", error_code=24)))
    expected = i32(0) + i32(2) + s16("g1") + i16(68) + s16("") + i16(24)
    assert answer(wire, response) == frame(i32(3) + expected)


def test_delete_groups_v2_is_flexible() -> None:
    body = uv(2) + cs("g1") + NO_TAGS
    wire = frame(header_v2(42, 2, 4, "adm") + body)
    event = received(wire)
    assert event.request == dg.DeleteGroupsRequest(groups_names=("g1",))
    assert serde.encode(dg.REQUEST, 2, event.request) == body
    response = dg.DeleteGroupsResponse(results=(
        dg.DeletableGroupResult(group_id="g1", error_code=69),))
    expected = i32(0) + uv(2) + cs("g1") + i16(69) + NO_TAGS + NO_TAGS
    # Response header v1: the correlation id, then its own tagged fields.
    assert answer(wire, response) == frame(i32(4) + NO_TAGS + expected)


def test_offset_delete_v0_request_and_response() -> None:
    body = s16("g") + i32(1) + s16("t") + i32(2) + i32(0) + i32(3)
    wire = frame(header_v1(47, 0, 5, "adm") + body)
    event = received(wire)
    assert event.request == od.OffsetDeleteRequest(group_id="g", topics=(
        od.OffsetDeleteRequestTopic(name="t", partitions=(
            od.OffsetDeleteRequestPartition(partition_index=0),
            od.OffsetDeleteRequestPartition(partition_index=3))),))
    assert serde.encode(od.REQUEST, 0, event.request) == body
    response = od.OffsetDeleteResponse(error_code=0, throttle_time_ms=0, topics=(
        od.OffsetDeleteResponseTopic(name="t", partitions=(
            od.OffsetDeleteResponsePartition(partition_index=0, error_code=86),
            od.OffsetDeleteResponsePartition(partition_index=3, error_code=0))),))
    expected = (i16(0) + i32(0) + i32(1) + s16("t") + i32(2)
                + i32(0) + i16(86) + i32(3) + i16(0))
    assert answer(wire, response) == frame(i32(5) + expected)
    refused = od.OffsetDeleteResponse(error_code=69)
    assert answer(wire, refused) == frame(i32(5) + i16(69) + i32(0) + i32(0))
