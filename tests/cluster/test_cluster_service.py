"""Three ``BrokerService``s of one cluster in one process (each on its own in-memory
filesystem, joined by the real peer transport on loopback): topics through the
controller from any broker, acks=all through Raft, NOT_LEADER_OR_FOLLOWER at
followers, a leader stopped and another elected, offsets at their coordinator."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest

from cluster.harness import free_ports
from sentinel.broker.group_driver import GroupError
from sentinel.broker.group_events import OffsetAndMetadata
from sentinel.broker.service import BrokerService
from sentinel.broker.validation import BROKER_DEFAULT, Acks
from sentinel.clock import SystemClock
from sentinel.cluster.clean_stop import STOP_BUDGET_S
from sentinel.config import BrokerConfig
from sentinel.errors import NotLeaderError, SentinelError
from sentinel.fs import MemFS
from sentinel.record import build_batch, decode_records, iter_batches, parse_header

T = TypeVar("T")

#: A stop takes well under a second here; past this, the test fails with every task's
#: stack printed rather than waiting for pytest-timeout.
STOP_TIMEOUT_S = 60.0


def batch(value: bytes) -> bytes:
    return build_batch([(None, value, (), 1_700_000_000_000)])


def user_values(batches: bytes) -> list[bytes | None]:
    """The values of the records in ``batches``, control batches skipped."""
    return [
        r.value
        for b in iter_batches(batches)
        if not parse_header(b).is_control
        for r in decode_records(bytes(b))
    ]


class Trio:
    def __init__(self) -> None:
        raft = dict(zip((1, 2, 3), free_ports(3), strict=True))  # distinct: held together
        self.peers = ",".join(f"{i}@127.0.0.1:{p}" for i, p in raft.items())
        self.fs = {i: MemFS() for i in (1, 2, 3)}
        self.services: dict[int, BrokerService] = {}

    def config(self, i: int) -> BrokerConfig:
        return BrokerConfig(
            data_dir="/data", node_id=i, peers=self.peers, port=9000 + i,
            kafka_port=9100 + i, raft_tick_ms=20, group_min_session_timeout_ms=500,
        )

    async def start(self, i: int) -> BrokerService:
        service = BrokerService(self.config(i), self.fs[i], SystemClock())
        await service.start()
        self.services[i] = service
        return service

    async def stop(self, i: int) -> None:
        service = self.services.pop(i)
        try:
            await asyncio.wait_for(service.stop(), STOP_TIMEOUT_S)
        except TimeoutError:
            # CI once saw a teardown hang here until pytest-timeout (not reproduced in
            # 30 runs under load): fail sooner, saying what every task was waiting for.
            for task in asyncio.all_tasks():
                task.print_stack(limit=8)
            raise AssertionError(f"broker {i} did not stop within {STOP_TIMEOUT_S} s") from None

    def leader_of(self, topic: str, index: int) -> int | None:
        for service in self.services.values():
            meta = service.topic_metadata(service.registry.get(topic))
            part = meta.partitions[index]
            node = service.cluster_node
            assert node is not None
            if part.leader == node.node_id:
                return node.node_id
        return None


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 15.0) -> T:
    """``check()``'s value once it stops raising, polled until ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await check()
        except (SentinelError, AssertionError, KeyError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


async def created_with_leaders(
    trio: Trio,
    broker: int,
    topic: str,
    partitions: int = 1,
    replication_factor: int = BROKER_DEFAULT,
) -> list[int]:
    """Create ``topic`` through ``broker`` (retried until the cluster has a controller)
    and wait until every partition has a leader: their node ids, by partition."""

    async def create() -> None:
        await trio.services[broker].create_topic(topic, partitions, replication_factor)

    async def leaders() -> list[int]:
        found = [trio.leader_of(topic, p) for p in range(partitions)]
        assert None not in found
        return [node for node in found if node is not None]

    await eventually(create)
    return await eventually(leaders)


@contextlib.asynccontextmanager
async def running(trio: Trio) -> AsyncIterator[Trio]:
    """``trio``'s three brokers started together, and stopped (those still running)."""
    await asyncio.gather(*(trio.start(i) for i in (1, 2, 3)))
    try:
        yield trio
    finally:
        for i in list(trio.services):
            await trio.stop(i)


@pytest.fixture
async def trio() -> AsyncIterator[Trio]:
    async with running(Trio()) as t:
        yield t


async def test_topic_created_anywhere_is_replicated_and_served_by_its_leader(trio: Trio) -> None:
    lead = (await created_with_leaders(trio, 2, "t", 3))[0]
    for service in trio.services.values():  # every broker applied the record
        async def present(s: BrokerService = service) -> None:
            assert s.registry.find("t") is not None

        await eventually(present)
    outcome = await trio.services[lead].produce("t", 0, batch(b"one"), Acks.ALL)
    assert outcome.base_offset >= 0
    follower = next(i for i in trio.services if i != lead)
    with pytest.raises(NotLeaderError):
        await trio.services[follower].produce("t", 0, batch(b"two"), Acks.ALL)
    with pytest.raises(NotLeaderError):  # its watermark may lag: only the leader answers
        trio.services[follower].list_offset("t", 0, -1)
    assert trio.services[lead].list_offset("t", 0, -1)[0] >= outcome.base_offset + 1
    fetched = await trio.services[lead].fetch("t", 0, 0, 1 << 20)
    values = user_values(fetched.batches)
    assert values == [b"one"]
    # Every replica holds the leader's bytes once the high watermark reaches them.
    for service in trio.services.values():
        async def replicated(s: BrokerService = service) -> None:
            plog = s.partition_log("t", 0)
            assert plog.high_watermark == outcome.base_offset + 1

        await eventually(replicated)


async def test_a_stopped_leader_is_replaced_and_acknowledged_records_stay(trio: Trio) -> None:
    (lead,) = await created_with_leaders(trio, 1, "k")
    acked = []
    for n in range(20):
        out = await trio.services[lead].produce("k", 0, batch(b"%d" % n), Acks.ALL)
        acked.append(out.base_offset)
    await trio.stop(lead)

    async def new_leader() -> int:
        found = trio.leader_of("k", 0)
        assert found is not None and found != lead
        return found

    second = await eventually(new_leader)
    out = await trio.services[second].produce("k", 0, batch(b"after"), Acks.ALL)
    assert out.base_offset > acked[-1]
    fetched = await trio.services[second].fetch("k", 0, 0, 1 << 20)
    values = user_values(fetched.batches)
    assert values[:20] == [b"%d" % n for n in range(20)]
    assert values[-1] == b"after"
    await trio.start(lead)  # it comes back and catches up

    async def caught_up() -> None:
        plog = trio.services[lead].partition_log("k", 0)
        assert plog.high_watermark == out.base_offset + 1

    await eventually(caught_up)


async def test_offsets_commit_through_their_coordinator_not_the_controller(
    trio: Trio,
) -> None:
    await created_with_leaders(trio, 3, "o")

    async def coordinator() -> BrokerService:
        return trio.services[trio.services[1].group_coordinator("g").node_id]

    async def commit() -> BrokerService:
        coord = await coordinator()
        await coord.alter_group_offsets("g", {("o", 0): OffsetAndMetadata(7, "m")})
        return coord

    coord = await eventually(commit)
    others = [s for s in trio.services.values() if s is not coord]
    with pytest.raises(GroupError):  # NOT_COORDINATOR
        others[0].fetch_offsets("g")
    assert coord.fetch_offsets("g")[("o", 0)].offset == 7
    # Offsets live in __consumer_offsets (test_cluster_offsets_topic), not in the
    # controller's log nor the meta stores.
    for service in trio.services.values():
        node = service.cluster_node
        assert node is not None
        assert "g" not in node.controller.image.offsets
        assert "g" not in service.meta.all_offsets()


async def test_brokers_stopping_together_hand_nothing_to_each_other_and_wait_for_none(
    trio: Trio,
) -> None:
    """Every broker of the cluster stops at once: each refuses the leadership the
    others hand it, so no hand-off can complete; each is told the others are stopping
    and abandons its hand-offs then, not after the stop budget."""
    await created_with_leaders(trio, 2, "all", 6)
    nodes = [s.cluster_node for s in trio.services.values()]
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(node.hand_off() for node in nodes if node is not None))
    assert loop.time() - started < STOP_BUDGET_S / 2


