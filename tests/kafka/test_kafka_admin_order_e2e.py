"""Admin requests pipelined on one Kafka connection take effect in the order sent, as
Kafka's (which serves a connection's requests one at a time): a client that sends
CreateTopics then DeleteTopics of the same topic, AlterConfigs then DescribeConfigs,
DeleteRecords then ListOffsets, or CreateTopics then Produce to it without waiting for
the answers may rely on it.

Each round sends its requests in one write (decoded together, their handlers started
together) and checks every answer against strictly sequential processing. Without the
door's ordering (``server/kafka/request_order.py``) every round of 20 came out wrong in
four of the eight cases: on a broker alone an admin call happens to finish within its
handler's first step, so only DeleteRecords behind Produce requests (which await their
append) overtook them; in a cluster (of one) the admin calls await the controller's Raft
log, and topic changes, config changes and DeleteRecords all took effect out of order.
CreateTopics then Produce came out right even then; it stays as a check."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka_raw import RawKafka

from broker_process import BrokerProcess
from cluster.harness import Cluster
from sentinel.protocol.kafka.messages import alter_configs as ac
from sentinel.protocol.kafka.messages import create_partitions as cp
from sentinel.protocol.kafka.messages import incremental_alter_configs as iac
from sentinel.protocol.kafka.messages.create_topics import CreatableTopic, CreateTopicsRequest
from sentinel.protocol.kafka.messages.delete_records import (
    DeleteRecordsPartition,
    DeleteRecordsRequest,
    DeleteRecordsTopic,
)
from sentinel.protocol.kafka.messages.delete_topics import DeleteTopicsRequest
from sentinel.protocol.kafka.messages.describe_configs import (
    DescribeConfigsRequest,
    DescribeConfigsResource,
)
from sentinel.protocol.kafka.messages.list_offsets import (
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsTopic,
)
from sentinel.protocol.kafka.messages.metadata import MetadataRequest, MetadataRequestTopic
from sentinel.protocol.kafka.messages.produce import (
    PartitionProduceData,
    ProduceRequest,
    TopicProduceData,
)
from sentinel.record import build_batch

ROUNDS = 20
TOPIC = 2  # a config resource type
SET = 0  # an IncrementalAlterConfigs operation
EARLIEST, LATEST = -2, -1  # ListOffsets timestamps; LATEST: DeleteRecords to the end
NOT_LEADER = 6
CREATE, DELETE, DELETE_RECORDS, METADATA, PRODUCE, LIST_OFFSETS = 19, 20, 21, 3, 0, 2
ALTER, DESCRIBE, INCREMENTAL, GROW = 33, 32, 44, 37
VERSIONS = {CREATE: 4, DELETE: 4, DELETE_RECORDS: 2, METADATA: 12, PRODUCE: 7,
            LIST_OFFSETS: 7, ALTER: 2, DESCRIBE: 1, INCREMENTAL: 1, GROW: 1}


@pytest.fixture(params=["alone", "cluster"])
def kafka_address(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A broker alone (its admin calls change the registry at once) and a cluster of
    one (they go through the controller's Raft log, awaited)."""
    if request.param == "alone":
        broker = BrokerProcess(tmp_path / "data").start()
        try:
            yield broker.kafka_address
        finally:
            broker.kill()
        return
    cluster = Cluster(1, tmp_path).start()
    try:
        yield cluster.brokers[1].kafka_address
    finally:
        cluster.close()


def pipeline(kafka: RawKafka, requests: list[tuple[int, Any]]) -> list[Any]:
    """Send ``requests`` in one write, without waiting; their answers, in order."""
    frames, ids = [], []
    for api_key, request in requests:
        cid, payload = kafka.request_bytes(api_key, VERSIONS[api_key], request)
        frames.append(len(payload).to_bytes(4, "big") + payload)
        ids.append(cid)
    kafka.sock.sendall(b"".join(frames))
    return [kafka.read_response(api_key, VERSIONS[api_key], cid)
            for (api_key, _), cid in zip(requests, ids, strict=True)]


