"""The broker's stateful pieces in-process, on the in-memory filesystem: ``MetaStore``
(durable across a crash), ``TopicRegistry`` (create, grow, delete, reopen, orphans,
damage) and ``GroupDriver`` (join, commit per partition, persisted offsets)."""

from __future__ import annotations

import pytest

from sentinel.broker.group_driver import GroupDriver, GroupError
from sentinel.broker.group_events import ErrorCode, OffsetAndMetadata
from sentinel.broker.meta_store import MetaStore, TopicRecord
from sentinel.broker.topics import (
    OfflinePartition,
    TopicAlreadyExistsError,
    TopicRegistry,
    UnknownTopicOrPartitionError,
)
from sentinel.clock import ManualClock, SystemClock
from sentinel.errors import DamagedDataError, StorageUnavailableError
from sentinel.fs import MemFS
from sentinel.log.config import InvalidPartitionsError, TopicConfig
from sentinel.record import build_batch
from sentinel.storage.options import EngineOptions

OPTIONS = EngineOptions(memtable_bytes=64 * 1024, background=False)


def registry(fs: MemFS, meta: MetaStore, *, skip_damaged: bool = False) -> TopicRegistry:
    return TopicRegistry(
        fs,
        "/data",
        meta,
        clock=ManualClock(),
        engine_options=OPTIONS,
        default_config=TopicConfig(),
        skip_damaged=skip_damaged,
    )


# ------------------------------------------------------------------ MetaStore


def test_meta_store_keeps_topics_and_offsets_across_a_crash() -> None:
    fs = MemFS()
    meta = MetaStore.open(fs, "/data/meta")
    meta.put_topic(TopicRecord("a", 3, 1, {"retention.ms": "1000"}))
    meta.put_topic(TopicRecord("b", 1))
    meta.commit_offsets(
        "g", {("a", 0): OffsetAndMetadata(7, "x"), ("a", 2): OffsetAndMetadata(1, "")}
    )
    meta.delete_topic("b")
    fs.crash()
    again = MetaStore.open(fs, "/data/meta")
    assert [t.name for t in again.topics()] == ["a"]
    (record,) = again.topics()
    assert (record.partitions, dict(record.configs)) == (3, {"retention.ms": "1000"})
    assert again.all_offsets() == {
        "g": {("a", 0): OffsetAndMetadata(7, "x"), ("a", 2): OffsetAndMetadata(1, "")}
    }
    again.close()


# -------------------------------------------------------------- TopicRegistry


def test_registry_creates_grows_deletes_and_reopens() -> None:
    fs = MemFS()
    meta = MetaStore.open(fs, "/data/meta")
    reg = registry(fs, meta)
    reg.open()
    topic = reg.create("a", 2, 1, {"cleanup.policy": "compact"})
    assert len(topic.partitions) == 2 and topic.config.cleanup_compact
    with pytest.raises(TopicAlreadyExistsError):
        reg.create("a", 1, 1, None)
    topic.partition(1).append(build_batch([(b"k", b"v", (), 1)]))
    assert len(reg.add_partitions("a", 4).partitions) == 4
    with pytest.raises(InvalidPartitionsError):
        reg.add_partitions("a", 3)
    reg.create("b", 1, 1, None)
    reg.delete("b")
    with pytest.raises(UnknownTopicOrPartitionError):
        reg.get("b")
    reg.close()
    # A crash between the directories and the record: the creation is pending.
    meta.begin_create("orphan")
    fs.makedirs("/data/topics/orphan/0")
    reopened = registry(fs, meta)
    reopened.open()
    assert [t.name for t in reopened] == ["a"]
    assert reopened.partition_count("a") == 4
    assert reopened.get("a").partition(1).log_end_offset == 1
    assert not fs.exists("/data/topics/orphan")
    assert meta.pending() == {}
    with pytest.raises(UnknownTopicOrPartitionError):
        reopened.get("a").partition(4)
    reopened.close()
    meta.close()


def test_registry_refuses_a_missing_partition_or_keeps_it_offline() -> None:
    fs = MemFS()
    meta = MetaStore.open(fs, "/data/meta")
    reg = registry(fs, meta)
    reg.open()
    reg.create("a", 2, 1, None)
    reg.close()
    fs.remove_tree("/data/topics/a/1")
    with pytest.raises(DamagedDataError, match="a-1"):
        registry(fs, meta).open()
    lenient = registry(fs, meta, skip_damaged=True)
    lenient.open()
    assert isinstance(lenient.get("a").partitions[1], OfflinePartition)
    with pytest.raises(StorageUnavailableError) as caught:
        lenient.get("a").partition(1)
    assert caught.value.partition == "a-1"
    lenient.get("a").partition(0)  # the other serves
    lenient.close()
    meta.close()


# ---------------------------------------------------------------- GroupDriver


async def test_group_driver_joins_commits_per_partition_and_persists() -> None:
    fs = MemFS()
    meta = MetaStore.open(fs, "/data/meta")
    counts = {"a": 2}
    driver = GroupDriver(meta, counts.get, SystemClock())
    driver.start()
    try:
        joined = await driver.join(
            "g",
            "",
            client_id="c",
            topics=["a"],
            assignor="range",
            session_timeout_s=10.0,
            rebalance_timeout_s=10.0,
        )
        assert joined.assignment is not None and joined.assignment.partitions == {"a": (0, 1)}
        offsets = {("a", 0): OffsetAndMetadata(4, ""), ("a", 1): OffsetAndMetadata(9, "m")}
        codes = await driver.commit("g", joined.member_id, joined.generation, offsets)
        assert codes == {("a", 0): ErrorCode.NONE, ("a", 1): ErrorCode.NONE}
        stale = await driver.commit("g", joined.member_id, joined.generation - 1, offsets)
        assert set(stale.values()) == {ErrorCode.ILLEGAL_GENERATION}
        with pytest.raises(GroupError) as caught:
            await driver.commit("g", "ghost", joined.generation, {})
        assert caught.value.code is ErrorCode.UNKNOWN_MEMBER_ID
        assert caught.value.kafka_code == 25 and caught.value.code_name == "UNKNOWN_MEMBER_ID"
    finally:
        await driver.stop()
    assert meta.all_offsets()["g"] == {
        ("a", 0): OffsetAndMetadata(4, ""),
        ("a", 1): OffsetAndMetadata(9, "m"),
    }
    reloaded = GroupDriver(meta, counts.get, SystemClock())
    reloaded.start()
    assert reloaded.fetch_offsets("g", None)[("a", 1)] == OffsetAndMetadata(9, "m")
    await reloaded.stop()
    meta.close()
