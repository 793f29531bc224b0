"""One consumer-group member per Kafka client library behind one small blocking
interface, for the group tests; run as a script it is a member in a process of its own
(to be killed with kill -9): ``python kafka_members.py LIB BOOTSTRAP TOPIC GROUP``.

Auto-commit is off everywhere: a test commits when it means to. Session timeouts are
short (the test broker accepts down to 500 ms) so that a dead member is noticed soon.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Coroutine
from typing import Any

LIBRARIES = ["confluent-kafka", "aiokafka", "kafka-python"]
SESSION_TIMEOUT_MS = 2000
HEARTBEAT_MS = 250
Record = tuple[int, bytes]  # (partition, value)


class Member:
    def poll(self) -> list[Record]:
        raise NotImplementedError

    def assignment(self) -> set[int]:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class ConfluentMember(Member):
    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        from confluent_kafka import Consumer

        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group,
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "session.timeout.ms": SESSION_TIMEOUT_MS, "heartbeat.interval.ms": HEARTBEAT_MS,
        })
        self.consumer.subscribe([topic])

    def poll(self) -> list[Record]:
        message = self.consumer.poll(0.1)
        if message is None:
            return []
        assert message.error() is None, message.error()
        return [(message.partition(), message.value())]

    def assignment(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}

    def commit(self) -> None:
        self.consumer.commit(asynchronous=False)

    def close(self) -> None:
        self.consumer.close()


class KafkaPythonMember(Member):
    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        from kafka import KafkaConsumer

        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
            enable_auto_commit=False, session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_MS)
        self.consumer.subscribe([topic])
        # The topic's metadata before the first JoinGroup. Otherwise the leader may assign
        # before it arrives, and the rejoin its arrival triggers can be lost by
        # kafka-python 3.0.12: when poll()'s timeout ends mid-join, the next poll sees
        # nothing left to rejoin for, never completes the join, never re-enables its
        # heartbeat, and the member's session expires (seen under load).
        self.consumer.topics()

    def poll(self) -> list[Record]:
        batches = self.consumer.poll(timeout_ms=100)
        return [(tp.partition, r.value) for tp, records in batches.items() for r in records]

    def assignment(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}

    def commit(self) -> None:
        self.consumer.commit()

    def close(self) -> None:
        self.consumer.close(autocommit=False)


class _Loop:
    """One event loop in a daemon thread for every aiokafka member of the process."""

    loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def run(cls, coroutine: Coroutine[Any, Any, Any]) -> Any:
        if cls.loop is None:
            cls.loop = asyncio.new_event_loop()
            threading.Thread(target=cls.loop.run_forever, daemon=True).start()
        return asyncio.run_coroutine_threadsafe(coroutine, cls.loop).result(60)


class AiokafkaMember(Member):
    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        from aiokafka import AIOKafkaConsumer

        async def start() -> Any:
            consumer = AIOKafkaConsumer(
                topic, bootstrap_servers=bootstrap, group_id=group,
                auto_offset_reset="earliest", enable_auto_commit=False,
                session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=HEARTBEAT_MS)
            await consumer.start()
            return consumer

        self.consumer = _Loop.run(start())

    def poll(self) -> list[Record]:
        batches = _Loop.run(self.consumer.getmany(timeout_ms=100))
        return [(tp.partition, r.value) for tp, records in batches.items() for r in records]

    def assignment(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}

    def commit(self) -> None:
        _Loop.run(self.consumer.commit())

    def close(self) -> None:
        _Loop.run(self.consumer.stop())


def member(library: str, bootstrap: str, topic: str, group: str) -> Member:
    kinds = {"confluent-kafka": ConfluentMember, "aiokafka": AiokafkaMember,
             "kafka-python": KafkaPythonMember}
    return kinds[library](bootstrap, topic, group)


if __name__ == "__main__":  # a member that polls until it is killed
    me = member(*sys.argv[1:5])
    announced = False
    while True:
        me.poll()
        if not announced and me.assignment():
            print("assigned", sorted(me.assignment()), flush=True)
            announced = True
        time.sleep(0.01)