async def test_a_stopping_leader_answers_at_once_the_commit_its_gone_peers_cannot_make(
    trio: Trio,
) -> None:
    """The last broker of a stopping cluster leads a partition with an acks=all produce
    in flight; its peers stopped before they stored the entry. The produce is answered
    NOT_LEADER_OR_FOLLOWER (retriable, unacknowledged) as soon as the stop begins, not
    held until the Kafka door's grace ends (what made a cluster's stop take ~10 s)."""
    (lead,) = await created_with_leaders(trio, 2, "last")
    node = trio.services[lead].cluster_node
    assert node is not None
    node.transport.send = lambda envelope: False  # type: ignore[method-assign]
    produce = asyncio.ensure_future(
        trio.services[lead].produce("last", 0, batch(b"in flight"), Acks.ALL)
    )

    async def in_flight() -> None:
        assert node.driver.commit_waiting()

    await eventually(in_flight)
    for i in [i for i in trio.services if i != lead]:  # the others stop first, cleanly
        other = trio.services[i].cluster_node
        assert other is not None
        await other.hand_off()
        await trio.stop(i)

    async def peers_gone() -> None:
        assert all(node.transport.gone(i) for i in node.peers if i != lead)

    await eventually(peers_gone)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await node.hand_off()
    with pytest.raises(NotLeaderError, match="too few of its peers"):
        await asyncio.wait_for(produce, STOP_BUDGET_S / 2)
    assert loop.time() - started < STOP_BUDGET_S / 2


