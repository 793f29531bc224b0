"""confluent-kafka's idempotent producer (``enable.idempotence=true``) keeps producing
while the broker restarts under it (SIGTERM, and kill -9 with batches in flight): no
record is stored twice, every acknowledged record is there, in the order produced.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from broker_process import BrokerProcess

PER_BURST = 3000


def read_all(broker: BrokerProcess, topic: str) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": broker.kafka_address, "group.id": "unused",
                         "enable.auto.commit": False})
    _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), 10)
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(values) < high:
        assert time.monotonic() < deadline, f"read {len(values)} of {high}"
        message = consumer.poll(0.2)
        if message is not None:
            assert message.error() is None, message.error()
            values.append(message.value())
    consumer.close()
    return values


@pytest.mark.parametrize("how", ["sigterm", "kill-9"])
def test_idempotent_producer_across_a_broker_restart(tmp_path: Path, how: str) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.kafka_address})
        admin.create_topics([NewTopic("idem", 1, 1)])["idem"].result(10)
        acked: list[bytes] = []
        failed: list[tuple[bytes, Any]] = []

        def delivered(error: KafkaError | None, message: Any) -> None:
            if error is None:
                acked.append(message.value())
            else:
                failed.append((message.value(), error))

        producer = Producer({"bootstrap.servers": broker.kafka_address,
                             "enable.idempotence": True, "linger.ms": 2,
                             "batch.num.messages": 100, "message.timeout.ms": 60_000,
                             "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 200})
        sent = 0

        def burst(count: int) -> None:
            nonlocal sent
            for _ in range(count):
                producer.produce("idem", value=b"%06d" % sent, on_delivery=delivered)
                sent += 1
                producer.poll(0)

        burst(PER_BURST)
        # Some of the first burst acknowledged, more in flight: the broker goes away now.
        deadline = time.monotonic() + 30
        while not acked:
            assert time.monotonic() < deadline, failed
            producer.poll(0.01)
        if how == "sigterm":
            broker.stop()
        else:
            broker.kill()
        burst(PER_BURST)  # buffered and retried by the producer while the broker is down
        broker.start()  # same ports, same data
        burst(PER_BURST)
        assert producer.flush(60) == 0
        assert failed == []
        assert len(acked) == sent == 3 * PER_BURST

        stored = read_all(broker, "idem")
        assert len(stored) == len(set(stored)), "a record was stored twice"
        assert stored == sorted(stored), "records out of the order produced"
        assert set(acked) <= set(stored), "an acknowledged record is missing"
    finally:
        broker.kill()
