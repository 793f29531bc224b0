"""Static membership (KIP-345) through our own client and the gRPC door, against a real
``sentinel-server``: a consumer with ``group_instance_id`` sends no LeaveGroup when
closed, and one started with the same id within the session timeout takes its
partitions back while the other member sees no rebalance (no revoke, no assign, the
generation unchanged); an instance still running when a newer one joins is fenced
(``FencedInstanceIdError`` from ``poll``, its membership ended) and does not fence the
newer one back.
"""

from __future__ import annotations

import threading
import time

import pytest

from broker_process import BrokerProcess
from metrics_polling import wait_for
from sentinel.client import Admin, Consumer, Producer, TopicPartition
from sentinel.client.errors import FencedInstanceIdError
from sentinel.errors import InvalidArgumentError

PARTITIONS = 4
SESSION_MS = 4000
DEADLINE_S = 20.0


class Member:
    """A consumer of the group ``g`` polled on its own thread, with the rebalance
    callbacks it saw and the error ``poll`` raised, if any."""

    def __init__(self, address: str, instance: str | None) -> None:
        self.calls: list[tuple[str, frozenset[TopicPartition]]] = []
        self.error: BaseException | None = None
        self.consumer = Consumer(
            address,
            group_id="g",
            group_instance_id=instance,
            session_timeout_ms=SESSION_MS,
            heartbeat_interval_ms=200,
            auto_offset_reset="earliest",
            on_assign=lambda tps: self.calls.append(("assign", frozenset(tps))),
            on_revoke=lambda tps: self.calls.append(("revoke", frozenset(tps))),
        )
        self.consumer.subscribe(["s"])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self.consumer.poll(0.1)
            except FencedInstanceIdError as exc:
                self.error = exc
                return

    @property
    def owned(self) -> frozenset[TopicPartition]:
        return frozenset(self.consumer.assignment())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()


def described(address: str) -> tuple[int, dict[str, str | None]]:
    """The group's generation and its members' (member id -> instance id)."""
    with Admin(address) as admin:
        group = admin.describe_group("g")
    return group.generation, {m.member_id: m.group_instance_id for m in group.members}


@pytest.fixture
def address(broker: BrokerProcess) -> str:
    with Admin(broker.address) as admin:
        admin.create_topic("s", PARTITIONS)
    with Producer(broker.address) as producer:
        for p in range(PARTITIONS):
            producer.send("s", b"x", partition=p)
    return broker.address


def two_members(address: str, instance: str) -> tuple[Member, Member]:
    """A dynamic member and a static one, each owning half of the partitions."""
    dynamic = Member(address, None)
    wait_for(lambda: len(dynamic.owned) == PARTITIONS, "the first member's assignment",
             DEADLINE_S)  # fmt: skip
    static = Member(address, instance)
    wait_for(
        lambda: len(static.owned) == len(dynamic.owned) == PARTITIONS // 2,
        "the rebalance to two members",
        DEADLINE_S,
    )
    return dynamic, static


def test_a_restarted_static_member_takes_its_place_without_a_rebalance(address: str) -> None:
    dynamic, static = two_members(address, "worker-1")
    generation, members = described(address)
    assert sorted(members.values(), key=str) == [None, "worker-1"]
    settled = list(dynamic.calls)
    owned = static.owned
    static.close()  # a static member sends no LeaveGroup
    assert described(address) == (generation, members)
    again = Member(address, "worker-1")
    try:
        wait_for(lambda: again.owned == owned, "the new instance to own the same partitions",
                 DEADLINE_S)  # fmt: skip
        now, after = described(address)
        assert now == generation
        assert len(after) == 2 and set(after.values()) == {None, "worker-1"}
        assert set(after) != set(members)  # the new instance has a new member id
        # The other member saw nothing, then or after the old session timeout.
        time.sleep(SESSION_MS / 1000 + 1)  # a negative check: no rebalance may come
        assert dynamic.calls == settled
        assert described(address)[0] == generation
        assert again.calls == [("assign", owned)]
    finally:
        again.close()
        dynamic.close()


def test_an_older_instance_is_fenced_and_stops(address: str) -> None:
    dynamic, older = two_members(address, "worker-2")
    owned = older.owned
    newer = Member(address, "worker-2")  # while the older one still runs
    try:
        wait_for(lambda: older.error is not None, "the older instance to be fenced",
                 DEADLINE_S)  # fmt: skip
        assert isinstance(older.error, FencedInstanceIdError)
        assert older.owned == frozenset()
        assert older.calls[-1] == ("revoke", owned)  # its partitions are lost
        wait_for(lambda: newer.owned == owned, "the newer instance to own them", DEADLINE_S)
        _, members = described(address)
        assert len(members) == 2
        # The fenced one does not join again and fence the newer one in turn.
        time.sleep(1.0)  # a negative check: several heartbeat intervals
        assert newer.error is None and newer.owned == owned
        assert len(described(address)[1]) == 2
    finally:
        newer.close()
        older.close()
        dynamic.close()


def test_an_instance_id_needs_a_group() -> None:
    with pytest.raises(InvalidArgumentError, match="group_instance_id"):
        Consumer("127.0.0.1:1", group_instance_id="i")
    with pytest.raises(InvalidArgumentError, match="group_instance_id"):
        Consumer("127.0.0.1:1", group_id="g", group_instance_id="")
