"""The broker's journal (``storage/journal``): one fsync wave for many engines, the
redo after a crash, drops, checkpoints, the fallback to an engine's own WAL, and
damaged journal files."""

from __future__ import annotations

import contextlib
import errno
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.clock import ManualClock
from sentinel.errors import CorruptionError
from sentinel.fs import MemFile, MemFS
from sentinel.log.config import TopicConfig
from sentinel.log.partition_log import PartitionLog
from sentinel.record import build_batch
from sentinel.storage.engine import Engine
from sentinel.storage.journal import (
    Journal,
    JournalOptions,
    decode_head,
    encode_drop,
    encode_entry_head,
    scrub_journal,
)
from sentinel.storage.options import EngineOptions
from sentinel.storage.scrub import ScrubReport
from sentinel.storage.sync_scheduler import SyncScheduler
from sentinel.storage.write_batch import WriteBatch


@pytest.fixture
def scheduler() -> SyncScheduler:
    sched = SyncScheduler(2)
    yield sched  # type: ignore[misc]
    sched.shutdown()


def journal_of(fs: MemFS, scheduler: SyncScheduler, **kw: int) -> Journal:
    # Every entry through the journal: few engines writing for 50 ms on a slow machine
    # must not skip it here (``Journal.skips`` has its own tests, below).
    options = JournalOptions(**{"skip_window_s": None, **kw})  # type: ignore[arg-type]
    return Journal.open(fs, "/data/journal", root="/data", scheduler=scheduler, options=options)


def engine_options(journal: Journal, scheduler: SyncScheduler) -> EngineOptions:
    return EngineOptions(
        background=False, sync_scheduler=scheduler, journal=journal, hold_lock=False
    )


def engine_of(fs: MemFS, name: str, journal: Journal, scheduler: SyncScheduler) -> Engine:
    return Engine.open(f"/data/{name}", engine_options(journal, scheduler), fs=fs)


def put_acked(engine: Engine, key: bytes, value: bytes) -> None:
    lsn = engine.write_nowait(WriteBatch().put(key, value))
    engine.sync_future(lsn).result(timeout=30)


def test_up_to_four_engines_appending_skip_the_journal_and_a_fifth_ends_it(
    scheduler: SyncScheduler,
) -> None:
    """``Journal.skips``: engines appending with none joining them for the window skip
    the journal while they are at most ``skip_up_to``; a fifth's first append makes
    them all journal again (for a window); one silent for a window is forgotten, and
    its next append is a join."""
    clock = ManualClock()
    options = JournalOptions(skip_window_s=0.05, skip_up_to=4)
    journal = Journal.open(
        MemFS(), "/data/journal", root="/data", scheduler=scheduler, options=options,
        clock=clock,
    )  # fmt: skip
    engines = [object() for _ in range(6)]

    def round_of(*chosen: object) -> list[bool]:
        return [journal.skips(e) for e in chosen]

    def rounds_for(seconds: float, *chosen: object) -> list[bool]:
        """Each of ``chosen`` appends every 10 ms for ``seconds``: the last round's."""
        last = round_of(*chosen)
        for _ in range(round(seconds / 0.01)):
            clock.advance(0.01)
            last = round_of(*chosen)
        return last

    four = engines[:4]
    assert round_of(*four) == [False] * 4  # each one joins: journaled
    assert rounds_for(0.04, *four) == [False] * 4  # within the window of the last join
    assert rounds_for(0.02, *four) == [True] * 4
    assert journal.skipped_appends >= 4
    assert round_of(engines[4]) == [False]  # a fifth: too many, counted afresh
    assert round_of(*four) == [False] * 4  # each rejoins after the clear
    assert rounds_for(0.1, engines[4], *four) == [False] * 5  # five appending: none skip
    # The fifth falls silent: the four are the set again, and skip once no one has
    # joined them for a window.
    assert rounds_for(0.1, *four) == [True] * 4
    clock.advance(0.2)  # all silent for longer than the window
    assert round_of(engines[5], engines[0]) == [False, False]  # a join, a rejoin
    assert rounds_for(0.06, engines[5], engines[0]) == [True, True]
    journal.close()


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
    record = encode_entry_head(b"t/3", 7, 1234) + b"payload"
    kind, key, position, start = decode_head(record, "j", "r")
    assert (kind, key, position, record[start:]) == (b"E", "t/3", (7, 1234), b"payload")
    drop = encode_drop(b"t/3")
    assert decode_head(drop, "j", "r") == (b"D", "t/3", None, len(drop))


@given(st.binary(max_size=64))
def test_any_record_decodes_or_is_corruption(record: bytes) -> None:
    with contextlib.suppress(CorruptionError):
        decode_head(record, "j", "r")



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


