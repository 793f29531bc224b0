"""An engine opens on a full disk (injected: ``FullFS`` refuses every write): what a
start would write is put off, not required. A replay kept in memory goes on in its
last WAL segment; a replay too large to keep is served from memory while its flush is
retried; a WAL whose new segment cannot be made starts failed and makes it when space
is back; the journal keeps the entries it redid until their flush. Reads of everything
acknowledged are served meanwhile, writes are refused with ``StorageUnavailableError``,
and once space is back writes resume and a reopen finds everything. A read-only or
failing disk (not a full one) still refuses the open."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Iterator

import pytest

from metrics_polling import wait_for
from sentinel.broker.service import BrokerService
from sentinel.broker.storage_setup import redo_needed
from sentinel.clock import ManualClock
from sentinel.config import BrokerConfig
from sentinel.errors import StorageUnavailableError
from sentinel.storage.engine import Engine
from sentinel.storage.files import TABLE_SUFFIX
from sentinel.storage.journal import Journal, JournalOptions
from sentinel.storage.options import EngineOptions
from sentinel.storage.sync_scheduler import SyncScheduler
from sentinel.storage.write_batch import WriteBatch
from test_disk_full import FullFS

D = "/data/p0"
SMALL = 64 * 1024  # the memtable: a replay over a quarter of it is flushed at open


@pytest.fixture
def scheduler() -> Iterator[SyncScheduler]:
    sched = SyncScheduler(2)
    yield sched
    sched.shutdown()


def options(**kw: object) -> EngineOptions:
    return EngineOptions(memtable_bytes=SMALL, **kw)  # type: ignore[arg-type]


def open_journal(fs: FullFS, scheduler: SyncScheduler) -> Journal:
    return Journal.open(
        fs, "/data/journal", root="/data", scheduler=scheduler,
        options=JournalOptions(skip_window_s=None),  # every entry through the journal
    )  # fmt: skip


def journaled(scheduler: SyncScheduler, journal: Journal) -> EngineOptions:
    return options(sync_scheduler=scheduler, journal=journal, hold_lock=False)


def written_through_the_journal(engine: Engine, count: int = 30) -> dict[bytes, bytes]:
    """Entries acknowledged by the journal's fsync alone (the engine's WAL unsynced)."""
    written = {}
    for i in range(count):
        key, value = b"k%03d" % i, b"v" * 300
        engine.sync_future(engine.write_nowait(WriteBatch().put(key, value))).result(30)
        written[key] = value
    return written


def kill(engine: Engine, fs: FullFS) -> None:
    """kill -9: the engine's background work stops with the process (here it would go
    on writing into the directory the next engine opens), unsynced bytes are lost."""
    engine._maintenance.stop()
    fs.crash()


def fill(engine: Engine, count: int, size: int, tag: bytes) -> dict[bytes, bytes]:
    written = {}
    for i in range(count):
        key, value = b"%s-%04d" % (tag, i), bytes([65 + i % 26]) * size
        engine.put(key, value)
        written[key] = value
    return written


def assert_serves(engine: Engine, written: dict[bytes, bytes]) -> None:
    wrong = [k for k, v in written.items() if engine.get(k) != v]
    assert not wrong, f"{len(wrong)} acknowledged values missing or changed: {wrong[:5]}"


def put_when_space_is_back(engine: Engine, written: dict[bytes, bytes]) -> None:
    def attempt() -> bool:
        try:
            engine.put(b"after", b"space")
        except StorageUnavailableError:
            return False
        return True

    wait_for(attempt, "a write after space came back", timeout=20)
    written[b"after"] = b"space"


@pytest.mark.parametrize(
    ("how", "count", "size"),
    [
        ("killed, replay kept", 10, 100),  # 1 KiB: stays in memory, the WAL continues
        ("killed, replay flushed", 40, 1000),  # 40 KiB: flushed at open, a new segment
        ("killed, large values", 6, 5000),  # pointers into the WAL, read in full
        ("stopped cleanly", 40, 1000),  # nothing replayed: only a new segment
    ],
)
def test_an_engine_opens_on_a_full_disk_serves_refuses_and_resumes(
    how: str, count: int, size: int
) -> None:
    fs = FullFS()
    engine = Engine.open(D, options(), fs=fs)
    written = fill(engine, count, size, b"k")
    if how == "stopped cleanly":
        engine.close()
    else:
        kill(engine, fs)
    fs.full("write")  # no new bytes (the fsync of bytes already written needs none)
    refused_before = fs.refused
    engine = Engine.open(D, options(), fs=fs)
    assert fs.refused > refused_before or how == "killed, replay kept"
    assert_serves(engine, written)
    with pytest.raises(StorageUnavailableError):
        engine.put(b"refused", b"x" * size)
    fs.space_back()
    put_when_space_is_back(engine, written)
    wait_for(lambda: engine.oldest_immutable() is None, "the replay's flush", timeout=20)
    assert_serves(engine, written)
    engine.close()
    fs.crash()
    engine = Engine.open(D, options(), fs=fs)
    assert_serves(engine, written)
    engine.close()


def test_a_killed_engine_opened_on_a_full_disk_twice_loses_nothing() -> None:
    """Killed again while full (the replay's flush never ran): the next open replays
    the same segments. Killed once space is back and the flush ran, before any write
    made the WAL's new segment: the next open finds no segment past the table."""
    fs = FullFS()
    engine = Engine.open(D, options(), fs=fs)
    written = fill(engine, 40, 1000, b"k")
    kill(engine, fs)
    fs.full()
    engine = Engine.open(D, options(), fs=fs)
    assert_serves(engine, written)
    kill(engine, fs)
    engine = Engine.open(D, options(), fs=fs)  # still full
    assert_serves(engine, written)
    fs.space_back()
    # The flush is retried with space back, before any write made the WAL's segment:
    # killed then, the next open finds the replay in a table and no segment after it.
    wait_for(lambda: engine.oldest_immutable() is None, "the replay's flush", timeout=20)
    kill(engine, fs)
    engine = Engine.open(D, options(), fs=fs)
    assert_serves(engine, written)
    written.update(fill(engine, 5, 100, b"more"))
    engine.close()
    engine = Engine.open(D, options(), fs=fs)
    assert_serves(engine, written)
    engine.close()


def test_the_journal_keeps_what_it_redid_until_the_flush_on_a_full_disk(
    scheduler: SyncScheduler,
) -> None:
    fs = FullFS()
    engine = Engine.open(D, journaled(scheduler, open_journal(fs, scheduler)), fs=fs)
    written = written_through_the_journal(engine)
    kill(engine, fs)  # the engine's own WAL was never fsynced: the journal holds them
    fs.full()
    j = open_journal(fs, scheduler)
    engine = Engine.open(D, journaled(scheduler, j), fs=fs)
    assert_serves(engine, written)
    assert j.pending_redo == 1  # not durable in the engine's own files yet
    fs.space_back()
    put_when_space_is_back(engine, written)
    wait_for(lambda: j.pending_redo == 0, "the redo's flush", timeout=20)
    engine.close()
    j.close()
    fs.crash()
    j = open_journal(fs, scheduler)
    engine = Engine.open(D, journaled(scheduler, j), fs=fs)
    assert_serves(engine, written)
    engine.close()
    j.close()


def test_a_stop_before_the_replays_flush_leaves_the_journals_redo_to_the_next_start(
    scheduler: SyncScheduler,
) -> None:
    """Space back for the WAL but not (yet) for tables, then a stop: the replay the
    journal gave back was never flushed, so the engine must not claim a clean shutdown
    (the broker then tells the journal it needs no redo, and those entries were only
    in memory and in the journal)."""
    fs = FullFS()
    engine = Engine.open(D, journaled(scheduler, open_journal(fs, scheduler)), fs=fs)
    written = written_through_the_journal(engine)
    kill(engine, fs)
    fs.full()
    j = open_journal(fs, scheduler)
    engine = Engine.open(D, journaled(scheduler, j), fs=fs)
    fs.full(suffix=TABLE_SUFFIX)  # the WAL and the journal may write again; tables not
    engine.close()  # its final flush fails too
    j.close()
    fs.space_back()
    j = open_journal(fs, scheduler)
    j.finish_recovery(lambda key: redo_needed(fs, "/data", key))  # as the broker's start
    engine = Engine.open(D, journaled(scheduler, j), fs=fs)
    assert_serves(engine, written)
    engine.close()
    j.close()


@pytest.mark.parametrize("code", [errno.EIO, errno.EROFS])
def test_a_disk_that_fails_otherwise_still_refuses_the_open(code: int) -> None:
    fs = FullFS()
    engine = Engine.open(D, options(), fs=fs)
    fill(engine, 40, 1000, b"k")
    kill(engine, fs)

    def fail(path: str, op: str) -> None:
        if op == "write":
            raise OSError(code, errno.errorcode[code], path)

    fs.check = fail  # type: ignore[method-assign]
    with pytest.raises(OSError) as refused:
        Engine.open(D, options(), fs=fs)
    assert refused.value.errno == code


def test_a_failed_wal_still_answers_for_what_it_synced_before(
    scheduler: SyncScheduler,
) -> None:
    """An idle partition's release asks its journal's WAL to sync the partition's last
    journaled entry: none, after a start whose journal could not make its segment.
    What was synced before a failure is durable: asking for it does not raise."""
    fs = FullFS()
    fs.full()
    journal = open_journal(fs, scheduler)
    assert journal.wal.failed is not None  # its first segment could not be made
    journal.sync_to(0)
    fs.space_back()
    engine = Engine.open(D, options(sync_scheduler=scheduler, journal=journal), fs=fs)
    engine.put(b"k", b"v")  # the journal refuses it, the engine's own WAL takes it
    fs.full()
    with pytest.raises(StorageUnavailableError):
        engine.put(b"k2", b"v")
    wal = engine.wal
    assert wal.failed is not None and wal.synced_lsn < wal.last_lsn
    wal.sync_to(wal.synced_lsn)  # durable before the failure
    with pytest.raises(StorageUnavailableError):
        wal.sync_to(wal.last_lsn)
    engine.close()
    journal.close()


def test_topics_and_partitions_made_on_a_full_disk_are_refused_typed() -> None:
    """CreateTopics and CreatePartitions need new files: on a full disk both doors
    answer KAFKA_STORAGE_ERROR (a raw OSError was an internal error on the gRPC door
    and closed the Kafka door's connection), and nothing half-made stays behind."""

    async def run() -> None:
        fs = FullFS()
        service = BrokerService(BrokerConfig(data_dir="/data"), fs, ManualClock())
        await service.start()
        await service.create_topic("t", 2)
        fs.refuse = lambda path, _op: path.startswith("/data/topics/")  # the meta store has room
        with pytest.raises(StorageUnavailableError, match="creating topic 'new'"):
            await service.create_topic("new", 3)
        with pytest.raises(StorageUnavailableError, match="growing topic 't' to 4"):
            await service.add_partitions("t", 4)
        assert service.registry.find("new") is None
        assert len(service.registry.get("t").partitions) == 2
        assert not fs.exists("/data/topics/new") and not fs.exists("/data/topics/t/2")
        fs.space_back()
        await service.create_topic("new", 3)
        await service.add_partitions("t", 4)
        await service.stop()

    asyncio.run(run())