def create(name: str, partitions: int) -> tuple[int, CreateTopicsRequest]:
    return CREATE, CreateTopicsRequest(topics=(
        CreatableTopic(name=name, num_partitions=partitions, replication_factor=1),))


def delete(name: str) -> tuple[int, DeleteTopicsRequest]:
    return DELETE, DeleteTopicsRequest(topic_names=(name,), timeout_ms=10_000)


def metadata(name: str) -> tuple[int, MetadataRequest]:
    return METADATA, MetadataRequest(topics=(MetadataRequestTopic(name=name),),
                                     allow_auto_topic_creation=False)


def produce(name: str, value: bytes) -> tuple[int, ProduceRequest]:
    """acks=all: once answered, the record is below the high watermark (with acks=1 a
    cluster answers before its high watermark moves, as Kafka does)."""
    return PRODUCE, ProduceRequest(acks=-1, timeout_ms=10_000, topic_data=(
        TopicProduceData(name=name, partition_data=(PartitionProduceData(
            index=0, records=build_batch([(None, value, (), 1_700_000_000_000)])),)),))


def grow(name: str, count: int) -> tuple[int, cp.CreatePartitionsRequest]:
    return GROW, cp.CreatePartitionsRequest(
        topics=(cp.CreatePartitionsTopic(name=name, count=count, assignments=None),),
        timeout_ms=10_000)


def delete_records(name: str, before: int) -> tuple[int, DeleteRecordsRequest]:
    return DELETE_RECORDS, DeleteRecordsRequest(timeout_ms=10_000, topics=(DeleteRecordsTopic(
        name=name, partitions=(DeleteRecordsPartition(partition_index=0, offset=before),)),))


def list_offset(name: str, timestamp: int) -> tuple[int, ListOffsetsRequest]:
    return LIST_OFFSETS, ListOffsetsRequest(replica_id=-1, topics=(ListOffsetsTopic(
        name=name, partitions=(ListOffsetsPartition(partition_index=0, timestamp=timestamp),)),))


def led_topic(kafka: RawKafka, name: str) -> None:
    """Create ``name`` (one partition) and wait until its partition takes records (in a
    cluster its leader is elected after CreateTopics is answered, as in Kafka)."""
    assert pipeline(kafka, [create(name, 1)])[0].topics[0].error_code == 0
    deadline = time.monotonic() + 20
    while pipeline(kafka, [list_offset(name, LATEST)])[0].topics[0].partitions[0].error_code:
        assert time.monotonic() < deadline, f"{name} has no leader"
        time.sleep(0.05)


def produced(answer: Any) -> tuple[int, int]:
    part = answer.responses[0].partition_responses[0]
    return part.error_code, part.base_offset


def describe(name: str) -> tuple[int, DescribeConfigsRequest]:
    return DESCRIBE, DescribeConfigsRequest(resources=(DescribeConfigsResource(
        resource_type=TOPIC, resource_name=name, configuration_keys=("retention.ms",)),))


def retention(answer: Any) -> str | None:
    (result,) = answer.results
    assert result.error_code == 0, result
    return {c.name: c.value for c in result.configs}["retention.ms"]


def test_topic_changes_then_metadata_in_order(kafka_address: str) -> None:
    wrong = []
    with RawKafka(kafka_address) as kafka:
        for round_ in range(ROUNDS):
            name = f"cd{round_}"
            answers = pipeline(kafka, [create(name, 1), grow(name, 2), metadata(name),
                                       delete(name), create(name, 3), metadata(name)])
            got = (answers[0].topics[0].error_code, answers[1].results[0].error_code,
                   len(answers[2].topics[0].partitions), answers[3].responses[0].error_code,
                   answers[4].topics[0].error_code, answers[5].topics[0].error_code,
                   len(answers[5].topics[0].partitions))
            if got != (0, 0, 2, 0, 0, 0, 3):
                wrong.append((round_, got))
    assert not wrong, (
        f"(round, (create, grow, partitions, delete, create, metadata, partitions)): {wrong}")