async def test_a_clean_stop_hands_leadership_over_first(trio: Trio) -> None:
    lead = (await created_with_leaders(trio, 2, "h", 2))[0]
    node = trio.services[lead].cluster_node
    assert node is not None
    assert await node.hand_off() >= 1  # Raft §3.10: TimeoutNow to a caught-up follower
    # What a clean stop does next. (Checked before the stop, the leaders could move
    # back under load: a leaving broker refuses leadership handed to it, but it may
    # still win an election while it runs.)
    await trio.stop(lead)

    async def served_elsewhere() -> None:
        for p in range(2):
            found = trio.leader_of("h", p)
            assert found is not None and found != lead
            out = await trio.services[found].produce("h", p, batch(b"moved"), Acks.ALL)
            assert out.base_offset >= 0

    await eventually(served_elsewhere)


async def test_a_broker_without_a_replica_names_the_reported_leader(trio: Trio) -> None:
    await created_with_leaders(trio, 1, "pair", 3, replication_factor=2)

    async def outsiders_agree() -> None:
        for service in trio.services.values():
            node = service.cluster_node
            assert node is not None
            meta = service.topic_metadata(service.registry.get("pair"))
            for part in meta.partitions:
                assert len(part.replicas) == 2
                leader = trio.services[part.leader].topic_metadata(
                    trio.services[part.leader].registry.get("pair")
                ).partitions[part.partition]
                # Whoever answers, the leader named is the one that leads (it says so).
                assert leader.leader == part.leader and part.leader in part.replicas
                assert part.leader_epoch == leader.leader_epoch > 0

    await eventually(outsiders_agree)


def _flip(data: bytes, at: int) -> bytes:
    buf = bytearray(data)
    buf[at] ^= 0x40
    return bytes(buf)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: _flip(b, len(b) - 2),  # a record byte: the CRC fails
        lambda b: _flip(b, 22),  # attributes: the CRC fails
        lambda b: b[:16] + b"\x01" + b[17:],  # magic 1
        lambda b: b[:-3],  # truncated
    ],
    ids=["record-byte", "attributes", "magic", "truncated"],
)
async def test_a_bad_batch_after_good_ones_stores_nothing_on_any_replica(
    trio: Trio, mangle: Callable[[bytes], bytes]
) -> None:
    """A produce request whose last batch is bad is refused whole (CORRUPT_MESSAGE or
    INVALID_RECORD), as at a single broker: the good batches before it are not
    proposed, so no replica holds them and a retry does not duplicate them."""
    (lead,) = await created_with_leaders(trio, 1, "bad")
    service = trio.services[lead]
    await service.produce("bad", 0, batch(b"first"), Acks.ALL)
    with pytest.raises(SentinelError) as refused:
        await service.produce(
            "bad", 0, batch(b"good") + batch(b"good2") + mangle(batch(b"bad")), Acks.ALL
        )
    assert refused.value.kafka_code in (2, 87)  # CORRUPT_MESSAGE, INVALID_RECORD
    after = await service.produce("bad", 0, batch(b"next"), Acks.ALL)
    for s in trio.services.values():
        async def replicated(s: BrokerService = s) -> None:
            part = s.partition("bad", 0)
            assert part.log.high_watermark >= after.base_offset + 1
            stored = part.log.read(0, 1 << 20, include_uncommitted=True).batches
            assert user_values(b"".join(bytes(b) for b in stored)) == [b"first", b"next"]

        await eventually(replicated)


async def test_a_produced_batch_is_validated_once_at_the_leader(
    trio: Trio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader checks a producer's batch (CRC and format) before proposing it, and
    its Raft log's append does not check it again."""
    import sentinel.log.append as append_module

    (lead,) = await created_with_leaders(trio, 1, "once")
    await trio.services[lead].produce("once", 0, batch(b"warm"), Acks.ALL)
    calls = 0
    real = append_module.validate_batch
    ours = [batch(b"a"), batch(b"b"), batch(b"c")]
    # Only checks of these three batches count (their CRC field, 4 bytes at 17): the
    # brokers' own writes (group offsets, Raft no-ops) may be validated meanwhile.
    crcs = {bytes(b[17:21]) for b in ours}

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        if bytes(args[0][17:21]) in crcs:
            calls += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(append_module, "validate_batch", counting)
    await trio.services[lead].produce("once", 0, b"".join(ours), Acks.ALL)
    assert calls == 3