def test_segments_kept_for_a_redo_below_deleted_ones_reopen(scheduler: SyncScheduler) -> None:
    # A redo kept (a partition that opens later) keeps segment 1 while checkpoints
    # delete later ones: the gap in the numbering is expected, not damage.
    fs = MemFS()
    journal = journal_of(fs, scheduler)
    put_acked(engine_of(fs, "later", journal, scheduler), b"k", b"v")
    fs.crash()
    journal = journal_of(fs, scheduler, segment_bytes=4096, retain_segments=0)
    journal.finish_recovery(lambda key: key == "later")
    other = engine_of(fs, "other", journal, scheduler)
    for i in range(30):
        put_acked(other, b"k%d" % i, b"x" * 300)
    other.close()
    journal.close()
    assert journal.segments[0] == 1 and len(journal.segments) < journal.segments[-1]
    journal = journal_of(fs, scheduler)
    assert engine_of(fs, "later", journal, scheduler).get(b"k") == b"v"


def test_a_new_engine_in_a_directory_with_a_kept_redo_gets_none_of_it(
    scheduler: SyncScheduler,
) -> None:
    fs = MemFS()
    journal = journal_of(fs, scheduler)
    put_acked(engine_of(fs, "t/0", journal, scheduler), b"old", b"1")
    fs.crash()
    journal = journal_of(fs, scheduler)
    journal.finish_recovery(lambda key: True)  # t/0 offline: its redo kept
    fs.remove_tree("/data/t/0")  # deleted while offline: no engine wrote a drop
    new = engine_of(fs, "t/0", journal, scheduler)
    assert new.get(b"old") is None
    put_acked(new, b"new", b"2")
    fs.crash()  # the replayed segment is still there: the drop record keeps it out
    journal = journal_of(fs, scheduler)
    new = engine_of(fs, "t/0", journal, scheduler)
    assert (new.get(b"old"), new.get(b"new")) == (None, b"2")


