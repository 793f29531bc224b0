"""Static membership (KIP-345) with real clients against a real ``sentinel-server``: two
consumers with ``group.instance.id``; one is closed (a static member sends no
LeaveGroup) and a new one with the same instance id started within the session timeout
takes its partitions back, while the other consumer sees no rebalance at all (no
revoke, no assign callback), then or after the session timeout has passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from broker_process import BrokerProcess

PARTITIONS = 4
SESSION_MS = 3000


class Static:
    """One static consumer and the rebalance callbacks it saw."""

    def __init__(self, library: str, bootstrap: str, topic: str, group: str,
                 instance: str) -> None:
        self.library = library
        self.calls: list[tuple[str, frozenset[int]]] = []
        self.owned: set[int] = set()
        if library == "confluent-kafka":
            self.consumer: Any = Consumer({
                "bootstrap.servers": bootstrap, "group.id": group,
                "group.instance.id": instance, "session.timeout.ms": SESSION_MS,
                "heartbeat.interval.ms": 300, "auto.offset.reset": "earliest",
                "enable.auto.commit": False, "partition.assignment.strategy": "range",
            })
            self.consumer.subscribe([topic], on_assign=self._assigned,
                                    on_revoke=self._revoked)
        else:
            from kafka.consumer.subscription_state import ConsumerRebalanceListener

            from kafka import KafkaConsumer

            outer = self

            class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
                def on_partitions_revoked(self, revoked: Any) -> None:
                    outer._revoked(None, list(revoked))

                def on_partitions_assigned(self, assigned: Any) -> None:
                    outer._assigned(None, list(assigned))

            self.consumer = KafkaConsumer(
                bootstrap_servers=bootstrap, group_id=group, group_instance_id=instance,
                session_timeout_ms=SESSION_MS, heartbeat_interval_ms=300,
                auto_offset_reset="earliest", enable_auto_commit=False,
            )
            self.consumer.subscribe([topic], listener=Listener())

    def _assigned(self, _consumer: object, partitions: list[TopicPartition]) -> None:
        got = frozenset(p.partition for p in partitions)
        self.calls.append(("assign", got))
        self.owned |= got

    def _revoked(self, _consumer: object, partitions: list[TopicPartition]) -> None:
        got = frozenset(p.partition for p in partitions)
        self.calls.append(("revoke", got))
        self.owned -= got

    def poll(self) -> None:
        if self.library == "confluent-kafka":
            self.consumer.poll(0.05)
        else:
            self.consumer.poll(timeout_ms=50)

    def close(self) -> None:
        self.consumer.close()


def poll_until(members: list[Static], done: Callable[[], bool], what: str,
               timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        for m in members:
            m.poll()


def restart_without_rebalance(broker: BrokerProcess, library: str) -> None:
    topic = group = f"static-{library}"
    admin = AdminClient({"bootstrap.servers": broker.kafka_address})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(10)
    one = Static(library, broker.kafka_address, topic, group, "pod-1")
    two = Static(library, broker.kafka_address, topic, group, "pod-2")
    poll_until([one, two], lambda: bool(one.owned) and bool(two.owned)
               and one.owned | two.owned == set(range(PARTITIONS)), "both hold partitions")
    held_by_one, held_by_two = set(one.owned), set(two.owned)
    two.calls.clear()

    one.close()  # static: no LeaveGroup
    again = Static(library, broker.kafka_address, topic, group, "pod-1")
    poll_until([again, two], lambda: bool(again.owned), "the restarted pod-1 holds partitions",
               timeout=10.0)
    assert again.owned == held_by_one
    # Past the session timeout of the closed consumer: still no rebalance for pod-2.
    deadline = time.monotonic() + SESSION_MS / 1000 + 1.0
    while time.monotonic() < deadline:
        two.poll()
        again.poll()
    assert two.calls == [], f"pod-2 saw a rebalance: {two.calls}"
    assert two.owned == held_by_two and again.owned == held_by_one
    again.close()
    two.close()


def test_confluent_kafka_static_member_restarts_without_a_rebalance(
        broker: BrokerProcess) -> None:
    restart_without_rebalance(broker, "confluent-kafka")


def test_kafka_python_static_member_restarts_without_a_rebalance(
        broker: BrokerProcess) -> None:
    restart_without_rebalance(broker, "kafka-python")
