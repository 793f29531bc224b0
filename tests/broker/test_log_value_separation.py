"""A partition's record batches are written once, into its WAL, and its tables hold
pointers to them (``storage_setup.LOG_VALUE_SEPARATION_BYTES``): a flush copies a few
bytes per batch into a table, not the batch. Checked on a real ``BrokerService`` over
the in-memory filesystem: after a flush, the tables' bytes are a small part of what was
produced, and every batch reads back the same after a restart (from the WAL)."""

from __future__ import annotations

import posixpath

from sentinel.broker.service import BrokerService
from sentinel.broker.storage_setup import LOG_VALUE_SEPARATION_BYTES
from sentinel.broker.validation import Acks
from sentinel.clock import SystemClock
from sentinel.config import BrokerConfig
from sentinel.fs import FS, MemFS
from sentinel.record import build_batch, iter_batches

BATCHES = 300


def _config() -> BrokerConfig:
    return BrokerConfig(data_dir="/data", node_id=1, port=9555, sync_mode="always")


def _table_bytes(fs: FS, directory: str) -> int:
    total = 0
    for name in fs.listdir(directory):
        path = posixpath.join(directory, name)
        if name.endswith(".sst"):
            total += fs.file_size(path)
    return total


def _partition_dir(fs: FS) -> str:
    topics = "/data/topics"
    (topic,) = [n for n in fs.listdir(topics) if n.startswith("t")]
    return posixpath.join(topics, topic, "0")


async def test_small_batches_stay_in_the_wal_and_read_back_after_a_restart() -> None:
    fs = MemFS()
    # 1 KB batches: far below the engine's default bound (4 KiB), above the log's.
    batches = [
        build_batch([(b"k%d" % i, b"v%04d" % i * 200, (), 1_700_000_000_000 + i)])
        for i in range(BATCHES)
    ]
    assert all(LOG_VALUE_SEPARATION_BYTES <= len(b) < 4096 for b in batches)
    service = BrokerService(_config(), fs, SystemClock())
    await service.start()
    try:
        await service.create_topic("t", 1)
        for data in batches:
            await service.produce("t", 0, data, Acks.ALL)
    finally:
        await service.stop()  # flushes every memtable into a table
    produced = sum(len(b) for b in batches)
    tables = _table_bytes(fs, _partition_dir(fs))
    assert 0 < tables < produced // 5, (tables, produced)

    service = BrokerService(_config(), fs, SystemClock())
    await service.start()
    try:
        partition = service.partition("t", 0)
        read = b""
        offset = 0
        while offset < BATCHES:
            result = partition.read(offset, 1 << 20)
            assert result.batches, f"nothing read at {offset}"
            read += b"".join(bytes(b) for b in result.batches)
            offset = result.next_offset
        stored = list(iter_batches(read))
        assert len(stored) == BATCHES
        for i, (got, sent) in enumerate(zip(stored, batches, strict=True)):
            # The broker stamps the base offset (bytes 0-7) and the leader epoch
            # (12-15); the length and everything from the magic byte on are the client's.
            assert int.from_bytes(got[:8], "big") == i
            assert (got[8:12], got[16:]) == (sent[8:12], sent[16:]), i
    finally:
        await service.stop()
