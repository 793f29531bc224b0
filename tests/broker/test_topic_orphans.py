"""Directories under ``topics/`` that no topic definition names, at start.

Before: every such directory was removed at start, as if a crash had left it mid-create
or mid-delete. When the meta store lost its records of a topic (its WAL cut or deleted
after a kill -9), that removed the topic's acknowledged records, silently. Now the meta
store says which topics are being created or deleted (``MetaStore.pending``): only those
are removed; any other directory holding data refuses the start (or, with
``skip_damaged``, is kept unserved)."""

from __future__ import annotations

import pytest

from sentinel.broker.meta_store import CREATING, DELETING, MetaStore
from sentinel.broker.service import BrokerService
from sentinel.broker.validation import Acks
from sentinel.clock import SystemClock
from sentinel.config import BrokerConfig
from sentinel.errors import DamagedDataError, StorageUnavailableError
from sentinel.fs import MemFS
from sentinel.record import build_batch

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