def test_create_then_produce_in_order(kafka_address: str) -> None:
    """Produce creates an unknown topic (--auto-create-topics): if it went first, the
    CreateTopics before it would answer TOPIC_ALREADY_EXISTS. In a cluster the new
    partition may have no leader yet (NOT_LEADER_OR_FOLLOWER: the client retries)."""
    wrong = []
    with RawKafka(kafka_address) as kafka:
        for round_ in range(ROUNDS):
            name = f"cp{round_}"
            answers = pipeline(kafka, [create(name, 1), produce(name, b"v%d" % round_)])
            got = (answers[0].topics[0].error_code, produced(answers[1]))
            if got not in ((0, (0, 0)), (0, (NOT_LEADER, -1))):
                wrong.append((round_, got))
    assert not wrong, f"(round, (create, (produce, base offset))): {wrong}"


def test_config_changes_then_describe_in_order(kafka_address: str) -> None:
    wrong = []
    with RawKafka(kafka_address) as kafka:
        assert pipeline(kafka, [create("c", 1)])[0].topics[0].error_code == 0
        for round_ in range(ROUNDS):
            whole, step = str(1_000_000 + round_), str(2_000_000 + round_)
            answers = pipeline(kafka, [
                (ALTER, ac.AlterConfigsRequest(resources=(ac.AlterConfigsResource(
                    resource_type=TOPIC, resource_name="c",
                    configs=(ac.AlterableConfig(name="retention.ms", value=whole),)),))),
                describe("c"),
                (INCREMENTAL, iac.IncrementalAlterConfigsRequest(resources=(
                    iac.AlterConfigsResource(resource_type=TOPIC, resource_name="c", configs=(
                        iac.AlterableConfig(name="retention.ms", config_operation=SET,
                                            value=step),)),))),
                describe("c"),
            ])
            assert answers[0].responses[0].error_code == 0, answers[0]
            assert answers[2].responses[0].error_code == 0, answers[2]
            got = (retention(answers[1]), retention(answers[3]))
            if got != (whole, step):
                wrong.append((round_, (whole, step), got))
    assert not wrong, f"(round, sent, described): {wrong}"


def test_delete_records_between_produces_in_order(kafka_address: str) -> None:
    """Produce, Produce, DeleteRecords up to the high watermark, ListOffsets earliest,
    Produce: the admin request between them sees exactly the records sent before it, and
    the earliest offset is the one it set, and the record after it is kept. (Produce then
    ListOffsets latest is not ordered: neither is a barrier, Produce stays pipelined.)"""
    wrong = []
    with RawKafka(kafka_address) as kafka:
        led_topic(kafka, "r")
        for round_ in range(ROUNDS):
            answers = pipeline(kafka, [
                produce("r", b"x"), produce("r", b"y"), delete_records("r", LATEST),
                list_offset("r", EARLIEST), produce("r", b"z"),
            ])
            deleted = answers[2].topics[0].partitions[0]
            earliest = answers[3].topics[0].partitions[0]
            got = (produced(answers[0]), produced(answers[1]),
                   (deleted.error_code, deleted.low_watermark),
                   (earliest.error_code, earliest.offset), produced(answers[4]))
            # In a cluster the partition's log also holds entries of its Raft log's own.
            base = got[0][1]
            kept = got[4][0] == 0 and got[4][1] >= base + 2
            if got[:4] != ((0, base), (0, base + 1), (0, base + 2), (0, base + 2)) or not kept:
                wrong.append((round_, got))
    assert not wrong, (
        f"(round, (produce, produce, delete records, earliest, produce)): {wrong}")
