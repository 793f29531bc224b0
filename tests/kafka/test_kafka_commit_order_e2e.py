"""A confluent-kafka consumer's async commits, pipelined on its connection to the
coordinator: once every one is acknowledged, the committed offset is the last one made,
before and after a kill -9 of the broker (Kafka applies a connection's requests in
order; the Java and librdkafka clients' async commits rely on it)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from broker_process import BrokerProcess

TRIALS, COMMITS = 10, 20


def test_the_last_of_pipelined_async_commits_is_the_one_kept(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.kafka_address})
        admin.create_topics([NewTopic("t", 1, 1)])["t"].result(10)
        del admin
        acked: list[int] = []
        lock = threading.Lock()

        def on_commit(error: KafkaError | None, partitions: list[TopicPartition]) -> None:
            if error is None:
                with lock:
                    acked.extend(tp.offset for tp in partitions if tp.error is None)

        consumer = Consumer({"bootstrap.servers": broker.kafka_address, "group.id": "ordered",
                             "enable.auto.commit": False, "on_commit": on_commit})
        consumer.assign([TopicPartition("t", 0, 0)])
        wrong = []
        for trial in range(TRIALS):
            with lock:
                acked.clear()
            for i in range(1, COMMITS + 1):
                consumer.commit(offsets=[TopicPartition("t", 0, trial * 100 + i)],
                                asynchronous=True)
            deadline = time.monotonic() + 20
            while len(acked) < COMMITS:
                assert time.monotonic() < deadline, f"commits acknowledged: {acked}"
                consumer.poll(0.05)  # serves the commit callbacks
            got = consumer.committed([TopicPartition("t", 0)], timeout=10)[0].offset
            if got != trial * 100 + COMMITS:
                wrong.append((trial * 100 + COMMITS, got))
        consumer.close()
        assert not wrong, f"(last acknowledged, committed): {wrong}"
        broker.kill()
        broker.start()
        asker = Consumer({"bootstrap.servers": broker.kafka_address, "group.id": "ordered"})
        kept = asker.committed([TopicPartition("t", 0)], timeout=10)[0].offset
        asker.close()
        assert kept == (TRIALS - 1) * 100 + COMMITS, "the restart brought an older commit back"
    finally:
        broker.kill()