def test_a_checkpoint_keeps_a_segment_an_engine_closed_without_syncing(
    scheduler: SyncScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = MemFS()
    journal = journal_of(fs, scheduler, segment_bytes=4096, retain_segments=0)
    p = engine_of(fs, "p", journal, scheduler)
    q = engine_of(fs, "q", journal, scheduler)
    real_sync = MemFile.sync
    real_writev = MemFile.writev

    def full(real):  # type: ignore[no-untyped-def]
        def call(self: MemFile, *args: object) -> None:
            if self.path.startswith("/data/p/"):
                raise OSError(errno.ENOSPC, "No space left on device")
            real(self, *args)

        return call

    monkeypatch.setattr(MemFile, "sync", full(real_sync))
    monkeypatch.setattr(MemFile, "writev", full(real_writev))
    monkeypatch.setattr(MemFile, "write", full(MemFile.write))
    put_acked(p, b"acked", b"v")  # in the journal only: p's own files are full
    p.close()
    for i in range(20):  # the journal rolls; its checkpoints must keep p's segment
        put_acked(q, b"k%d" % i, b"x" * 300)
    monkeypatch.undo()
    fs.crash()
    journal = journal_of(fs, scheduler)
    assert engine_of(fs, "p", journal, scheduler).get(b"acked") == b"v"


def test_entries_after_one_the_journal_refused_wait_for_the_own_wal_too(
    scheduler: SyncScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = MemFS()
    journal = journal_of(fs, scheduler)
    engine = engine_of(fs, "p", journal, scheduler)
    real_append = Journal.append

    def refuse(*args: object, **kwargs: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Journal, "append", refuse)
    engine.write_nowait(WriteBatch().put(b"offset-0", b"a"))  # its own fsync pending
    monkeypatch.setattr(Journal, "append", real_append)
    engine.write_nowait(WriteBatch().put(b"offset-1", b"b"))
    journal.sync_to(journal.last_lsn)  # another partition's ack: a journal wave
    fs.crash()
    journal = journal_of(fs, scheduler)
    engine = engine_of(fs, "p", journal, scheduler)
    got = (engine.get(b"offset-0"), engine.get(b"offset-1"))
    assert got in ((None, None), (b"a", None), (b"a", b"b"))  # a prefix, never a hole


def test_an_entry_the_journal_synced_is_durable_without_the_engines_fsync(
    scheduler: SyncScheduler,
) -> None:
    """``Engine.durable_upto``: what lets the event loop release an idle partition's
    files inline (a ``close``), where it used to hand every release to a worker because
    the partition's own WAL is never fsynced for an ack."""
    fs = MemFS()
    journal = journal_of(fs, scheduler)
    engine = engine_of(fs, "p", journal, scheduler)
    lsn = engine.write_nowait(WriteBatch().put(b"k", b"v"))
    assert not engine.durable_upto(lsn)  # the journal's wave has not run yet
    engine.sync_future(lsn).result(timeout=30)
    assert engine.wal.synced_lsn < lsn  # its own WAL was not fsynced for the ack
    assert engine.durable_upto(lsn)
    log = PartitionLog.open(
        fs, "/data/log", TopicConfig(), ManualClock(), engine_options(journal, scheduler)
    )
    result = log.append_many([build_batch([(None, b"v", (), 1_700_000_000_000)])], wait=False)
    assert not log.release_files_now()  # not durable yet: a worker's release syncs
    log.sync_future(result[0].lsn).result(timeout=30)
    assert log.engine.wal.synced_lsn < log.engine.wal.last_lsn
    assert log.release_files_now()  # durable in the journal: released inline
    assert log.high_watermark == 1
    log.close()
    engine.close()


def test_verify_of_the_journal_agrees_with_its_open_at_every_flipped_byte(
    scheduler: SyncScheduler,
) -> None:
    """``scrub_journal`` (``--verify``) reports damage exactly where ``Journal.open``
    would refuse the start, for a flipped byte at every position of a segment; what the
    open would cut as a torn tail is at most a note; and it changes nothing."""
    fs = MemFS()
    journal = journal_of(fs, scheduler)
    engine = engine_of(fs, "p", journal, scheduler)
    for i in range(5):
        put_acked(engine, b"k%d" % i, b"v" * 50)
    (name,) = fs.listdir("/data/journal")
    original = bytes(fs.read_all("/data/journal/" + name))
    clean = ScrubReport()
    scrub_journal(fs, "/data/journal", clean)
    assert clean.damaged == [] and clean.notes == [] and clean.files == 1
    outcomes: set[bool] = set()
    for position in range(len(original)):
        data = bytearray(original)
        data[position] ^= 0x10
        copy = MemFS()
        copy.makedirs("/data/journal")
        handle = copy.create("/data/journal/" + name)
        handle.write(bytes(data))
        handle.sync()
        handle.close()
        report = ScrubReport()
        scrub_journal(copy, "/data/journal", report)
        assert copy.read_all("/data/journal/" + name) == bytes(data)  # read-only
        try:
            Journal.open(copy, "/data/journal", root="/data", scheduler=scheduler)
            refused = False
        except CorruptionError:
            refused = True
        assert bool(report.damaged) == refused, (position, report)
        outcomes.add(refused)
    assert outcomes == {True}  # a whole frame that fails its CRC is damage, not torn
    # A tail cut at every length (a torn write, a header cut short a torn create): the
    # open cuts it, the scrub notes it.
    for length in range(len(original)):
        copy = MemFS()
        copy.makedirs("/data/journal")
        handle = copy.create("/data/journal/" + name)
        handle.write(original[:length])
        handle.sync()
        handle.close()
        report = ScrubReport()
        scrub_journal(copy, "/data/journal", report)
        try:
            Journal.open(copy, "/data/journal", root="/data", scheduler=scheduler)
            refused = False
        except CorruptionError:
            refused = True
        assert not refused and report.damaged == [], (length, report)


def test_the_redo_holds_where_entries_lie_not_their_bytes(scheduler: SyncScheduler) -> None:
    """After a crash the journal's open keeps, per entry, only where its payload lies;
    the engine's ``take_redo`` reads the bytes back from the segment kept on disk. So
    the start's memory does not grow with the journal's size (up to several 64 MiB
    segments)."""
    fs = MemFS()
    journal = journal_of(fs, scheduler)
    engine = engine_of(fs, "p", journal, scheduler)
    values = [bytes([i]) * 100_000 for i in range(40)]  # ~4 MB journaled
    for i, value in enumerate(values):
        put_acked(engine, b"k%02d" % i, value)
    fs.crash()
    tracemalloc.start()
    try:
        reopened = journal_of(fs, scheduler)
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 500_000, held  # not the 4 MB of payloads
    assert reopened.pending_redo == 1
    recovered = engine_of(fs, "p", reopened, scheduler)
    assert [recovered.get(b"k%02d" % i) for i in range(40)] == values


def test_a_drop_record_outlives_the_replayed_segments_it_cancels(
    scheduler: SyncScheduler,
) -> None:
    """A partition deleted while segments replayed at open are kept (another one's redo
    waits for its engine): the segment holding its drop record must not be deleted by
    a checkpoint before them, or another crash replays the deleted partition's entries
    into whatever lives in its directory then."""
    fs = MemFS()
    journal = journal_of(fs, scheduler)
    gone = engine_of(fs, "gone", journal, scheduler)
    later = engine_of(fs, "later", journal, scheduler)
    put_acked(gone, b"old", b"1")
    put_acked(later, b"k", b"v")
    fs.crash()  # both WALs lost their entries: the journal holds them
    journal = journal_of(fs, scheduler, segment_bytes=4096, retain_segments=0)
    gone = engine_of(fs, "gone", journal, scheduler)  # takes its redo
    journal.finish_recovery(lambda key: key == "later")  # "later" opens later: kept
    gone.close(durable=False)  # the partition is deleted: a drop record
    fs.remove_tree("/data/gone")
    other = engine_of(fs, "other", journal, scheduler)
    for i in range(30):  # the journal rolls and checkpoints the drop's segment
        put_acked(other, b"k%d" % i, b"x" * 300)
    fs.crash()
    journal = journal_of(fs, scheduler)
    assert journal.take_redo("gone") == []  # the drop still cancels the old entry
    assert [e.payload for e in journal.take_redo("later")] != []
