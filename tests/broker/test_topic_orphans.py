"""Directories under ``topics/`` that no topic definition names, at start.

Before: every such directory was removed at start, as if a crash had left it mid-create
or mid-delete. When the meta store lost its records of a topic (its WAL cut or deleted
after a kill -9), that removed the topic's acknowledged records, silently. Now the meta
store says which topics are being created or deleted (``MetaStore.pending``): only those
are removed; any other directory holding data refuses the start (or, with
``skip_damaged``, is kept unserved).

The same holds one level down: a partition directory past the partitions a topic's
record lists (its growth, Kafka's CreatePartitions, lost from the meta store, or a
crash mid-growth: ``GROWING``). Before, such a directory was silently left unserved, and
growing the topic again reopened it with its old records at offset 0."""

from __future__ import annotations

import contextlib
import copy

import pytest

from sentinel.broker.meta_store import CREATING, DELETING, GROWING, MetaStore, TopicRecord
from sentinel.broker.service import BrokerService
from sentinel.broker.validation import Acks
from sentinel.broker.verify import verify_data_dir
from sentinel.clock import SystemClock
from sentinel.config import BrokerConfig
from sentinel.errors import DamagedDataError, StorageUnavailableError
from sentinel.fs import MemFS, SimulatedCrash, caused_by_crash
from sentinel.record import build_batch, decode_records, iter_batches

CONFIG = BrokerConfig(data_dir="/data", node_id=1, port=9555, sync_mode="always")
BATCH = build_batch([(b"k", b"acknowledged", (), 1_700_000_000_000)])


async def started(fs: MemFS, *, skip_damaged: bool = False) -> BrokerService:
    config = CONFIG if not skip_damaged else BrokerConfig(
        data_dir="/data", node_id=1, port=9555, sync_mode="always", skip_damaged=True
    )
    service = BrokerService(config, fs, SystemClock())
    await service.start()
    return service


def meta(fs: MemFS) -> MetaStore:
    return MetaStore.open(fs, "/data/meta")


def pending(fs: MemFS) -> dict[str, str]:
    """What the (closed) broker's meta store records as being created or deleted."""
    store = meta(fs)
    try:
        return store.pending()
    finally:
        store.close()


async def with_topic(fs: MemFS, name: str = "t") -> None:
    service = await started(fs)
    await service.create_topic(name, 2)
    await service.produce(name, 1, BATCH, Acks.ALL)
    await service.stop()


async def test_a_topic_whose_definition_was_lost_refuses_the_start_and_keeps_its_data() -> None:
    fs = MemFS()
    await with_topic(fs)
    store = meta(fs)
    store._engine.delete(b"t/t")  # the meta store lost the topic's record
    store.close()
    before = sorted(p for p in fs.files if p.startswith("/data/topics/t/"))
    with pytest.raises(DamagedDataError, match="/data/topics/t holds partition data"):
        await started(fs)
    assert sorted(p for p in fs.files if p.startswith("/data/topics/t/")) == before


async def test_skip_damaged_keeps_it_unserved_and_a_topic_of_its_name_cannot_be_made() -> None:
    fs = MemFS()
    await with_topic(fs)
    store = meta(fs)
    store._engine.delete(b"t/t")
    store.close()
    service = await started(fs, skip_damaged=True)
    try:
        assert [t.name for t in service.registry] == []
        with pytest.raises(StorageUnavailableError, match="remove the directory"):
            await service.create_topic("t", 1)
        await service.create_topic("other", 1)  # the rest serves
    finally:
        await service.stop()
    assert fs.exists("/data/topics/t/1")


async def test_a_directory_left_mid_create_is_removed() -> None:
    fs = MemFS()
    await (await started(fs)).stop()  # a data directory with its meta store
    store = meta(fs)
    store.begin_create("half")
    assert store.pending() == {"half": CREATING}
    store.close()
    fs.makedirs("/data/topics/half/0")
    made = fs.create("/data/topics/half/0/CURRENT")  # what the create had made
    made.write(b"x")
    made.close()
    service = await started(fs)
    try:
        assert not fs.exists("/data/topics/half")
        await service.create_topic("half", 1)  # and the name is free
    finally:
        await service.stop()
    assert pending(fs) == {}


