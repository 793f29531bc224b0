"""The broker's journal (``storage/journal``): one fsync wave for many engines, the
redo after a crash, drops, checkpoints, the fallback to an engine's own WAL, and
damaged journal files."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.errors import CorruptionError
from sentinel.fs import MemFS
from sentinel.storage.engine import Engine
from sentinel.storage.journal import (
    Journal,
    JournalOptions,
    decode_record,
    encode_drop,
    encode_entry_head,
)
from sentinel.storage.options import EngineOptions
from sentinel.storage.sync_scheduler import SyncScheduler
from sentinel.storage.write_batch import WriteBatch


@pytest.fixture
def scheduler() -> SyncScheduler:
    sched = SyncScheduler(2)
    yield sched  # type: ignore[misc]
    sched.shutdown()


def journal_of(fs: MemFS, scheduler: SyncScheduler, **kw: int) -> Journal:
    return Journal.open(
        fs, "/data/journal", root="/data", scheduler=scheduler, options=JournalOptions(**kw)
    )


def engine_of(fs: MemFS, name: str, journal: Journal, scheduler: SyncScheduler) -> Engine:
    options = EngineOptions(
        background=False, sync_scheduler=scheduler, journal=journal, hold_lock=False
    )
    return Engine.open(f"/data/{name}", options, fs=fs)


def put_acked(engine: Engine, key: bytes, value: bytes) -> None:
    lsn = engine.write_nowait(WriteBatch().put(key, value))
    engine.sync_future(lsn).result(timeout=30)


def test_one_journal_fsync_serves_the_appends_of_many_engines(
    scheduler: SyncScheduler,
) -> None:
    fs = MemFS()
    journal = journal_of(fs, scheduler)
    engines = [engine_of(fs, f"p{i}", journal, scheduler) for i in range(20)]
    futures = [
        e.sync_future(e.write_nowait(WriteBatch().put(b"k", b"v%d" % i)))
        for i, e in enumerate(engines)
    ]
    for future in futures:
        future.result(timeout=30)
    # Acknowledged by the journal's waves (one scheduler request per wave, whatever
    # the engines); no engine's own WAL was synced for it.
    assert scheduler.wal_syncs <= 2
    assert all(e.wal.synced_lsn == 0 for e in engines)
    assert journal.wal.synced_lsn == journal.wal.last_lsn == 20
    fs.crash()
    journal = journal_of(fs, scheduler)
    engines = [engine_of(fs, f"p{i}", journal, scheduler) for i in range(20)]
    journal.finish_recovery()
    assert [e.get(b"k") for e in engines] == [b"v%d" % i for i in range(20)]
    assert journal.segments == [2]  # the replayed segment is gone, the new one stays


def test_a_partition_deleted_and_created_again_is_not_given_the_old_data(
    scheduler: SyncScheduler,
) -> None:
    fs = MemFS()
    journal = journal_of(fs, scheduler)
    old = engine_of(fs, "t/0", journal, scheduler)
    put_acked(old, b"old", b"1")
    old.close(durable=False)
    fs.remove_tree("/data/t/0")
    new = engine_of(fs, "t/0", journal, scheduler)
    put_acked(new, b"new", b"2")
    fs.crash()  # the new engine's own WAL lost its entry: only the journal has it
    journal = journal_of(fs, scheduler)
    new = engine_of(fs, "t/0", journal, scheduler)
    assert new.get(b"new") == b"2"
    assert new.get(b"old") is None  # the drop record kept the old entry out


def test_a_checkpoint_syncs_the_engines_that_pin_old_segments_even_suspended(
    scheduler: SyncScheduler,
) -> None:
    fs = MemFS()
    journal = journal_of(fs, scheduler, segment_bytes=4096, retain_segments=8)
    busy = engine_of(fs, "busy", journal, scheduler)
    idle = engine_of(fs, "idle", journal, scheduler)
    put_acked(idle, b"k", b"idle")
    assert idle.suspend_files()  # no fsync: its entry is the journal's to keep
    assert not idle.wal.fully_synced
    for i in range(40):
        put_acked(busy, b"k%d" % i, b"x" * 300)
    assert journal.wal.current_segment > 2
    assert journal.checkpoint(keep=0) >= 2
    assert idle.wal.fully_synced and idle.files_suspended
    assert journal.segments == [journal.wal.current_segment]
    fs.crash()
    journal = journal_of(fs, scheduler)
    idle = engine_of(fs, "idle", journal, scheduler)
    assert idle.get(b"k") == b"idle"  # from its own WAL: the journal segment is gone


def test_a_failed_journal_leaves_durability_to_the_engines_own_wal_in_order(
    scheduler: SyncScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = MemFS()
    journal = journal_of(fs, scheduler)
    engine = engine_of(fs, "p", journal, scheduler)
    put_acked(engine, b"k", b"v1")  # journaled, not in the engine's synced WAL
    real_append = Journal.append

    def refuse(*args: object, **kwargs: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Journal, "append", refuse)
    put_acked(engine, b"k", b"v2")  # the journal refused it: the engine's own fsync
    assert engine.wal.synced_lsn == 2
    monkeypatch.setattr(Journal, "append", real_append)
    fs.crash()
    journal = journal_of(fs, scheduler)
    engine = engine_of(fs, "p", journal, scheduler)
    # The journal's v1 is older than what the WAL replayed: not applied over v2.
    assert engine.get(b"k") == b"v2"


def test_a_clean_stop_leaves_no_journal_to_replay(scheduler: SyncScheduler) -> None:
    fs = MemFS()
    journal = journal_of(fs, scheduler)
    engine = engine_of(fs, "p", journal, scheduler)
    put_acked(engine, b"k", b"v")
    engine.close()
    journal.close()
    assert journal.segments == []
    journal = journal_of(fs, scheduler)
    assert journal.pending_redo == 0


def test_a_stop_with_an_engine_not_durable_keeps_its_segments(
    scheduler: SyncScheduler,
) -> None:
    fs = MemFS()
    journal = journal_of(fs, scheduler)
    engine = engine_of(fs, "p", journal, scheduler)
    put_acked(engine, b"k", b"v")
    journal.close()  # the engine still open: its entry is only in the journal
    assert journal.segments == [1]


@pytest.mark.parametrize("where", ["middle", "last"])
def test_a_damaged_journal_is_refused_not_skipped(
    scheduler: SyncScheduler, where: str
) -> None:
    fs = MemFS()
    journal = journal_of(fs, scheduler)
    engine = engine_of(fs, "p", journal, scheduler)
    for i in range(5):
        put_acked(engine, b"k%d" % i, b"v" * 50)
    path = "/data/journal/" + sorted(fs.listdir("/data/journal"))[0]
    data = bytearray(fs.read_all(path))
    data[len(data) // 2 if where == "middle" else len(data) - 3] ^= 0x40
    fs.files[fs._norm(path)].data = data
    fs.files[fs._norm(path)].synced = bytearray(data)
    with pytest.raises(CorruptionError):
        journal_of(fs, scheduler)


def test_records_round_trip() -> None:
    head = encode_entry_head(b"t/3", 7, 1234)
    kind, key, entry = decode_record(head + b"payload", "j", "r")
    assert (kind, key) == (b"E", "t/3")
    assert entry is not None and (entry.segment, entry.offset, entry.payload) == (
        7,
        1234,
        b"payload",
    )
    assert decode_record(encode_drop(b"t/3"), "j", "r") == (b"D", "t/3", None)


@given(st.binary(max_size=64))
def test_any_record_decodes_or_is_corruption(record: bytes) -> None:
    with contextlib.suppress(CorruptionError):
        decode_record(record, "j", "r")



def test_a_redo_not_taken_at_start_is_kept_until_its_engine_opens(
    scheduler: SyncScheduler,
) -> None:
    fs = MemFS()
    journal = journal_of(fs, scheduler)
    engine = engine_of(fs, "later", journal, scheduler)
    put_acked(engine, b"k", b"v")
    fs.crash()
    journal = journal_of(fs, scheduler, segment_bytes=4096, retain_segments=0)
    journal.finish_recovery(lambda key: key == "later")  # (a replica hosted later)
    assert journal.segments == [1, 2]
    other = engine_of(fs, "other", journal, scheduler)
    for i in range(30):  # journal rolls and checkpoints: the replayed segment stays
        put_acked(other, b"k%d" % i, b"x" * 300)
    assert journal.segments[0] == 1
    engine = engine_of(fs, "later", journal, scheduler)
    assert engine.get(b"k") == b"v"
    assert 1 not in journal.segments and journal.pending_redo == 0
