"""``Partition`` in-process: the wait of each acks level, the high watermark, consumers
woken only when it moves, storage errors naming the partition."""

from __future__ import annotations

import asyncio

import pytest

from sentinel.broker.partition import Partition
from sentinel.broker.validation import Acks
from sentinel.clock import ManualClock
from sentinel.errors import InvalidArgumentError, StorageUnavailableError
from sentinel.fs import FS, MemFS
from sentinel.log.config import TopicConfig
from sentinel.log.partition_log import PartitionLog
from sentinel.record import build_batch
from sentinel.storage.options import EngineOptions
from sentinel.storage.wal import SyncMode, WalOptions
from test_disk_full import FullFS


def batch(n: int = 2, tag: str = "v") -> bytes:
    return build_batch([(b"k", f"{tag}{i}".encode(), (), 1_700_000_000_000 + i) for i in range(n)])


def open_log(fs: FS, mode: SyncMode) -> PartitionLog:
    options = EngineOptions(memtable_bytes=64 * 1024, background=False, wal=WalOptions(mode))
    return PartitionLog.open(fs, "/t/0", TopicConfig(), ManualClock(), options)


class GatedPartition(Partition):
    """A partition whose WAL waits hold until the test opens the gate."""

    def __init__(self, plog: PartitionLog, *, sync_always: bool) -> None:
        super().__init__("t", 0, plog, sync_always=sync_always)
        self.gate = asyncio.Event()
        self.syncs: list[int] = []

    async def _sync_to(self, lsn: int) -> None:
        self.syncs.append(lsn)
        await self.gate.wait()
        await super()._sync_to(lsn)


async def until(predicate: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


@pytest.mark.parametrize("acks", [Acks.LEADER, Acks.ALL])
async def test_sync_always_acks_1_and_all_answer_after_the_fsync(acks: Acks) -> None:
    plog = open_log(MemFS(), SyncMode.ALWAYS)
    part = GatedPartition(plog, sync_always=True)
    produce = asyncio.ensure_future(part.append(batch(3), acks))
    await until(lambda: part.syncs)
    # Appended but not durable: not answered, invisible, no consumer woken.
    assert not produce.done()
    assert plog.log_end_offset == 3 and part.high_watermark == 0
    assert part.hw_signal.version == 0
    assert part.read(0, 1 << 20).batches == ()
    part.gate.set()
    outcome = await produce
    assert (outcome.base_offset, outcome.records, outcome.high_watermark) == (0, 3, 3)
    assert part.hw_signal.version == 1
    plog.close()


async def test_sync_always_acks_0_answers_at_once_and_the_fsync_still_happens() -> None:
    plog = open_log(MemFS(), SyncMode.ALWAYS)
    part = GatedPartition(plog, sync_always=True)
    outcome = await part.append(batch(2), Acks.NONE)
    assert outcome.base_offset == 0 and outcome.high_watermark == 0
    await until(lambda: part.syncs)  # the fsync is under way, not waited for
    assert part.hw_signal.version == 0 and part.high_watermark == 0
    part.gate.set()
    await part.settle()
    assert part.high_watermark == 2 and part.hw_signal.version == 1
    plog.close()


@pytest.mark.parametrize("mode", [SyncMode.NONE, SyncMode.INTERVAL])
@pytest.mark.parametrize("acks", [Acks.NONE, Acks.LEADER, Acks.ALL])
async def test_other_sync_modes_never_wait_and_the_watermark_moves_with_the_append(
    mode: SyncMode, acks: Acks
) -> None:
    plog = open_log(MemFS(), mode)
    part = GatedPartition(plog, sync_always=False)
    outcome = await part.append(batch(2), acks)
    assert part.syncs == []
    assert outcome.high_watermark == 2 and part.hw_signal.version == 1
    assert len(part.read(0, 1 << 20).batches) == 1
    plog.close()


async def test_a_duplicate_moves_nothing_and_wakes_nobody() -> None:
    plog = open_log(MemFS(), SyncMode.NONE)
    part = Partition("t", 0, plog, sync_always=False)
    idem = build_batch([(b"k", b"v", (), 1)], producer_id=7, producer_epoch=0, base_sequence=0)
    first = await part.append(idem, Acks.ALL)
    version = part.hw_signal.version
    again = await part.append(idem, Acks.ALL)
    assert again.duplicate and again.base_offset == first.base_offset
    assert part.hw_signal.version == version
    assert part.appended_signal.version == 2  # producers in turn are woken by any append
    plog.close()


async def test_a_consumer_waiting_on_the_signal_wakes_when_the_batch_is_visible() -> None:
    plog = open_log(MemFS(), SyncMode.ALWAYS)
    part = GatedPartition(plog, sync_always=True)
    seen = part.hw_signal.version
    woken = asyncio.ensure_future(part.hw_signal.wait(seen, 10.0))
    produce = asyncio.ensure_future(part.append(batch(1), Acks.LEADER))
    await until(lambda: part.syncs)
    await asyncio.sleep(0)
    assert not woken.done()  # appended, not durable: the consumer sleeps on
    part.gate.set()
    await woken
    assert part.read(0, 1 << 20).batches  # and what woke it is readable
    await produce
    plog.close()


async def test_concurrent_appends_each_wake_consumers_once_their_fsync_covers_them() -> None:
    plog = open_log(MemFS(), SyncMode.ALWAYS)
    part = Partition("t", 0, plog, sync_always=True)
    outcomes = await asyncio.gather(*(part.append(batch(1, f"{i}-"), Acks.ALL) for i in range(8)))
    assert sorted(o.base_offset for o in outcomes) == list(range(8))
    assert part.high_watermark == 8
    assert 1 <= part.hw_signal.version <= 8  # group commit may cover several at once
    plog.close()


async def test_an_empty_request_is_refused() -> None:
    plog = open_log(MemFS(), SyncMode.NONE)
    with pytest.raises(InvalidArgumentError):
        await Partition("t", 0, plog, sync_always=False).append(b"", Acks.LEADER)
    plog.close()


async def test_a_full_disk_at_the_append_names_the_partition() -> None:
    fs = FullFS()
    plog = open_log(fs, SyncMode.ALWAYS)
    part = Partition("t", 0, plog, sync_always=True)
    fs.refuse = lambda path, op: op == "write" and path.endswith(".wal")
    with pytest.raises(StorageUnavailableError) as caught:
        await part.append(batch(1), Acks.LEADER)
    assert caught.value.partition == "t-0" and "t-0" in str(caught.value)
    assert part.hw_signal.version == 0
    fs.refuse = lambda _path, _op: False
    plog.close()


async def test_a_failed_fsync_names_the_partition_and_is_never_acknowledged() -> None:
    fs = FullFS()
    plog = open_log(fs, SyncMode.ALWAYS)
    part = Partition("t", 0, plog, sync_always=True)
    fs.refuse = lambda path, op: op == "sync" and path.endswith(".wal")
    with pytest.raises(StorageUnavailableError) as caught:
        await part.append(batch(1), Acks.ALL)
    assert caught.value.partition == "t-0"
    assert part.high_watermark == 0 and part.read(0, 1 << 20).batches == ()
    fs.refuse = lambda _path, _op: False
    plog.close()