async def assert_refused_and_kept(fs: MemFS, directory: str) -> None:
    """The start refuses naming ``directory`` (it holds partition data), no file of the
    topic changes, and the scrub (``--verify``) judges it as the start does."""
    before = {p: fs.read_all(p) for p in fs.files if p.startswith("/data/topics/t/")}
    with pytest.raises(DamagedDataError, match=f"{directory} holds partition data"):
        await started(fs)
    after = {p: fs.read_all(p) for p in fs.files if p.startswith("/data/topics/t/")}
    assert after == before
    report = verify_data_dir(fs, "/data")
    assert [d.path for d in report.damaged] == [directory]


def lose_creation(fs: MemFS, name: str = "t") -> None:
    """The meta store lost the write that ended ``name``'s creation (its definition, and
    the pending state's end): what a cut WAL tail leaves."""
    store = meta(fs)
    store._engine.delete(b"t/" + name.encode())
    store.begin_create(name)
    store.close()


async def test_a_created_topic_with_records_whose_creation_looks_unfinished_is_kept() -> None:
    """Records in its directory prove the creation ended (none is acknowledged before the
    definition is durable): the meta store lost it, so the start refuses, as for a
    topic whose records are gone altogether; removing it would drop acknowledged records
    (found by flipping and cutting every file: a meta store WAL cut to half did)."""
    fs = MemFS()
    await with_topic(fs)
    lose_creation(fs)
    await assert_refused_and_kept(fs, "/data/topics/t")
    service = await started(fs, skip_damaged=True)
    try:
        assert [t.name for t in service.registry] == []
        with pytest.raises(StorageUnavailableError, match="remove the directory"):
            await service.create_topic("t", 1)
    finally:
        await service.stop()
    assert fs.exists("/data/topics/t/1")


async def test_a_grown_partition_with_records_whose_growth_looks_unfinished_is_kept() -> None:
    fs = MemFS()
    await with_grown_topic(fs)
    lose_growth(fs)
    store = meta(fs)
    store.begin_grow("t")  # the growth's end was lost with its count
    store.close()
    await assert_refused_and_kept(fs, "/data/topics/t/2")


async def test_a_directory_left_mid_delete_is_removed_and_no_longer_pending() -> None:
    fs = MemFS()
    await with_topic(fs)
    store = meta(fs)
    store.delete_topic("t")  # the definition is gone, the files not yet: a crash here
    assert store.pending() == {"t": DELETING}
    store.close()
    service = await started(fs)
    await service.stop()
    assert not fs.exists("/data/topics/t")
    assert pending(fs) == {}


async def test_create_and_delete_leave_nothing_pending() -> None:
    fs = MemFS()
    service = await started(fs)
    try:
        await service.create_topic("a", 1)
        await service.create_topic("b", 1)
        await service.delete_topic("a")
    finally:
        await service.stop()
    store = meta(fs)
    try:
        assert store.pending() == {}
        assert [r.name for r in store.topics()] == ["b"]
    finally:
        store.close()


async def test_an_empty_directory_is_removed() -> None:
    fs = MemFS()
    await (await started(fs)).stop()  # a data directory with its meta store
    fs.makedirs("/data/topics/empty")
    service = await started(fs)
    await service.stop()
    assert not fs.exists("/data/topics/empty")


# -- partition directories a topic's definition does not list

async def with_grown_topic(fs: MemFS) -> None:
    """Topic ``t`` grown from 2 to 3 partitions, one acknowledged record in partition 2."""
    service = await started(fs)
    await service.create_topic("t", 2)
    await service.add_partitions("t", 3)
    await service.produce("t", 2, BATCH, Acks.ALL)
    await service.stop()


def lose_growth(fs: MemFS) -> None:
    """The meta store's record of ``t`` says 2 partitions again (its growth was lost)."""
    store = meta(fs)
    store.put_topic(TopicRecord("t", 2))
    store.close()


async def test_a_partition_whose_definition_was_lost_refuses_the_start_and_keeps_its_data() -> None:
    fs = MemFS()
    await with_grown_topic(fs)
    lose_growth(fs)
    await assert_refused_and_kept(fs, "/data/topics/t/2")


async def test_skip_damaged_keeps_the_partition_unserved_and_the_topic_cannot_grow_on_it() -> None:
    fs = MemFS()
    await with_grown_topic(fs)
    lose_growth(fs)
    service = await started(fs, skip_damaged=True)
    try:
        assert len(service.registry.get("t").partitions) == 2
        with pytest.raises(StorageUnavailableError, match="remove the directory"):
            await service.add_partitions("t", 3)
        assert len(service.registry.get("t").partitions) == 2
        await service.produce("t", 1, BATCH, Acks.ALL)  # the rest serves
    finally:
        await service.stop()
    assert fs.exists("/data/topics/t/2/CURRENT")


