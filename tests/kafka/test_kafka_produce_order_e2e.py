"""Produce requests pipelined on one Kafka connection reach each partition's log in the
order they were sent, as Kafka's (which serves a connection's requests one at a time):
a producer without idempotence relies on it (librdkafka keeps many requests in flight,
each with every partition that has a batch ready).

Found by damage-probing a broker whose 16 partitions outnumbered its open-files limit:
records of one partition came back in another order than they were acknowledged. Two
ways a later request overtook an earlier one on the way to a partition's append: a
request with several partitions appends them in tasks of their own, which start after a
later request's handler already ran; and an append that first reopens its released
partition's files in a worker lets a later one, arriving once they are open, append
first."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from kafka_raw import RawKafka

from broker_process import BrokerProcess
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc
from sentinel.protocol.kafka.messages.produce import (
    PartitionProduceData,
    ProduceRequest,
    TopicProduceData,
)
from sentinel.record import build_batch, decode_records, iter_batches

Start = Callable[..., BrokerProcess]
PARTITIONS = 4
ROUNDS = 30


def request(values: dict[int, bytes]) -> ProduceRequest:
    """A Produce v7 (acks 1) of one single-record batch per partition of ``values``."""
    return ProduceRequest(
        acks=1,
        timeout_ms=30_000,
        topic_data=(
            TopicProduceData(
                name="o",
                partition_data=tuple(
                    PartitionProduceData(
                        index=p, records=build_batch([(None, value, (), 1_700_000_000_000)])
                    )
                    for p, value in values.items()
                ),
            ),
        ),
    )


def stored(address: str, partition: int) -> list[bytes]:
    stub = pb_grpc.SentinelStub(grpc.insecure_channel(address))  # type: ignore[no-untyped-call]
    answer = stub.Fetch(
        pb.FetchRequest(topic="o", partition=partition, offset=0, max_bytes=1 << 22),
        timeout=30,
    )
    return [
        r.value or b""
        for batch in iter_batches(answer.record_batches)
        for r in decode_records(batch)
    ]


@pytest.mark.parametrize("open_partitions", [0, 1], ids=["default", "one-open"])
def test_pipelined_requests_reach_each_partition_in_the_order_sent(
    start_broker: Start, open_partitions: int
) -> None:
    """Each round: one request for every partition, then one request per partition, all
    sent in one write (decoded together); with ``--max-open-partitions 1`` each append
    also reopens its partition's files."""
    flags = {"max_open_partitions": open_partitions} if open_partitions else {}
    broker = start_broker(**flags)
    stub = pb_grpc.SentinelStub(grpc.insecure_channel(broker.address))  # type: ignore[no-untyped-call]
    stub.CreateTopic(pb.CreateTopicRequest(name="o", partitions=PARTITIONS))
    sent: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    with RawKafka(broker.kafka_address) as kafka:
        for round_ in range(ROUNDS):
            frames, ids = [], []
            wide = {p: b"r%d-all-%d" % (round_, p) for p in range(PARTITIONS)}
            singles = [{p: b"r%d-one-%d" % (round_, p)} for p in range(PARTITIONS)]
            for values in (wide, *singles):
                cid, payload = kafka.request_bytes(0, 7, request(values))
                frames.append(len(payload).to_bytes(4, "big") + payload)
                ids.append(cid)
                for p, value in values.items():
                    sent[p].append(value)
            kafka.sock.sendall(b"".join(frames))
            for cid in ids:
                answer = kafka.read_response(0, 7, cid)
                codes = [p.error_code for t in answer.responses for p in t.partition_responses]
                assert set(codes) == {0}, codes
    for p in range(PARTITIONS):
        assert stored(broker.address, p) == sent[p], p
