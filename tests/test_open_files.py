"""Bounded open files: idle partition logs release their engine's files and reopen on
demand, with offsets, high watermark, producer state and LSNs intact."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from inline_jobs import run_now
from sentinel.broker.topic_config import TopicConfig
from sentinel.clock import ManualClock
from sentinel.errors import LockedError
from sentinel.fs import MemFS, OsFS, caused_by_crash
from sentinel.log.errors import OffsetOutOfRangeError
from sentinel.log.open_files import OpenLogLimit
from sentinel.log.partition_log import PartitionLog
from sentinel.record import build_batch, decode_records, iter_batches
from sentinel.storage.engine import Engine
from sentinel.storage.options import EngineOptions
from sentinel.storage.resources import ResourceSizes, SharedResources

SMALL = EngineOptions(memtable_bytes=8 * 1024, background=False)


def record(value: bytes, *, pid: int = -1, seq: int = -1) -> bytes:
    return build_batch([(None, value, (), 1)], producer_id=pid, producer_epoch=0 if pid >= 0
                       else -1, base_sequence=seq)  # fmt: skip


def values(log: PartitionLog) -> list[bytes]:
    found = log.read(0, 1 << 20)
    return [bytes(b) for b in iter_batches(b"".join(found.batches))]


def test_a_released_log_reopens_on_demand_with_everything_intact() -> None:
    fs = MemFS()
    limit = OpenLogLimit(2, run_now)
    logs = [
        PartitionLog.open(fs, f"/p{i}", TopicConfig(), ManualClock(), SMALL, open_limit=limit)
        for i in range(5)
    ]
    assert sum(log.files_open for log in logs) <= 2
    written: list[list[bytes]] = [[] for _ in logs]
    for round_ in range(4):
        for i, log in enumerate(logs):
            batch = record(b"p%d-r%d" % (i, round_), pid=100 + i, seq=round_)
            log.append(batch)
            written[i].append(batch)
            assert sum(x.files_open for x in logs) <= 2
    assert limit.releases > 0
    for i, log in enumerate(logs):
        assert log.log_end_offset == 4 and log.high_watermark == 4
        stored = values(log)
        assert [b[-8:] for b in stored] == [b[-8:] for b in written[i]]
        # A retried batch is still a duplicate after reopening: producer state kept.
        again = log.append(written[i][-1])
        assert again.duplicate
    for log in logs:
        log.close()
    reopened = PartitionLog.open(fs, "/p3", TopicConfig(), ManualClock(), SMALL)
    assert reopened.log_end_offset == 4
    reopened.close()


def test_a_read_at_the_end_of_a_released_log_leaves_it_released() -> None:
    """A consumer following an idle partition reads at its high watermark: that is
    answered from the offsets, without reopening the log's files (before, every such
    read reopened it and, past the limit, released another). A read below it reopens;
    an offset past the end is still out of range."""
    fs = MemFS()
    limit = OpenLogLimit(1, run_now)
    logs = [
        PartitionLog.open(fs, f"/p{i}", TopicConfig(), ManualClock(), SMALL, open_limit=limit)
        for i in range(3)
    ]
    for i, log in enumerate(logs):
        log.append(record(b"p%d" % i))
    idle = logs[0]
    assert not idle.files_open and idle.high_watermark == 1
    releases = limit.releases
    for _ in range(3):
        result = idle.read(1, 1 << 20)
        assert result.batches == () and result.next_offset == 1 and result.high_watermark == 1
    assert not idle.files_open and limit.releases == releases
    with pytest.raises(OffsetOutOfRangeError):
        idle.read(2, 1 << 20)
    assert not idle.files_open
    assert [b"p0" in b for b in values(idle)] == [True]  # below the watermark: reopened
    assert idle.files_open
    for log in logs:
        log.close()


def test_an_lsn_from_before_a_release_still_syncs_and_moves_the_watermark() -> None:
    fs = MemFS()
    shared = SharedResources(ResourceSizes())
    options = shared.engine_options(EngineOptions(memtable_bytes=8 * 1024))
    limit = OpenLogLimit(1, run_now)
    log = PartitionLog.open(fs, "/a", TopicConfig(), ManualClock(), options, open_limit=limit)
    other = PartitionLog.open(fs, "/b", TopicConfig(), ManualClock(), options, open_limit=limit)
    result = log.append_many([record(b"x")], wait=False)[0]
    other.append(record(b"y"))  # releases ``log``: synced at its close
    assert not log.files_open
    log.sync_future(result.lsn).result(timeout=30)
    assert log.high_watermark == 1
    later = log.append_many([record(b"z")], wait=False)[0]  # reopened: LSNs go on
    assert later.lsn > result.lsn
    futures = [log.sync_future(later.lsn), other.sync_future(1)]
    concurrent.futures.wait(futures, timeout=30)
    assert log.high_watermark == 2
    log.close()
    other.close()
    shared.close()


def test_on_a_real_filesystem_released_files_reopen_for_appending(tmp_path: Path) -> None:
    fs = OsFS()
    limit = OpenLogLimit(1, run_now)
    logs = [
        PartitionLog.open(fs, str(tmp_path / f"p{i}"), TopicConfig(), ManualClock(), SMALL,
                          open_limit=limit)
        for i in range(2)
    ]
    for round_ in range(30):  # a memtable flush or two on the way
        for i, log in enumerate(logs):
            log.append(record(b"p%d-r%02d" % (i, round_) * 700))  # value separation too
    assert limit.releases > 10
    for i, log in enumerate(logs):  # each read reopens one and releases the other
        got = values(log)
        assert len(got) == 30 and b"p%d-r00" % i * 700 in got[0]
    for log in logs:
        log.close()
    for i in range(2):
        reopened = PartitionLog.open(fs, str(tmp_path / f"p{i}"), TopicConfig(), ManualClock())
        got = values(reopened)
        assert len(got) == 30 and b"p%d-r29" % i * 700 in got[-1]
        reopened.close()


def test_a_release_flushes_a_large_memtable_first() -> None:
    fs = MemFS()
    shared = SharedResources(ResourceSizes())
    options = shared.engine_options(EngineOptions(memtable_bytes=64 * 1024))
    limit = OpenLogLimit(1, run_now)
    big = PartitionLog.open(fs, "/big", TopicConfig(), ManualClock(), options, open_limit=limit)
    for n in range(20):
        big.append(record(b"%02d" % n * 500))  # ~20 KiB: past a quarter of the memtable
    small = PartitionLog.open(fs, "/s", TopicConfig(), ManualClock(), options, open_limit=limit)
    small.append(record(b"x"))
    assert not big.files_open
    stats = big.engine_stats()
    assert stats.flushes >= 1 and stats.memtable_bytes == 0
    assert shared.write_buffer.total_bytes < 10 * 1024  # only the small one's
    assert len(values(big)) == 20
    big.close()
    small.close()
    shared.close()


# ------------------------------------------------- files per partition, cheap churn

BROKER_LIKE = EngineOptions(memtable_bytes=8 * 1024, background=False, hold_lock=False)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("hold_lock", [False, True])
def test_an_open_log_holds_its_wal_segment_and_the_tables_it_read(
    tmp_path: Path, hold_lock: bool
) -> None:
    """Files per open partition, counted: its WAL segment (+ the LOCK of a standalone
    engine); a table only once read; none released; reopened: the WAL segment only."""
    options = dataclasses.replace(BROKER_LIKE, hold_lock=hold_lock)
    lock = int(hold_lock)
    n = 20
    before = open_fds()
    logs = [
        PartitionLog.open(OsFS(), str(tmp_path / f"p{i}"), TopicConfig(), ManualClock(), options)
        for i in range(n)
    ]
    assert open_fds() - before == n * (1 + lock)  # no manifest held open
    for log in logs:
        log.append(record(b"a"))
        log.engine.flush()  # one table each (a manifest edit: opened, appended, closed)
    assert open_fds() - before == n * (2 + lock)
    for log in logs:
        assert log.release_files()
    assert open_fds() == before
    for log in logs:
        log.open_files()
        log.append(record(b"b"))  # an append needs the WAL segment only
    assert open_fds() - before == n * (1 + lock)
    for log in logs:
        assert record_values(log) == [b"a", b"b"]  # the table, reopened
    assert open_fds() - before == n * (2 + lock)
    for log in logs:
        log.close()
    assert open_fds() == before


def test_a_standalone_engine_still_refuses_a_second_opener_after_a_reopen(
    tmp_path: Path,
) -> None:
    engine = Engine.open(str(tmp_path / "e"), EngineOptions(background=False), fs=OsFS())
    with pytest.raises(LockedError):
        Engine.open(str(tmp_path / "e"), fs=OsFS())
    engine.put(b"k", b"v")
    assert engine.suspend_files()
    engine.resume_files()
    with pytest.raises(LockedError):
        Engine.open(str(tmp_path / "e"), fs=OsFS())
    assert engine.get(b"k") == b"v"
    engine.close()


def record_values(log: PartitionLog) -> list[bytes]:
    return [bytes(r.value or b"") for batch in values(log) for r in decode_records(batch)]


@pytest.mark.parametrize("seed", range(12))
def test_logs_released_and_reopened_many_times_keep_every_acknowledged_record(
    seed: int,
) -> None:
    """Three logs under a limit of one open: every append, read and flush releases one
    and reopens another (WAL segment reopened, tables on their first read, manifest
    edits by flushes; half the reopens made as a broker's loop makes them, releasing the
    displaced log in the same call). A crash at a random step, then recovery, several times: every
    acknowledged record is there, in order; at most the one in flight besides."""
    rng = random.Random(seed)
    fs = MemFS()
    names = ["/a", "/b", "/c"]
    acked: dict[str, list[bytes]] = {name: [] for name in names}
    for _life in range(3):
        limit = OpenLogLimit(1, run_now)
        logs: dict[str, PartitionLog] = {}
        in_flight: tuple[str, bytes] | None = None
        try:
            for name in names:
                logs[name] = PartitionLog.open(
                    fs, name, TopicConfig(), ManualClock(), BROKER_LIKE, open_limit=limit
                )
            fs.fail_after(rng.randrange(400))
            for step in range(200):
                name = rng.choice(names)
                log = logs[name]
                value = b"%s-%d-" % (name.encode(), len(acked[name])) + b"x" * rng.choice(
                    [10, 600, 5000]  # 5000: value separation (a pointer into the WAL)
                )
                if step % 17 == 16:
                    assert record_values(log) == acked[name]
                    continue
                if rng.random() < 0.5:
                    log.reopen_files_now()  # as a broker's loop does: releases inline
                in_flight = (name, value)
                log.append(record(value))
                acked[name].append(value)
                in_flight = None
        except Exception as exc:
            assert caused_by_crash(exc), exc
        fs.fail_after(None)
        fs.crash(rng)
        for name in names:
            with PartitionLog.open(fs, name, TopicConfig(), ManualClock(), BROKER_LIKE) as log:
                got = record_values(log)
                if got != acked[name]:  # only the append in flight may have reached disk
                    assert in_flight is not None and in_flight[0] == name, name
                    assert got == [*acked[name], in_flight[1]], name
                    acked[name].append(in_flight[1])
    assert sum(map(len, acked.values())) > 0


class _Held:
    """A log whose files are open until released."""

    def __init__(self) -> None:
        self.files_open = True
        self.closed = False

    def release_files(self) -> bool:
        self.files_open = False
        return True


def test_a_worker_reopen_past_the_hard_cap_releases_the_victims_itself() -> None:
    """The drain releases in a worker; while it lags (here: it never runs), the logs
    holding files stop at the hard cap: ``crowded`` refuses the loop's reopen, and a
    worker's ``make_room`` releases the victims the drain has not reached, in the
    thread that needs the room, without waiting for the drain."""
    jobs: list[Callable[[], None]] = []
    limit = OpenLogLimit(8, lambda job, _delay: jobs.append(job))
    logs = [_Held() for _ in range(limit.hard_cap)]
    for log in logs:
        limit.used(log)
    assert limit.crowded() and jobs  # a drain asked for, not run
    limit.make_room(10)
    assert not limit.crowded()  # room for one more: one released here, not all
    assert sum(not log.files_open for log in logs) == 1


class _Busy(_Held):
    """A log in use: its release is refused (and retried later by the limit)."""

    def release_files(self) -> bool:
        return False


def test_make_room_does_not_wait_for_room_that_is_not_coming() -> None:
    """Every log holding files refuses its release (in use, or busy): no room comes
    before their retry, so ``make_room`` returns at once rather than after its
    timeout (the reopen goes past the cap by the logs in use)."""
    retries: list[float] = []
    limit = OpenLogLimit(8, lambda job, delay: retries.append(delay) if delay else job())
    for _ in range(limit.hard_cap):
        limit.used(_Busy())
    started = time.monotonic()
    limit.make_room(10)
    assert time.monotonic() - started < 5
    assert retries  # the refused releases are tried again later


def test_make_room_waits_for_the_releases_in_progress() -> None:
    """A release in progress in another thread (a drain job at work) makes room: the
    reopen waits for it, bounded, rather than opening past the cap."""
    entered, finish = threading.Event(), threading.Event()

    class _Slow(_Held):
        def release_files(self) -> bool:
            entered.set()
            finish.wait(10)
            return super().release_files()

    pool = concurrent.futures.ThreadPoolExecutor(1)
    limit = OpenLogLimit(1, lambda job, _delay: pool.submit(job))
    slow = _Slow()
    limit.used(slow)
    limit.used(_Held())  # slow is the victim, its release in progress in the pool
    assert entered.wait(10)
    limit.used(_Held())  # a third: at the hard cap (2) with the one releasing
    waited = threading.Thread(target=lambda: limit.make_room(10))
    waited.start()
    waited.join(0.2)
    assert waited.is_alive()  # waiting for the release in progress
    finish.set()
    waited.join(10)
    assert not waited.is_alive() and not slow.files_open
    pool.shutdown(wait=True)


def test_a_retention_pass_does_not_reopen_an_idle_log_it_remembers() -> None:
    """A pass over thousands of partitions must not reopen every released one: a log
    whose last pass deleted nothing, and nothing changed since, is skipped in memory."""
    fs = MemFS()
    limit = OpenLogLimit(1, run_now)
    config = TopicConfig(retention_ms=3_600_000)
    idle, busy = (
        PartitionLog.open(fs, f"/r{i}", config, ManualClock(), SMALL, open_limit=limit)
        for i in range(2)
    )
    def fresh(value: bytes) -> bytes:  # stamped at the manual clock's start: kept
        return build_batch([(None, value, (), 1_700_000_000_000)])

    for n in range(3):
        idle.append(fresh(b"i%d" % n))
    assert idle.apply_retention() == 0  # looked at once: the memo
    busy.append(fresh(b"b"))  # the limit of one releases the idle log's files
    assert not idle.files_open
    assert idle.apply_retention() == 0 and idle.retention_point() is None
    assert not idle.files_open  # not reopened
    idle.append(fresh(b"i3"))  # used again: open, and still nothing to delete
    assert idle.files_open and idle.apply_retention() == 0
    for log in (idle, busy):
        log.close()


def test_a_compaction_pass_does_not_reopen_an_idle_log_it_compacted() -> None:
    """Key compaction, the same: a compacted log whose last pass found nothing to do,
    with nothing stored since, is skipped without reopening its files; a new batch
    makes the next pass look again."""
    fs = MemFS()
    limit = OpenLogLimit(1, run_now)
    config = TopicConfig().with_overrides({"cleanup.policy": "compact"})
    idle, busy = (
        PartitionLog.open(fs, f"/c{i}", config, ManualClock(), SMALL, open_limit=limit)
        for i in range(2)
    )

    def keyed(key: bytes, value: bytes) -> bytes:
        return build_batch([(key, value, (), 1_700_000_000_000)])

    for n in range(4):
        idle.append(keyed(b"k", b"v%d" % n))
    idle.compact_keys()
    assert idle.compact_keys() == 0  # nothing left: remembered
    busy.append(keyed(b"b", b"x"))  # the limit of one releases the idle log's files
    assert not idle.files_open
    assert idle.compact_keys() == 0
    assert not idle.files_open  # not reopened
    idle.append(keyed(b"k", b"v4"))  # stored since: the next pass looks again
    busy.append(keyed(b"b", b"y"))
    assert not idle.files_open
    idle.compact_keys()
    assert idle.files_open
    for log in (idle, busy):
        log.close()


def test_a_reopen_through_the_engine_property_is_counted_by_the_limit() -> None:
    """``PartitionLog.engine`` (the Raft adapter's sync, tools) reopens a released
    log's files: the limit counts it, and releases another to stay at its size."""
    fs = MemFS()
    limit = OpenLogLimit(1, run_now)
    first, second = (
        PartitionLog.open(fs, f"/e{i}", TopicConfig(), ManualClock(), SMALL, open_limit=limit)
        for i in range(2)
    )
    for log in (first, second):
        log.append(record(b"x"))
    assert not first.files_open and second.files_open
    first.engine.sync()
    assert first.files_open and not second.files_open  # counted: the other released
    assert limit.open_count == 1
    for log in (first, second):
        log.close()


def test_the_first_passes_over_a_new_topic_reopen_none_of_its_partitions() -> None:
    """A new topic's partitions store nothing: the first retention and compaction
    passes know that in memory and reopen none of the released ones (2,000 new
    partitions were all reopened by the first retention pass after their creation)."""
    fs = MemFS()
    limit = OpenLogLimit(1, run_now)
    config = BOTH_POLICIES
    logs = [
        PartitionLog.open(fs, f"/n{i}", config, ManualClock(), SMALL, open_limit=limit)
        for i in range(4)
    ]
    released = [log for log in logs if not log.files_open]
    assert len(released) == 3
    for log in logs:
        assert log.apply_retention() == 0 and log.retention_point() is None
        assert log.compact_keys() == 0
    assert all(not log.files_open for log in released)
    for log in logs:
        log.close()


def _four_logs(
    jobs: list[Callable[[], None]],
) -> tuple[OpenLogLimit, dict[str, PartitionLog]]:
    """Four logs under a limit of two open, each written once; the jobs the limit asks
    for go to ``jobs`` (run by the test): /a and /b released, /c and /d open."""
    limit = OpenLogLimit(2, lambda job, _delay: jobs.append(job))
    fs, clock = MemFS(), ManualClock()
    logs = {
        name: PartitionLog.open(fs, name, TopicConfig(), clock, BROKER_LIKE, open_limit=limit)
        for name in ("/a", "/b", "/c", "/d")
    }
    for name, log in logs.items():
        log.append(record(name.encode()))
    while jobs:
        jobs.pop(0)()
    assert [log.files_open for log in logs.values()] == [False, False, True, True]
    return limit, logs


def test_a_reopen_on_the_loop_releases_the_log_it_displaces_itself() -> None:
    """The event loop's reopen (``reopen_files_now``) releases the idle log it pushes
    past the limit in the same call when that is only ``close`` calls: no worker job,
    no GIL hand-off per release (a round-robin over more partitions than the limit
    released one a request on a worker: 0.28 ms of wall time each, waiting for the GIL)."""
    jobs: list[Callable[[], None]] = []
    limit, logs = _four_logs(jobs)
    releases = limit.releases
    assert logs["/a"].reopen_files_now()
    assert logs["/a"].files_open and not logs["/c"].files_open  # /c: least recently used
    assert jobs == []  # released in the call, no job
    assert limit.releases == releases + 1
    assert record_values(logs["/c"]) == [b"/c"]  # reopened on demand, intact
    for log in logs.values():
        log.close()


def test_a_displaced_log_that_needs_a_sync_is_left_to_a_worker() -> None:
    """A log whose WAL is not synced yet cannot be released with ``close`` calls alone
    (its release syncs first): the loop leaves it to a drain job, which releases it."""
    jobs: list[Callable[[], None]] = []
    limit, logs = _four_logs(jobs)
    logs["/c"].append(record(b"/c again"), wait=False)  # not synced yet
    logs["/d"].append(record(b"/d again"))
    while jobs:
        jobs.pop(0)()
    assert logs["/c"].files_open and logs["/d"].files_open
    assert logs["/a"].reopen_files_now()
    assert logs["/c"].files_open  # not released on the loop: it needs an fsync first
    assert len(jobs) == 1
    jobs.pop()()
    assert not logs["/c"].files_open
    assert record_values(logs["/c"]) == [b"/c", b"/c again"]
    assert limit.open_count <= limit.max_open
    for log in logs.values():
        log.close()


class _SlowDrain:
    """An ``OpenLogLimit`` runner whose jobs start ``lag_s`` late, in one thread: the
    worker pool of a loaded broker, whose releases lag behind the reopens."""

    def __init__(self, lag_s: float) -> None:
        self._lag_s = lag_s
        self._pool = concurrent.futures.ThreadPoolExecutor(1, "slow-drain")

    def __call__(self, job: Callable[[], None], delay: float) -> None:
        def late() -> None:
            threading.Event().wait(self._lag_s + delay)
            job()

        self._pool.submit(late)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


BOTH_POLICIES = TopicConfig(retention_ms=3_600_000).with_overrides(
    {"cleanup.policy": "compact,delete"}
)


def _keyed(key: bytes, value: bytes) -> bytes:
    return build_batch([(key, value, (), 1_700_000_000_000)])


PASSES: dict[str, Callable[[PartitionLog], object]] = {
    "retention": lambda log: log.apply_retention(),
    "retention point": lambda log: log.retention_point(),
    "key compaction": lambda log: log.compact_keys(),
    "read": lambda log: log.read(0, 1 << 16),
    "append": lambda log: log.append(_keyed(b"k", b"again")),
    "open files": lambda log: log.open_files(),
}


def _most_open_during_a_pass(visit: Callable[[PartitionLog], object]) -> tuple[int, int]:
    """40 logs written once under a limit of 4 whose drain lags (a loaded broker's
    worker pool), left to be released, then ``visit``ed one after another: the most
    logs holding files at once during the pass, and the limit's hard cap."""
    fs = MemFS()
    drain = _SlowDrain(0.02)
    limit = OpenLogLimit(4, drain)
    logs = [
        PartitionLog.open(fs, f"/p{i}", BOTH_POLICIES, ManualClock(), SMALL, open_limit=limit)
        for i in range(40)
    ]
    try:
        for log in logs:
            log.append(_keyed(b"k", b"v"))
        deadline = time.monotonic() + 10
        while sum(log.files_open for log in logs) > limit.max_open:  # the drain catches up
            assert time.monotonic() < deadline, "the drain never released the idle logs"
            time.sleep(0.01)
        most = 0
        for log in logs:
            visit(log)
            most = max(most, sum(log.files_open for log in logs))
        assert record_values(logs[0])[0] == b"v"  # released on the way, read back intact
        return most, limit.hard_cap
    finally:
        for log in logs:
            log.close()
        drain.close()


@pytest.mark.parametrize("name", sorted(PASSES))
def test_a_pass_over_released_logs_reopens_no_more_than_the_hard_cap(name: str) -> None:
    """A worker's pass over many released logs (retention, key compaction, reads,
    appends) reopens them one after another faster than a loaded broker's drain
    releases them: each reopen first makes room (``make_room``) while the logs holding
    files are at the hard cap, so the open files stay bounded however many logs the pass visits (a
    retention pass over 2,000 new partitions reached the 1,024 RLIMIT_NOFILE)."""
    most, hard_cap = _most_open_during_a_pass(PASSES[name])
    assert most <= hard_cap + 1, (most, hard_cap)


#: What the event loop calls on a log whose files may be released. Not appends: a
#: broker's append first opens the log's files through ``Partition.open_files``
#: (``reopen_files_now``, refused while crowded, then a worker that makes room).
LOOP_PASSES: dict[str, Callable[[PartitionLog], object]] = {
    "read": lambda log: log.read(0, 1 << 16),
    "timestamp lookup": lambda log: log.offset_for_timestamp(0),
    "retention point": lambda log: log.retention_point(),
}


@pytest.mark.parametrize("name", sorted(LOOP_PASSES))
async def test_a_pass_on_the_event_loop_reopens_no_more_than_the_hard_cap(name: str) -> None:
    """The same on the event loop, which must not wait for room (a Fetch naming 2,000
    released partitions read them all there: each read reopened its files, the drain
    lagged behind, and the broker reached its 1,024 RLIMIT_NOFILE, answering
    KAFKA_STORAGE_ERROR): a reopen there releases, in the same call, the idle logs it
    pushes past the limit."""
    most, hard_cap = _most_open_during_a_pass(LOOP_PASSES[name])
    assert most <= hard_cap + 1, (most, hard_cap)


def _round_robin_logs(
    count: int, limit: OpenLogLimit
) -> tuple[list[PartitionLog], Callable[[int], None]]:
    fs = MemFS()
    logs = [
        PartitionLog.open(fs, f"/r{i}", TopicConfig(), ManualClock(), SMALL, open_limit=limit)
        for i in range(count)
    ]

    def rounds(n: int) -> None:
        for round_ in range(n):
            for i, log in enumerate(logs):
                log.append(record(b"p%d-r%d" % (i, round_)))

    return logs, rounds


def test_logs_under_production_stay_open_beyond_the_limit_until_they_go_idle() -> None:
    now = [0.0]
    limit = OpenLogLimit(2, run_now, max_active=10, clock=lambda: now[0])
    logs, rounds = _round_robin_logs(6, limit)
    rounds(1)  # each appended once: not active yet, the LRU of 2 misses every time
    assert sum(log.files_open for log in logs) <= 2
    assert limit.cap == 2
    rounds(1)  # a second time within the window: active, kept open
    released = limit.releases
    rounds(5)
    assert limit.releases == released  # no log released or reopened any more
    assert sum(log.files_open for log in logs) == 6
    assert limit.cap == 8  # max_open, and one per active log
    now[0] += 3.0  # production stops: idle for longer than the window
    logs[0].append(record(b"late"))  # the next use releases the idle ones
    assert limit.cap == 2
    assert sum(log.files_open for log in logs) <= 2
    for i, log in enumerate(logs):
        assert log.log_end_offset == 7 + (i == 0)
        log.close()


def test_the_logs_kept_open_for_production_stop_at_max_active() -> None:
    limit = OpenLogLimit(2, run_now, max_active=5, clock=lambda: 0.0)
    logs, rounds = _round_robin_logs(12, limit)
    rounds(4)
    assert limit.cap == 5
    assert sum(log.files_open for log in logs) <= 5
    assert limit.releases > 0
    for log in logs:
        assert log.log_end_offset == 4
        log.close()


def test_a_strict_limit_keeps_no_active_log_beyond_it() -> None:
    limit = OpenLogLimit(2, run_now)  # max_active defaults to max_open
    logs, rounds = _round_robin_logs(6, limit)
    rounds(4)
    assert limit.cap == 2
    assert sum(log.files_open for log in logs) <= 2
    for log in logs:
        log.close()


def test_trim_releases_the_logs_whose_production_ended_without_a_use() -> None:
    now = [0.0]
    limit = OpenLogLimit(2, run_now, max_active=10, clock=lambda: now[0])
    logs, rounds = _round_robin_logs(6, limit)
    rounds(4)
    assert sum(log.files_open for log in logs) == 6
    limit.trim()  # still under production: nothing to release
    assert sum(log.files_open for log in logs) == 6
    now[0] += 3.0  # then idle, and no log used again
    limit.trim()  # (a retention pass)
    assert sum(log.files_open for log in logs) <= 2
    for log in logs:
        log.close()