async def test_a_partition_directory_left_mid_growth_is_removed() -> None:
    fs = MemFS()
    service = await started(fs)
    await service.create_topic("t", 1)
    await service.stop()
    store = meta(fs)
    store.begin_grow("t")
    assert store.pending() == {"t": GROWING}
    store.close()
    fs.makedirs("/data/topics/t/1")
    made = fs.create("/data/topics/t/1/CURRENT")  # what the growth had made
    made.write(b"x")
    made.close()
    assert verify_data_dir(fs, "/data").damaged == []  # the start removes it: no damage
    service = await started(fs)
    try:
        assert not fs.exists("/data/topics/t/1")
        await service.add_partitions("t", 2)  # and the index is free
        await service.produce("t", 1, BATCH, Acks.ALL)
    finally:
        await service.stop()
    assert pending(fs) == {}


async def test_growth_leaves_nothing_pending() -> None:
    fs = MemFS()
    service = await started(fs)
    try:
        await service.create_topic("t", 1)
        await service.add_partitions("t", 4)
    finally:
        await service.stop()
    assert pending(fs) == {}
    service = await started(fs)
    try:
        assert len(service.registry.get("t").partitions) == 4
    finally:
        await service.stop()


async def test_an_empty_partition_directory_is_removed_and_other_names_are_left() -> None:
    fs = MemFS()
    service = await started(fs)
    await service.create_topic("t", 1)
    await service.stop()
    fs.makedirs("/data/topics/t/5")
    fs.makedirs("/data/topics/t/notes")  # not a partition's name: not the broker's
    service = await started(fs)
    await service.stop()
    assert not fs.exists("/data/topics/t/5")
    assert fs.exists("/data/topics/t/notes")


class ImageAtCrash(MemFS):
    """A MemFS that keeps what a crash at its injected failure would leave (``image``),
    before anything runs after it."""

    image: MemFS | None = None

    def tick(self) -> None:
        try:
            super().tick()
        except SimulatedCrash:
            self.image = durable_image(self)
            raise


def durable_image(fs: MemFS) -> MemFS:
    """What a crash of ``fs`` now leaves, as a filesystem of its own (the crashed
    broker's threads may still write to ``fs``; they cannot reach this one)."""
    with fs.mutex:
        image = MemFS()
        image.dirs = set(fs.dirs)
        for path, inode in fs.durable_files.items():
            kept = copy.deepcopy(inode)
            kept.data = bytearray(inode.synced)
            kept.dirty_from = len(kept.data)
            image.files[path] = image.durable_files[path] = kept
        return image


async def check_grown_or_not(image: MemFS, grown: bool) -> int:
    """A broker starts on ``image`` (never refused: nothing acknowledged was lost) with
    topic ``t`` of 1 or 3 partitions (3 if the growth returned), no stray directory, the
    acknowledged record, and nothing pending; it can grow ``t`` and write to it."""
    after = await started(image)
    try:
        count = len(after.registry.get("t").partitions)
        assert count in (1, 3) and (count == 3 or not grown)
        assert sorted(image.listdir("/data/topics/t")) == [str(i) for i in range(count)]
        if count == 1:
            await after.add_partitions("t", 3)
        await after.produce("t", 2, BATCH, Acks.ALL)
        fetched = await after.fetch("t", 0, 0, 1 << 20)
        values = [r.value for b in iter_batches(fetched.batches) for r in decode_records(b)]
        assert values == [b"acknowledged"]
    finally:
        await after.stop()
    assert pending(image) == {}
    return count


async def test_a_crash_at_every_step_of_a_growth_leaves_a_topic_that_starts_and_grows() -> None:
    """At each step: the image at the crash (nothing after it ran), and the image once
    the failed growth cleaned up after itself (a failure that is not a crash)."""
    outcomes = set()
    for fail_at in range(1000):
        fs = ImageAtCrash()
        service = await started(fs)
        await service.create_topic("t", 1)
        await service.produce("t", 0, BATCH, Acks.ALL)
        fs.fail_after(fail_at)
        try:
            await service.add_partitions("t", 3)
        except Exception as exc:
            assert caused_by_crash(exc), exc
            grown = False
        else:
            grown = True
        fs.fail_after(None)
        images = [durable_image(fs)] + ([] if fs.image is None else [fs.image])
        with contextlib.suppress(Exception):
            await service.stop()
        for image in images:
            outcomes.add(await check_grown_or_not(image, grown))
        if grown:
            break
    else:
        raise AssertionError("the growth never finished")
    assert outcomes == {1, 3}
