"""Committed offsets in the internal topic ``__consumer_offsets`` (issue 8: "Committed
offsets and group state survive the death of the broker coordinating the group").

Three ``BrokerService``s in one process (``Trio`` of test_cluster_service): the
controller's leader creates the topic; a group's coordinator is the leader of its
partition (Kafka's ``abs(groupId.hashCode) % partitions``), so groups spread over the
brokers; a commit is a batch in that partition; when its leader stops, the new
leader reads the partition back and serves the same offsets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

import pytest

from cluster.test_cluster_service import Trio, eventually, running
from sentinel.broker.group_driver import GroupError
from sentinel.broker.group_events import (
    ErrorCode,
    JoinCompleted,
    JoinProtocol,
    OffsetAndMetadata,
)
from sentinel.broker.service import BrokerService
from sentinel.broker.validation import Acks
from sentinel.cluster.offsets_topic import (
    OFFSETS_TOPIC,
    commit_batch,
    java_string_hashcode,
    partition_for,
    replay,
    tombstone_batch,
)
from sentinel.config import BrokerConfig
from sentinel.log.config import InvalidTopicError
from sentinel.record import build_batch

PARTITIONS = 4


def test_java_string_hashcode_matches_java() -> None:
    assert java_string_hashcode("") == 0
    assert java_string_hashcode("a") == 97
    assert java_string_hashcode("ab") == 97 * 31 + 98
    assert java_string_hashcode("hello") == 99162322  # "hello".hashCode() in Java
    # A character outside the BMP counts as its two UTF-16 code units (0xD83D 0xDE00).
    assert java_string_hashcode("\U0001F600") == 0xD83D * 31 + 0xDE00
    # Overflow wraps as Java's int: "polygenelubricants".hashCode() == Integer.MIN_VALUE,
    # which Kafka's Utils.abs maps to 0.
    assert java_string_hashcode("polygenelubricants") == -(2**31)
    assert partition_for("polygenelubricants", 50) == 0
    # By hand: "group" = 103*31^4 + 114*31^3 + 111*31^2 + 117*31 + 112 = 98629247,
    # 98629247 % 50 == 47 (Kafka's default of 50 offsets partitions).
    assert java_string_hashcode("group") == 98629247
    assert partition_for("group", 50) == 47
    assert java_string_hashcode("Aa") == java_string_hashcode("BB")  # Java's collision


def test_replay_keeps_the_last_value_and_honours_tombstones() -> None:
    offsets: dict[str, dict[tuple[str, int], OffsetAndMetadata]] = {}
    replay([
        commit_batch("g", {("t", 0): OffsetAndMetadata(1, "a"),
                           ("t", 1): OffsetAndMetadata(5, "")}, 0),
        commit_batch("g", {("t", 0): OffsetAndMetadata(3, "b")}, 0),
        commit_batch("h", {("t", 0): OffsetAndMetadata(9, "")}, 0),
        tombstone_batch("h", [("t", 0)], 0),
        build_batch([(b"not json", b"{}", (), 0)]),  # not of the format: skipped
    ], offsets)
    assert offsets == {"g": {("t", 0): OffsetAndMetadata(3, "b"),
                             ("t", 1): OffsetAndMetadata(5, "")}}


class OffsetsTrio(Trio):
    def config(self, i: int) -> BrokerConfig:
        return BrokerConfig(
            data_dir="/data", node_id=i, peers=self.peers, port=9000 + i,
            kafka_port=9100 + i, raft_tick_ms=20, group_min_session_timeout_ms=500,
            offsets_topic_partitions=PARTITIONS,
        )


@pytest.fixture
async def trio() -> AsyncIterator[Trio]:
    async with running(OffsetsTrio()) as t:
        yield t


async def leaders(trio: Trio) -> dict[int, int]:
    """Offsets partition -> its leader, once every partition has one."""
    async def check() -> dict[int, int]:
        found = {p: trio.leader_of(OFFSETS_TOPIC, p) for p in range(PARTITIONS)}
        assert None not in found.values()
        return {p: n for p, n in found.items() if n is not None}

    return await eventually(check)


def group_on(partition: int, not_in: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    return next(
        g for n in range(1000)
        if partition_for(g := f"group-{n}", PARTITIONS) == partition and g not in not_in
    )


async def serving(service: BrokerService, group_id: str) -> dict[tuple[str, int], int]:
    """``fetch_offsets`` once ``service`` coordinates the group and has loaded it."""
    async def check() -> dict[tuple[str, int], int]:
        return {tp: om.offset for tp, om in service.fetch_offsets(group_id).items()}

    return await eventually(check)


async def served_by_coordinator(
    trio: Trio, group_id: str, not_on: int | None = None
) -> tuple[BrokerService, dict[tuple[str, int], int]]:
    """The group's coordinator (never ``not_on``) and its offsets. Each attempt asks a
    live broker again, as a Kafka client looks the coordinator up again on
    NOT_COORDINATOR: after a leader stops, a first winner can lose its term to another
    broker before it has served (seen under CI load)."""
    async def check() -> tuple[BrokerService, dict[tuple[str, int], int]]:
        survivor = next(iter(trio.services.values()))
        found = survivor.group_coordinator(group_id).node_id
        assert found != not_on and found in trio.services
        service = trio.services[found]
        return service, {tp: om.offset for tp, om in service.fetch_offsets(group_id).items()}

    return await eventually(check)


async def test_groups_spread_over_brokers_and_others_answer_not_coordinator(
    trio: Trio,
) -> None:
    by_partition = await leaders(trio)
    # The balancer moves leaders to the preferred replicas: wait until two partitions
    # are led by different brokers (placement spreads the preferred leaders).
    async def spread() -> tuple[int, int]:
        now = await leaders(trio)
        pairs = [(a, b) for a in now for b in now if now[a] != now[b]]
        assert pairs
        return pairs[0]

    first, second = await eventually(spread)
    by_partition = await leaders(trio)
    g1, g2 = group_on(first), group_on(second)
    for service in trio.services.values():  # FindCoordinator: any broker, same answer
        async def named(s: BrokerService = service) -> None:
            assert s.group_coordinator(g1).node_id == trio.leader_of(OFFSETS_TOPIC, first)
            assert s.group_coordinator(g2).node_id == trio.leader_of(OFFSETS_TOPIC, second)

        await eventually(named)
    c1, c2 = by_partition[first], by_partition[second]
    assert c1 != c2
    await serving(trio.services[c1], g1)
    await serving(trio.services[c2], g2)
    with pytest.raises(GroupError) as refused:
        trio.services[c2].fetch_offsets(g1)
    assert refused.value.code is ErrorCode.NOT_COORDINATOR
    with pytest.raises(GroupError) as refused:
        trio.services[c1].heartbeat(g2, "m", 1)
    assert refused.value.code is ErrorCode.NOT_COORDINATOR


async def test_committed_offsets_survive_the_coordinator_and_tombstones_delete(
    trio: Trio,
) -> None:
    async def create() -> None:
        await trio.services[1].create_topic("o", 2)

    await eventually(create)
    await leaders(trio)
    group = group_on(0)
    gone = group_on(0, {group})

    async def commit() -> int:
        coordinator = trio.services[trio.services[1].group_coordinator(group).node_id]
        await coordinator.alter_group_offsets(group, {("o", 0): OffsetAndMetadata(7, "m"),
                                                      ("o", 1): OffsetAndMetadata(3, "")})
        await coordinator.alter_group_offsets(group, {("o", 0): OffsetAndMetadata(8, "n")})
        await coordinator.alter_group_offsets(gone, {("o", 0): OffsetAndMetadata(1, "")})
        await coordinator.delete_group(gone)
        node = coordinator.cluster_node
        assert node is not None
        return node.node_id

    first = await eventually(commit)
    assert await serving(trio.services[first], group) == {("o", 0): 8, ("o", 1): 3}
    # The batches are in the partition, committed on a majority.
    plog = trio.services[first].partition_log(OFFSETS_TOPIC, 0)
    assert plog.high_watermark == plog.log_end_offset > 0
    await trio.stop(first)

    second, offsets = await served_by_coordinator(trio, group, not_on=first)
    assert offsets == {("o", 0): 8, ("o", 1): 3}
    assert second.fetch_offsets(gone) == {}  # the tombstone held
    assert second.groups.fetch_offsets(group, None)[("o", 0)].metadata == "n"
    # The new coordinator commits on, and the old one, back, catches up as a follower.

    async def commit_on() -> None:
        coordinator, _ = await served_by_coordinator(trio, group, not_on=first)
        await coordinator.alter_group_offsets(group, {("o", 1): OffsetAndMetadata(4, "")})

    await eventually(commit_on)
    _, offsets = await served_by_coordinator(trio, group, not_on=first)
    assert offsets == {("o", 0): 8, ("o", 1): 4}
    await trio.start(first)
    with pytest.raises(GroupError):
        trio.services[first].fetch_offsets(group)


async def test_clients_cannot_produce_to_the_offsets_topic(trio: Trio) -> None:
    await leaders(trio)
    service = trio.services[1]
    with pytest.raises(InvalidTopicError):
        await service.produce(OFFSETS_TOPIC, 0, build_batch([(b"k", b"v", (), 0)]), Acks.ALL)
    meta = await service.metadata([OFFSETS_TOPIC])
    assert len(meta.topics[0].partitions) == PARTITIONS
    assert all(len(p.replicas) == 3 for p in meta.topics[0].partitions)


async def test_a_coordinator_that_stops_leading_drops_its_groups(trio: Trio) -> None:
    async def create() -> None:
        await trio.services[1].create_topic("o", 1)

    await eventually(create)
    await leaders(trio)
    group = group_on(1)

    async def coordinator() -> BrokerService:
        service = trio.services[trio.services[1].group_coordinator(group).node_id]
        service.fetch_offsets(group)  # loaded
        return service

    coord = await eventually(coordinator)
    node = coord.cluster_node
    assert node is not None
    index = node.coordination.check(group)
    # While the partition is read back: COORDINATOR_LOAD_IN_PROGRESS (Kafka's 14).
    term = node.coordination._loaded.pop(index)
    with pytest.raises(GroupError) as loading:
        coord.fetch_offsets(group)
    assert loading.value.code is ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    assert loading.value.kafka_code == 14
    node.coordination._loaded[index] = term

    def join() -> Awaitable[JoinCompleted]:
        return coord.kafka_join_group(
            group, "", client_id="c", session_timeout_ms=10_000, rebalance_timeout_ms=10_000,
            protocol_type="consumer", protocols=[JoinProtocol("range", ("o",))],
        )

    first = await join()
    assert first.generation == 1
    waiting = asyncio.ensure_future(join())  # parks until the first member rejoins
    await asyncio.sleep(0.1)
    assert not waiting.done()
    raft_group = node.coordination.locate(group)
    assert raft_group is not None
    core = node.driver.core(raft_group[1])
    assert core.lead is not None
    target = next(r for r in core.lead.progress if r != node.node_id)
    core.transfer_leadership(target)
    node.driver.kick(raft_group[1])
    with pytest.raises(GroupError) as moved:
        await asyncio.wait_for(waiting, 10)
    assert moved.value.code is ErrorCode.NOT_COORDINATOR
    with pytest.raises(GroupError):
        coord.describe_group(group)
    # The next coordinator (the balancer may hand the partition back soon after) read
    # the partition back and knows no member: they rejoin there.
    new = await eventually(coordinator)
    described, _ = new.describe_group(group)
    assert not described.members


async def test_an_offsets_partition_is_rewritten_and_stays_small(trio: Trio) -> None:
    """Commits go on forever; the offsets partition does not grow with them: its leader
    appends the live offsets again and moves the log start past the old commits, and a
    new coordinator reads the same offsets back from the shorter log."""
    async def create() -> None:
        await trio.services[1].create_topic("r", 3)

    await eventually(create)
    await leaders(trio)
    for service in trio.services.values():
        node = service.cluster_node
        assert node is not None
        node.coordination.rewrite_after_bytes = 4000
    group = group_on(1)
    gone = group_on(1, {group})

    async def coordinator() -> BrokerService:
        found = trio.services[trio.services[1].group_coordinator(group).node_id]
        await found.alter_group_offsets(gone, {("r", 0): OffsetAndMetadata(1, "")})
        return found

    first = await eventually(coordinator)
    await first.delete_group(gone)
    for n in range(300):
        await first.alter_group_offsets(group, {("r", n % 3): OffsetAndMetadata(n, f"m{n}")})
    node = first.cluster_node
    assert node is not None
    plog = first.partition_log(OFFSETS_TOPIC, 1)

    async def rewritten() -> None:
        assert node.coordination.rewrites >= 3
        assert plog.log_start_offset > 0

    await eventually(rewritten)
    # 300 commits of ~110 bytes each: the log holds a few rewrites' worth, not all.
    assert plog.size_bytes < 3 * 4000
    expected = {("r", 0): 297, ("r", 1): 298, ("r", 2): 299}
    assert await serving(first, group) == expected
    stopped = node.node_id
    await trio.stop(stopped)

    second, offsets = await served_by_coordinator(trio, group, not_on=stopped)
    assert offsets == expected
    assert second.groups.fetch_offsets(group, None)[("r", 2)].metadata == "m299"
    assert second.fetch_offsets(gone) == {}


async def test_a_partition_with_no_live_offsets_is_emptied_by_a_rewrite(trio: Trio) -> None:
    async def create() -> None:
        await trio.services[1].create_topic("e", 1)

    await eventually(create)
    await leaders(trio)
    for service in trio.services.values():
        node = service.cluster_node
        assert node is not None
        node.coordination.rewrite_after_bytes = 2000
    group = group_on(2)

    async def coordinator() -> BrokerService:
        found = trio.services[trio.services[1].group_coordinator(group).node_id]
        found.fetch_offsets(group)  # loaded
        return found

    first = await eventually(coordinator)
    for n in range(40):
        await first.alter_group_offsets(group, {("e", 0): OffsetAndMetadata(n, "")})
        await first.delete_group(group)
    node = first.cluster_node
    assert node is not None
    plog = first.partition_log(OFFSETS_TOPIC, 2)

    async def emptied() -> None:
        assert node.coordination.rewrites >= 1
        assert plog.log_start_offset > 0

    await eventually(emptied)
    assert first.fetch_offsets(group) == {}
    await trio.stop(node.node_id)

    _, offsets = await served_by_coordinator(trio, group)
    assert offsets == {}


async def test_offset_delete_writes_tombstones_the_next_coordinator_reads(trio: Trio) -> None:
    """OffsetDelete (KIP-496) in a cluster: the group's offsets of the named partitions
    are tombstoned in ``__consumer_offsets`` (Raft-committed before the answer), so the
    next coordinator serves the others only."""
    async def create() -> None:
        await trio.services[1].create_topic("o", 2)

    await eventually(create)
    await leaders(trio)
    group = group_on(0)

    async def commit_and_delete() -> int:
        coordinator = trio.services[trio.services[1].group_coordinator(group).node_id]
        await coordinator.alter_group_offsets(group, {("o", 0): OffsetAndMetadata(7, ""),
                                                      ("o", 1): OffsetAndMetadata(3, "")})
        outcomes = await coordinator.delete_offsets(group, [("o", 1)])
        assert [o.error for o in outcomes] == [None]
        node = coordinator.cluster_node
        assert node is not None
        return node.node_id

    first = await eventually(commit_and_delete)
    assert await serving(trio.services[first], group) == {("o", 0): 7}
    await trio.stop(first)
    _, offsets = await served_by_coordinator(trio, group, not_on=first)
    assert offsets == {("o", 0): 7}
