"""Retention and DeleteRecords on a replicated partition (three ``BrokerService``s in
one process, MemFS, the real peer transport): DeleteRecords is an entry of the
partition's Raft log, so every replica's log start moves; a follower that was down
while the leader's log start passed it is brought up from that log start (issue 8:
"A follower whose next entry is below the leader's log start (retention removed it) is
brought up from the log start"); each replica applies retention on its own, never
past the commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cluster.test_cluster_service import Trio, batch, eventually, running, user_values
from sentinel.broker.validation import Acks
from sentinel.cluster.node import ClusterNode
from sentinel.log.errors import OffsetOutOfRangeError


@pytest.fixture
async def trio() -> AsyncIterator[Trio]:
    async with running(Trio()) as t:
        yield t


def node_of(trio: Trio, i: int) -> ClusterNode:
    node = trio.services[i].cluster_node
    assert node is not None
    return node


async def created(trio: Trio, name: str, configs: dict[str, str] | None = None) -> int:
    """Create ``name`` (one partition, three replicas); its leader."""
    async def create() -> None:
        await trio.services[1].create_topic(name, 1, configs=configs)

    await eventually(create)

    async def leader() -> int:
        found = trio.leader_of(name, 0)
        assert found is not None
        return found

    return await eventually(leader)


async def test_delete_records_reaches_every_replica_and_a_laggard_restarts_from_it(
    trio: Trio,
) -> None:
    lead = await created(trio, "d")
    for n in range(50):
        await trio.services[lead].produce("d", 0, batch(b"%d" % n), Acks.ALL)
    laggard = next(i for i in (1, 2, 3) if i != lead)
    await trio.stop(laggard)
    for n in range(50, 100):
        out = await trio.services[lead].produce("d", 0, batch(b"%d" % n), Acks.ALL)
    end = out.base_offset + 1
    assert await trio.services[lead].delete_records("d", 0, 80) == 80
    with pytest.raises(OffsetOutOfRangeError):
        await trio.services[lead].fetch("d", 0, 79, 1 << 20)
    kept = user_values((await trio.services[lead].fetch("d", 0, 80, 1 << 20)).batches)
    assert kept and kept[-1] == b"99"
    for i in trio.services:  # the replicas up: their start moved with the entry
        async def moved(i: int = i) -> None:
            assert trio.services[i].partition_log("d", 0).log_start_offset == 80

        await eventually(moved)

    await trio.start(laggard)  # its next entry is below the leader's log start

    async def brought_up() -> None:
        plog = trio.services[laggard].partition_log("d", 0)
        assert plog.log_start_offset == 80
        assert plog.high_watermark >= end + 1  # the DeleteRecords entry too

    await eventually(brought_up)
    # It serves the same records once it leads.
    group = node_of(trio, laggard).controller.image.topics["d"].partitions[0].group

    async def served_by_the_laggard() -> list[bytes | None]:
        if trio.leader_of("d", 0) != laggard:
            current = trio.leader_of("d", 0)
            if current is not None:
                node = node_of(trio, current)
                node.driver.core(group).transfer_leadership(laggard)
                node.driver.kick(group)
            raise AssertionError("not leading yet")
        fetched = await trio.services[laggard].fetch("d", 0, 80, 1 << 20)
        return user_values(fetched.batches)

    assert await eventually(served_by_the_laggard) == kept
    out = await trio.services[laggard].produce("d", 0, batch(b"after"), Acks.ALL)
    assert out.base_offset >= end


async def test_each_replica_applies_retention_up_to_the_commit(trio: Trio) -> None:
    lead = await created(trio, "r", {"retention.bytes": "400"})
    for n in range(30):
        out = await trio.services[lead].produce("r", 0, batch(b"v%d" % n), Acks.ALL)
    for i, service in trio.services.items():
        async def retained(i: int = i) -> None:
            plog = trio.services[i].partition_log("r", 0)
            trio.services[i].enforce_retention()  # its own pass, through its group
            await asyncio.sleep(0.02)
            assert 0 < plog.log_start_offset <= plog.high_watermark
            assert plog.size_bytes <= 400

        await eventually(retained)
        assert service.partition_log("r", 0).log_end_offset >= out.base_offset + 1
    later = await trio.services[lead].produce("r", 0, batch(b"later"), Acks.ALL)
    fetched = await trio.services[lead].fetch("r", 0, later.base_offset, 1 << 20)
    assert user_values(fetched.batches) == [b"later"]
