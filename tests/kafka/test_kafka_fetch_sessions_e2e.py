"""Fetch sessions (KIP-227) on a real ``sentinel-server``: byte by byte, and with
kafka-python 3.0, which opens one per broker and then sends incremental fetches."""

from __future__ import annotations

import threading
import time
import urllib.request

from kafka_raw import RawKafka

from broker_process import BrokerProcess, module_broker
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTP
from sentinel.protocol.kafka.messages import create_topics as ct
from sentinel.protocol.kafka.messages import fetch as fe
from sentinel.protocol.kafka.messages import produce as pr
from sentinel.record import build_batch

INVALID_FETCH_SESSION_EPOCH = 71
FETCH_SESSION_ID_NOT_FOUND = 70
NOW_MS = int(time.time() * 1000)


broker = module_broker("fetch-sessions")


def gauge(broker: BrokerProcess, name: str) -> float:
    text = urllib.request.urlopen(broker.metrics_url, timeout=5).read().decode()
    (line,) = [x for x in text.splitlines() if x.startswith(name + " ")]
    return float(line.split()[1])


def create(client: RawKafka, topic: str, partitions: int) -> None:
    answer = client.call(19, 4, ct.CreateTopicsRequest(timeout_ms=10_000, topics=(
        ct.CreatableTopic(name=topic, num_partitions=partitions, replication_factor=1),)))
    assert answer.topics[0].error_code == 0


def produce(client: RawKafka, topic: str, partition: int, value: bytes) -> None:
    batch = build_batch([(None, value, (), NOW_MS)])
    answer = client.call(0, 9, pr.ProduceRequest(acks=-1, timeout_ms=5000, topic_data=(
        pr.TopicProduceData(name=topic, partition_data=(
            pr.PartitionProduceData(index=partition, records=batch),)),)))
    assert answer.responses[0].partition_responses[0].error_code == 0


def fetch(client: RawKafka, session_id: int, epoch: int, topic: str,
          offsets: dict[int, int], wait_ms: int = 0,
          forget: tuple[int, ...] = ()) -> fe.FetchResponse:
    parts = tuple(fe.FetchPartition(partition=p, fetch_offset=o, partition_max_bytes=1 << 20)
                  for p, o in offsets.items())
    request = fe.FetchRequest(
        replica_id=-1, max_wait_ms=wait_ms, min_bytes=1, max_bytes=1 << 24,
        session_id=session_id, session_epoch=epoch,
        topics=(fe.FetchTopic(topic=topic, partitions=parts),) if parts else (),
        forgotten_topics_data=(fe.ForgottenTopic(topic=topic, partitions=forget),)
        if forget else ())
    answer: fe.FetchResponse = client.call(1, 11, request)
    return answer


def named(answer: fe.FetchResponse) -> dict[int, tuple[int, bool]]:
    """partition -> (high watermark, carries records), as answered."""
    return {p.partition_index: (p.high_watermark, bool(p.records))
            for t in answer.responses for p in t.partitions}


def test_a_session_answers_what_is_new_byte_by_byte(broker: BrokerProcess) -> None:
    with RawKafka(broker.kafka_address) as client:
        create(client, "sessions", 3)
        opened = fetch(client, 0, 0, "sessions", {0: 0, 1: 0, 2: 0})
        assert opened.error_code == 0 and opened.session_id != 0
        assert named(opened) == {0: (0, False), 1: (0, False), 2: (0, False)}
        sid = opened.session_id
        assert gauge(broker, "sentinel_kafka_fetch_sessions") >= 1

        produce(client, "sessions", 1, b"one")
        # Epoch 1 names no partition: the session's three are fetched; only 1 is new.
        assert named(fetch(client, sid, 1, "sessions", {})) == {1: (1, True)}
        # Epoch 2 moves partition 1 on: nothing is new, the long poll ends empty.
        started = time.monotonic()
        quiet = fetch(client, sid, 2, "sessions", {1: 1}, wait_ms=300)
        assert named(quiet) == {} and time.monotonic() - started >= 0.25
        # A record produced during a long poll ends it, naming only its partition.
        def produce_later() -> None:
            with RawKafka(broker.kafka_address) as producer:
                produce(producer, "sessions", 2, b"two")

        threading.Timer(0.2, produce_later).start()
        woken = fetch(client, sid, 3, "sessions", {}, wait_ms=10_000)
        assert named(woken) == {2: (1, True)}
        # A forgotten partition is not fetched any more.
        produce(client, "sessions", 0, b"zero")
        assert named(fetch(client, sid, 4, "sessions", {2: 1}, forget=(0,))) == {}

        # A repeated epoch is refused; so is an id the broker does not keep.
        assert fetch(client, sid, 4, "sessions", {}).error_code == INVALID_FETCH_SESSION_EPOCH
        assert fetch(client, sid + 1, 1, "sessions", {}).error_code \
            == FETCH_SESSION_ID_NOT_FOUND
        # Epoch -1 closes it: a full answer without a session.
        closed = fetch(client, sid, -1, "sessions", {0: 0})
        assert closed.session_id == 0 and named(closed) == {0: (1, True)}
        assert fetch(client, sid, 5, "sessions", {}).error_code == FETCH_SESSION_ID_NOT_FOUND


def test_kafka_python_consumes_many_partitions_through_a_session(broker: BrokerProcess) -> None:
    """Five waves of records, each to a different part of 40 partitions, each consumed
    before the next is produced: the consumer's incremental fetches in between name
    nothing new, and each wave is found by them."""
    topic, partitions, per_wave = "kp-sessions", 40, 60
    with RawKafka(broker.kafka_address) as client:
        create(client, topic, partitions)
    producer = KafkaProducer(bootstrap_servers=broker.kafka_address, acks="all")
    consumer = KafkaConsumer(bootstrap_servers=broker.kafka_address, fetch_max_wait_ms=100)
    consumer.assign([KpTP(topic, p) for p in range(partitions)])
    consumer.seek_to_beginning()
    got: list[bytes] = []
    expected: list[bytes] = []
    deadline = time.monotonic() + 60
    for wave in range(5):
        for i in range(per_wave):
            value = b"wave %d record %d" % (wave, i)
            producer.send(topic, value=value, partition=(wave * 13 + i) % partitions)
            expected.append(value)
        producer.flush(20)
        while len(got) < len(expected):
            assert time.monotonic() < deadline, (wave, len(got))
            for records in consumer.poll(timeout_ms=200).values():
                got.extend(r.value for r in records)
        # Quiet rounds: incremental fetches with nothing new.
        for _ in range(3):
            assert consumer.poll(timeout_ms=150) == {}
        # The consumer keeps one session of every assigned partition.
        assert gauge(broker, "sentinel_kafka_fetch_session_partitions") >= partitions
    consumer.close()
    producer.close()
    assert sorted(got) == sorted(expected)
