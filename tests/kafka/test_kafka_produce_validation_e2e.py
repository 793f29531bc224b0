"""A batch whose CRC is valid but whose records lie, produced to a real broker through
both doors: refused with Kafka's code, nothing stored (the partition's end offset stays
0 and the next honest batch gets offset 0).

The count lie is the attack's worst case: the header says 1 record (lastOffsetDelta 0)
over 3; stored, it made the log hand out offset 1 next, and consumers saw offsets
0, 1, 2, 1, 2, 3.
"""

from __future__ import annotations

import struct

import crc32c as crc32c_lib
import grpc
import pytest
from kafka_raw import RawKafka
from test_kafka_door_e2e import latest_offset

from broker_process import BrokerProcess, module_broker
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc
from sentinel.protocol.kafka.messages import metadata as md
from sentinel.protocol.kafka.messages import produce as pr
from sentinel.record import build_batch

CORRUPT_MESSAGE = 2
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
NOW = 1_700_000_000_000


def honest(n: int = 3) -> bytes:
    return build_batch([(None, b"value-%d" % i, (), NOW) for i in range(n)])


def with_crc(data: bytearray) -> bytes:
    data[17:21] = struct.pack(">I", crc32c_lib.crc32c(bytes(data[21:])))
    return bytes(data)


def count_lie() -> bytes:
    """Three records under a header that says one, with the CRC made valid again."""
    data = bytearray(honest(3))
    data[23:27] = struct.pack(">i", 0)  # lastOffsetDelta
    data[57:61] = struct.pack(">i", 1)  # recordsCount
    return with_crc(data)


def transactional() -> bytes:
    data = bytearray(honest(3))
    data[21:23] = struct.pack(">h", 0x10)
    return with_crc(data)


broker = module_broker("produce-validation")


def kafka_produce(client: RawKafka, topic: str, batch: bytes) -> pr.PartitionProduceResponse:
    answer = client.call(0, 7, pr.ProduceRequest(acks=-1, timeout_ms=5000, topic_data=(
        pr.TopicProduceData(name=topic, partition_data=(
            pr.PartitionProduceData(index=0, records=batch),)),)))  # fmt: skip
    (part,) = answer.responses[0].partition_responses
    return part  # type: ignore[no-any-return]


def create(client: RawKafka, topic: str) -> None:
    client.call(3, 9, md.MetadataRequest(
        topics=(md.MetadataRequestTopic(name=topic),), allow_auto_topic_creation=True))  # fmt: skip


@pytest.mark.parametrize(
    ("topic", "batch", "code"),
    [
        ("count-lie", count_lie(), CORRUPT_MESSAGE),
        ("txn-bit", transactional(), TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
    ],
)
def test_the_kafka_door_refuses_and_stores_nothing(
    broker: BrokerProcess, topic: str, batch: bytes, code: int
) -> None:
    with RawKafka(broker.kafka_address) as client:
        create(client, topic)
        refused = kafka_produce(client, topic, batch)
        assert refused.error_code == code
        assert latest_offset(client, topic) == 0
        accepted = kafka_produce(client, topic, honest())
        assert (accepted.error_code, accepted.base_offset) == (0, 0)
        assert latest_offset(client, topic) == 3


@pytest.mark.parametrize(
    ("topic", "batch", "reason"),
    [
        ("grpc-count-lie", count_lie(), "CORRUPT_MESSAGE"),
        ("grpc-txn-bit", transactional(), "INVALID_RECORD"),
    ],
)
def test_the_grpc_door_refuses_and_stores_nothing(
    broker: BrokerProcess, topic: str, batch: bytes, reason: str
) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        stub.CreateTopic(pb.CreateTopicRequest(name=topic, partitions=1), timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            stub.Produce(
                pb.ProduceRequest(topic=topic, partition=0, record_batches=batch), timeout=10
            )
        metadata = dict(err.value.trailing_metadata() or ())  # type: ignore[attr-defined]
        assert metadata.get("sentinel-error") == reason
        accepted = stub.Produce(
            pb.ProduceRequest(topic=topic, partition=0, record_batches=honest()), timeout=10
        )
        assert accepted.base_offset == 0
    with RawKafka(broker.kafka_address) as client:
        assert latest_offset(client, topic) == 3
