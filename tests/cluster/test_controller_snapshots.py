"""Snapshots of the controller's state in a running cluster (three ``BrokerService``s in
one process, MemFS, the real peer transport, a snapshot every 20 offsets): issue 8,
"the controller's state machine has snapshots". Offset commits make the metadata log
grow; every broker snapshots its image and moves group 0's log start; a restarted
broker starts from its snapshot; a follower that was down while the leader's log start
passed its log end installs the leader's snapshot before applying anything more."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cluster.test_cluster_service import Trio, batch, eventually, running, user_values
from sentinel.broker.service import BrokerService
from sentinel.broker.validation import Acks
from sentinel.cluster import controller_snapshots
from sentinel.cluster.controller import CONTROLLER_GROUP
from sentinel.cluster.node import ClusterNode
from sentinel.cluster.offsets_topic import OFFSETS_TOPIC
from sentinel.errors import CorruptionError

EVERY = 20


@pytest.fixture
async def trio(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Trio]:
    monkeypatch.setattr(controller_snapshots, "SNAPSHOT_EVERY", EVERY)
    async with running(Trio()) as t:
        yield t


def node_of(trio: Trio, i: int) -> ClusterNode:
    node = trio.services[i].cluster_node
    assert node is not None
    return node


def metadata_start(trio: Trio, i: int) -> int:
    return node_of(trio, i).driver.core(CONTROLLER_GROUP).log.log_start


async def create(trio: Trio, name: str, partitions: int = 1) -> None:
    async def go() -> None:
        await trio.services[1].create_topic(name, partitions)

    await eventually(go)


async def commit(trio: Trio, via: int, group: str, offset: int) -> None:
    """A CommitOffsets record in the controller's log (group offsets live in
    __consumer_offsets now; the record kind stays, for the logs of a former release,
    and makes a cheap record here)."""
    await node_of(trio, via).controller.execute(
        "commit_offsets", {"group_id": group, "offsets": [["o", 0, offset, "m"]]}
    )


async def controller_leader(trio: Trio) -> int:
    async def found() -> int:
        leader = node_of(trio, next(iter(trio.services))).controller.leader
        assert leader is not None and leader in trio.services
        return leader

    return await eventually(found)


async def same_image(trio: Trio, i: int) -> None:
    """Broker ``i``'s image equals every other running broker's, none stale."""
    async def equal() -> None:
        mine = node_of(trio, i).controller
        assert mine.holding is None
        for j in trio.services:
            other = node_of(trio, j).controller
            assert other.holding is None
            assert mine.image == other.image, (i, mine.image, j, other.image)

    await eventually(equal)


async def test_commits_make_snapshots_and_a_restarted_broker_starts_from_one(
    trio: Trio,
) -> None:
    await create(trio, "o")
    lead = await eventually(lambda: _leader_of(trio, "o"))
    await trio.services[lead].produce("o", 0, batch(b"kept"), Acks.ALL)
    for n in range(6 * EVERY):
        await commit(trio, 1 + n % 3, "g", n)
    for i in (1, 2, 3):  # every broker snapshotted and dropped the log's head
        async def moved(i: int = i) -> None:
            node = node_of(trio, i)
            assert node.snapshots.taken >= 2
            assert len(node.snapshots.store.offsets()) == 2
            assert metadata_start(trio, i) == node.snapshots.store.offsets()[0] > 0

        await eventually(moved)
    restarted = 2
    node = node_of(trio, restarted)
    while node.controller.applied_end - node.snapshots.last > EVERY // 2:
        await commit(trio, restarted, "g", 6 * EVERY - 1)  # no change: a record still
    # A topic created after the restarted broker's newest snapshot, with one replica
    # (a partition only that broker holds): its start must not delete it.
    offset = await node.controller.execute("create_topic", {
        "name": "late", "partitions": 3, "replication_factor": 1, "configs": {},
    })
    assert offset >= node.snapshots.last
    late = node.controller.image.topics["late"]
    mine = next(i for i, a in enumerate(late.partitions) if a.replicas == (restarted,))

    async def produce_late() -> None:
        await trio.services[restarted].produce("late", mine, batch(b"only here"), Acks.ALL)

    await eventually(produce_late)
    start_before = metadata_start(trio, restarted)
    await trio.stop(restarted)
    assert max(node.snapshots.store.offsets()) <= offset
    service = await trio.start(restarted)
    node = node_of(trio, restarted)
    # The topic's record lies below the log start: only the snapshot can hold it.
    assert metadata_start(trio, restarted) >= start_before > 0
    assert node.controller.image.topics.keys() - {OFFSETS_TOPIC} == {"o"}
    assert node.snapshots.last > 0
    await same_image(trio, restarted)
    assert service.meta.all_offsets()["g"][("o", 0)].offset == 6 * EVERY - 1
    await commit(trio, restarted, "g", 1000)  # and it goes on applying

    async def applied_later() -> None:
        assert service.meta.all_offsets()["g"][("o", 0)].offset == 1000

    await eventually(applied_later)
    assert stored_values(service, "o", 0)[:1] == [b"kept"]
    assert stored_values(service, "late", mine) == [b"only here"]


def stored_values(service: BrokerService, topic: str, index: int) -> list[bytes | None]:
    read = service.partition_log(topic, index).read(0, 1 << 20, include_uncommitted=True)
    return user_values(b"".join(bytes(b) for b in read.batches))


async def _leader_of(trio: Trio, topic: str) -> int:
    found = trio.leader_of(topic, 0)
    assert found is not None
    return found


async def test_a_follower_behind_the_log_start_installs_the_leaders_snapshot(
    trio: Trio,
) -> None:
    await create(trio, "o")
    await create(trio, "gone")
    leader = await controller_leader(trio)
    follower = next(i for i in (1, 2, 3) if i != leader)
    others = [i for i in (1, 2, 3) if i != follower]
    for i in (1, 2, 3):
        async def has_both(i: int = i) -> None:
            assert {"o", "gone"} <= {t.name for t in trio.services[i].registry}

        await eventually(has_both)
    end = node_of(trio, follower).driver.core(CONTROLLER_GROUP).log.log_end
    await trio.stop(follower)
    # Meanwhile: a topic created, one deleted, offsets committed; the leader's log
    # start moves past the follower's log end.
    async def create_fresh() -> None:
        await trio.services[others[0]].create_topic("fresh", 2)

    await eventually(create_fresh)
    await trio.services[others[0]].delete_topic("gone")
    n = 0
    while min(metadata_start(trio, i) for i in others) <= end:
        await commit(trio, others[n % 2], "g", n)
        n += 1
        assert n < 50 * EVERY, "the log start never moved"
        if n % EVERY == 0:
            await asyncio.sleep(0.05)  # let the snapshots be written
    service = await trio.start(follower)
    node = node_of(trio, follower)

    async def installed() -> None:
        assert node.snapshots.installed >= 1

    await eventually(installed)
    current = await controller_leader(trio)
    await same_image(trio, follower)
    names = {t.name for t in service.registry}
    assert "fresh" in names and "gone" not in names
    assert len(service.registry.get("fresh").partitions) == 2
    assert service.meta.all_offsets()["g"][("o", 0)].offset == n - 1
    assert metadata_start(trio, follower) > end
    # It applies what comes later, and replicates the topic it learned of.
    async def create_later() -> None:
        await trio.services[current].create_topic("later", 1)

    await eventually(create_later)

    async def has_later() -> None:
        assert service.registry.find("later") is not None

    await eventually(has_later)
    lead = await eventually(lambda: _leader_of(trio, "fresh"))
    out = await trio.services[lead].produce("fresh", 0, batch(b"x"), Acks.ALL)

    async def replicated() -> None:
        assert service.partition_log("fresh", 0).high_watermark >= out.base_offset + 1

    await eventually(replicated)
    await same_image(trio, follower)


async def test_a_follower_stopped_before_its_install_holds_everything_and_installs_at_start(
    trio: Trio, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create(trio, "o")
    leader = await controller_leader(trio)
    follower = next(i for i in (1, 2, 3) if i != leader)
    others = [i for i in (1, 2, 3) if i != follower]
    end = node_of(trio, follower).driver.core(CONTROLLER_GROUP).log.log_end
    await trio.stop(follower)
    n = 0
    while min(metadata_start(trio, i) for i in others) <= end:
        await commit(trio, others[n % 2], "g", n)
        n += 1
        assert n < 50 * EVERY, "the log start never moved"
        if n % EVERY == 0:
            await asyncio.sleep(0.05)

    def no_install(self: controller_snapshots.ControllerSnapshots, need: int) -> None:
        pass

    monkeypatch.setattr(controller_snapshots.ControllerSnapshots, "stale", no_install)
    service = await trio.start(follower)
    node = node_of(trio, follower)

    async def reset() -> None:
        assert node.controller.holding is not None
        assert metadata_start(trio, follower) > end

    await eventually(reset)
    stale = node.controller.applied_end

    async def create_fresh() -> None:
        await trio.services[others[0]].create_topic("fresh", 1)

    await eventually(create_fresh)
    # Entries reach it and commit, but none is applied on the stale image.
    async def received() -> None:
        core = node.driver.core(CONTROLLER_GROUP)
        assert core.commit >= node_of(trio, others[0]).controller.applied_end

    await eventually(received)
    assert node.controller.applied_end == stale
    assert service.registry.find("fresh") is None
    assert "g" not in service.meta.all_offsets()
    await trio.stop(follower)  # as a crash before the install: the log starts past it
    monkeypatch.undo()
    monkeypatch.setattr(controller_snapshots, "SNAPSHOT_EVERY", EVERY)
    service = await trio.start(follower)
    node = node_of(trio, follower)

    async def installed() -> None:
        assert node.snapshots.installed == 1

    await eventually(installed)
    await same_image(trio, follower)
    assert service.registry.find("fresh") is not None
    assert service.meta.all_offsets()["g"][("o", 0)].offset == n - 1
    assert node.snapshots.store.offsets()[-1] == node.snapshots.last


async def test_a_damaged_snapshot_refuses_the_start_and_removing_it_installs_another(
    trio: Trio,
) -> None:
    await create(trio, "o")
    for n in range(4 * EVERY):
        await commit(trio, 1 + n % 3, "g", n)
    victim = 3
    node = node_of(trio, victim)

    async def two_and_moved() -> None:
        offsets = node.snapshots.store.offsets()
        assert len(offsets) == 2 and metadata_start(trio, victim) == offsets[0]

    await eventually(two_and_moved)
    await trio.stop(victim)
    fs = trio.fs[victim]
    store = node.snapshots.store
    newest = store.offsets()[-1]
    # The newest damaged: the older one plus the log covers it (a WARNING, no refusal).
    path = store.path(newest)
    good = fs.read_all(path)
    f = fs.create(path)
    f.write(good[:-1] + bytes([good[-1] ^ 0xFF]))
    f.sync()
    f.close()
    service = await trio.start(victim)
    await same_image(trio, victim)
    assert service.meta.all_offsets()["g"][("o", 0)].offset == 4 * EVERY - 1
    await trio.stop(victim)
    # All damaged: nothing covers the log start, the start is refused naming the file
    # (the start above may have written a snapshot again: the offsets are read anew).
    offsets = store.offsets()
    for offset in offsets:
        p = store.path(offset)
        data = fs.read_all(p)
        f = fs.create(p)
        f.write(data[:-1] + bytes([data[-1] ^ 0xFF]))
        f.sync()
        f.close()
    with pytest.raises(CorruptionError) as refused:
        await trio.start(victim)
    assert store.path(offsets[-1]) in str(refused.value) and "\n" not in str(refused.value)
    for offset in offsets:
        fs.remove(store.path(offset))
    service = await trio.start(victim)
    restarted = node_of(trio, victim)

    async def installed() -> None:
        assert restarted.snapshots.installed == 1

    await eventually(installed)
    await same_image(trio, victim)
    assert service.registry.find("o") is not None
