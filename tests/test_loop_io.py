"""No fsync and no file open on the appending thread (a broker's event loop):

- a memtable rotation defers its WAL roll (``WriteAheadLog.rotate_deferred``); the
  roll's IO (old segment fsync, new segment + directory fsync) is done by the next
  group commit, a sync thread (``none``/``interval``) or the memtable's flush, in the
  same order as before: crash at every step of a workload whose appends run ahead of
  their syncs across rotations, and the recovered state is the state after some prefix
  of the writes that holds every acknowledged one (the WAL alone: in every sync mode);
  with ``none``/``interval`` the entries appended meanwhile reach the OS once the
  roll is done, with no further call (``test_append_thread_fsyncs``: no fsync on the
  appending thread in any mode);
- a partition's first produce or fetch after a start opens its deferred engine in a
  worker thread, not on the loop.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest

from engine_ops import Op, workload
from sentinel.broker.fetch import fetch_many
from sentinel.broker.outcomes import FetchPosition
from sentinel.broker.partition import Partition
from sentinel.broker.topic_config import TopicConfig
from sentinel.broker.validation import Acks
from sentinel.clock import ManualClock
from sentinel.fs import MemFS, caused_by_crash
from sentinel.log.partition_log import PartitionLog
from sentinel.log.summary import decode as decode_summary
from sentinel.record import build_batch
from sentinel.storage import clean_marker
from sentinel.storage.engine import Engine
from sentinel.storage.files import wal_name
from sentinel.storage.options import EngineOptions
from sentinel.storage.wal import (
    FRAME_HEADER_SIZE,
    HEADER_SIZE,
    SyncMode,
    WalFailedError,
    WalOptions,
    WriteAheadLog,
    replay,
)
from sentinel.storage.write_batch import WriteBatch


class ThreadMemFS(MemFS):
    """MemFS that counts the mutating calls (writes, fsyncs, creates) of one thread."""

    def __init__(self) -> None:
        super().__init__()
        self.watched: int | None = None
        self.watched_ops = 0

    def tick(self) -> None:
        if threading.get_ident() == self.watched:
            self.watched_ops += 1
        super().tick()


def test_an_append_that_rotates_the_memtable_does_no_file_io_on_its_thread() -> None:
    fs = ThreadMemFS()
    engine = Engine.open("/db", EngineOptions(memtable_bytes=2048), fs=fs)
    first_segment = engine.wal.current_segment
    fs.watched = threading.get_ident()
    lsn = 0
    for i in range(400):
        lsn = engine.write_nowait(WriteBatch().put(b"k%04d" % i, b"v" * 40))
        if i % 10 == 9:  # acknowledged by the sync pipeline's thread
            engine.sync_future(lsn).result(10)
    engine.sync_future(lsn).result(10)
    assert engine.wal.current_segment > first_segment + 3  # rotations happened
    assert fs.watched_ops == 0
    fs.watched = None
    engine.close()
    with Engine.open("/db", fs=fs) as again:
        assert len(list(again.scan())) == 400


# ------------------------------------------------------------ crash at every step


def prefix_states(ops: list[Op]) -> list[dict[bytes, bytes]]:
    """The live state after each prefix of ``ops`` (index = number of ops applied)."""
    states = [{}]
    state: dict[bytes, bytes] = {}
    for key, value in ops:
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
        states.append(dict(state))
    return states


def options(mode: SyncMode) -> EngineOptions:
    return EngineOptions(
        memtable_bytes=1024,
        background=False,
        value_separation_bytes=48,  # large values are pointers into the WAL
        wal=WalOptions(sync_mode=mode),
    )


def run(fs: MemFS, ops: list[Op], mode: SyncMode) -> tuple[int, int]:
    """Write ``ops`` three at a time before each sync (so rotations fall between an
    append and its sync); (ops acknowledged, ops attempted) when it stopped."""
    acked = attempted = 0
    try:
        engine = Engine.open("/db", options(mode), fs=fs)
        for start in range(0, len(ops), 3):
            for key, value in ops[start : start + 3]:
                attempted += 1
                batch = WriteBatch()
                batch.put(key, value) if value is not None else batch.delete(key)
                engine.write_nowait(batch)
            engine.sync()
            acked = attempted
        engine.close()
    except Exception as exc:
        if not caused_by_crash(exc):
            raise
    return acked, attempted


@pytest.mark.parametrize("mode", [SyncMode.ALWAYS, SyncMode.NONE])
@pytest.mark.parametrize("torn", [False, True])
def test_crash_at_every_step_with_appends_ahead_of_deferred_rolls(
    mode: SyncMode, torn: bool
) -> None:
    ops = workload(7)
    states = prefix_states(ops)
    counting = MemFS()
    run(counting, ops, mode)
    total = counting.ops
    assert total > 100
    rng = random.Random(3)
    for fail_at in range(total):
        fs = MemFS()
        fs.fail_after(fail_at)
        acked, attempted = run(fs, ops, mode)
        fs.crash(rng if torn else None)
        with Engine.open("/db", options(mode), fs=fs) as engine:
            seen = dict(engine.scan())
        assert any(seen == states[n] for n in range(acked, attempted + 1)), (
            f"crash after {fail_at} operations: not the state of a prefix of "
            f"{acked}..{attempted} writes"
        )


def wal_run(fs: MemFS, mode: SyncMode) -> tuple[int, int]:
    """Appends on both sides of deferred rolls, synced every few; (acknowledged,
    attempted) when it stopped."""
    acked = attempted = 0
    try:
        wal = WriteAheadLog(fs, "/wal", 1, WalOptions(sync_mode=mode, segment_bytes=300))
        for i in range(40):
            if i % 5 == 2:
                wal.rotate_deferred()
            attempted += 1
            wal.append(b"entry-%03d" % i + b"x" * (i % 7) * 9)
            if i % 4 == 3:
                wal.sync()
                acked = attempted
        wal.close()
        acked = attempted
    except Exception as exc:
        if not caused_by_crash(exc):
            raise
    return acked, attempted


@pytest.mark.parametrize("mode", [SyncMode.ALWAYS, SyncMode.NONE])
def test_wal_crash_at_every_step_around_deferred_rolls(mode: SyncMode) -> None:
    counting = MemFS()
    assert wal_run(counting, mode) == (40, 40)
    expected = [b"entry-%03d" % i + b"x" * (i % 7) * 9 for i in range(40)]
    got, report = replay(counting, "/wal", 1)
    assert got == expected and len(report.segments) > 8
    rng = random.Random(5)
    for fail_at in range(counting.ops):
        for torn in (None, rng):
            fs = MemFS()
            fs.fail_after(fail_at)
            acked, attempted = wal_run(fs, mode)
            fs.crash(torn)
            got, _report = replay(fs, "/wal", 1)
            assert acked <= len(got) <= attempted and got == expected[: len(got)], fail_at


def test_a_wal_failing_with_a_roll_pending_resumes_into_the_rolled_segment() -> None:
    fs = MemFS()
    wal = WriteAheadLog(fs, "/wal", 1, WalOptions())
    wal.append(b"a")
    wal.sync()
    _lsn, old, c_at = wal.append_located(b"c")  # unsynced, in segment 1
    rolled = wal.rotate_deferred()
    _lsn, seg, d_at = wal.append_located(b"d")  # in the pending segment 2
    assert (old, seg, rolled) == (1, 2, 2) and d_at == HEADER_SIZE
    fs.fail_after(0)  # the roll's write of "c" fails
    with pytest.raises(WalFailedError):
        wal.sync()
    resumed = wal.resume()
    assert resumed is not None and resumed.new_segment == 2  # no number skipped
    assert resumed.moved(old, c_at) == (2, HEADER_SIZE)
    assert resumed.moved(seg, d_at) == (2, HEADER_SIZE + FRAME_HEADER_SIZE + 1)
    wal.append(b"e")
    wal.close()
    got, report = replay(fs, "/wal", 1)
    assert got == [b"a", b"c", b"d", b"e"] and report.segments == [1, 2]


# ---------------------------------------------------- deferred partitions' first use


def closed_cleanly(fs: MemFS, directory: str) -> PartitionLog:
    """A partition log written, closed cleanly and brought back deferred (as a broker's
    start does), with its opener recording the thread it runs on."""
    clock = ManualClock()
    opts = EngineOptions(memtable_bytes=8192, background=False)
    log = PartitionLog.open(fs, directory, TopicConfig(), clock, opts)
    log.append(build_batch([(b"k", b"first", (), 1_700_000_000_000)]))
    log.close()
    record = clean_marker.check(fs, directory)
    assert record is not None
    summary = decode_summary(record.payload, directory)
    assert summary is not None
    deferred = PartitionLog.deferred(
        fs, directory, TopicConfig(), clock, summary=summary, engine_options=opts
    )
    assert not deferred.opened
    return deferred


def opened_on(log: PartitionLog) -> list[int]:
    threads: list[int] = []
    opener = log._opener
    assert opener is not None

    def recording() -> Engine:
        threads.append(threading.get_ident())
        return opener()

    log._opener = recording
    return threads


def test_the_first_produce_to_a_deferred_partition_opens_it_off_the_loop() -> None:
    fs = MemFS()
    log = closed_cleanly(fs, "/p0")
    threads = opened_on(log)

    async def produce() -> int:
        part = Partition("t", 0, log, sync_always=True)
        outcome = await part.append(
            build_batch([(b"k", b"second", (), 1_700_000_000_001)]), Acks.LEADER
        )
        assert threading.get_ident() not in threads
        return outcome.base_offset

    assert asyncio.run(produce()) == 1
    assert len(threads) == 1 and log.opened
    log.close()


def test_the_first_fetch_from_a_deferred_partition_opens_it_off_the_loop() -> None:
    fs = MemFS()
    log = closed_cleanly(fs, "/p0")
    threads = opened_on(log)
    part = Partition("t", 0, log, sync_always=True)

    async def fetch() -> bytes:
        (outcome,) = await fetch_many(
            lambda _t, _p: part, [FetchPosition("t", 0, 0)], ManualClock()
        )
        assert threading.get_ident() not in threads
        assert outcome.error is None
        return outcome.batches

    assert b"first" in asyncio.run(fetch())
    assert len(threads) == 1 and log.opened
    log.close()


@pytest.mark.parametrize("mode", [SyncMode.NONE, SyncMode.INTERVAL])
def test_without_sync_always_an_entry_after_a_rotation_reaches_the_os_unasked(
    mode: SyncMode,
) -> None:
    """``none``/``interval`` acknowledge once the OS has the entry (it survives a
    process kill): a rotation there holds the entries appended after it in memory only
    until the roll's IO, started at once on a sync thread, is done; nobody has to call
    the WAL again for that."""
    fs = MemFS()
    engine = Engine.open(
        "/db", EngineOptions(memtable_bytes=1024, wal=WalOptions(sync_mode=mode)), fs=fs
    )
    write_past_a_rotation(engine)
    segment = "/db/" + wal_name(engine.wal.current_segment)
    deadline = time.monotonic() + 10
    while not (fs.exists(segment) and b"after-the-rotation" in fs.read_all(segment)):
        assert time.monotonic() < deadline, "the entry never reached the OS"
        time.sleep(0.001)
    engine.close()


def write_past_a_rotation(engine: Engine) -> int:
    """Small writes (``k0000``...) until the memtable rotates (the WAL rolls), then one
    more entry: ``after-the-rotation``, the first of the new segment; the number of
    small writes."""
    first = engine.wal.current_segment
    i = 0
    while engine.wal.current_segment == first:
        engine.write_nowait(WriteBatch().put(b"k%04d" % i, b"v" * 40))
        i += 1
    engine.write_nowait(WriteBatch().put(b"after-the-rotation", b"w" * 40))
    return i

