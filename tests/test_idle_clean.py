"""Idle partitions marked clean while the broker runs (Kafka's recovery point, for a
partition nobody uses): a suspended engine's clean-shutdown record, written by
``Engine.mark_clean`` and removed by its next ``resume_files`` before any write, on the
in-memory filesystem with its crash model."""

from __future__ import annotations

import random

import pytest

from inline_jobs import run_now
from sentinel.broker.topic_config import TopicConfig
from sentinel.clock import ManualClock
from sentinel.fs import MemFS, caused_by_crash
from sentinel.log.open_files import OpenLogLimit
from sentinel.log.partition_log import PartitionLog
from sentinel.log.summary import decode as decode_summary
from sentinel.record import build_batch, decode_records, iter_batches
from sentinel.storage import clean_marker
from sentinel.storage.engine import Engine
from sentinel.storage.options import EngineOptions

SEEDS = range(16)
OPTIONS = EngineOptions(memtable_bytes=8 * 1024, background=False, hold_lock=False)


def files(fs: MemFS, directory: str) -> dict[str, bytes]:
    return {name: fs.read_all(f"{directory}/{name}") for name in sorted(fs.listdir(directory))}


def suspended_engine(fs: MemFS, keys: int = 20) -> Engine:
    engine = Engine.open("/e", OPTIONS, fs=fs)
    for i in range(keys):
        engine.put(b"k%03d" % i, b"v%d" % i * 100)  # some flushed to tables, some not
    engine.sync()
    assert engine.suspend_files()
    return engine


def test_a_marked_engine_is_checked_clean_after_a_crash() -> None:
    fs = MemFS()
    engine = suspended_engine(fs)
    assert clean_marker.check(fs, "/e") is None  # suspended alone: not clean
    assert engine.mark_clean(b"summary")
    assert not engine.mark_clean(b"again")  # once
    fs.crash()
    record = clean_marker.check(fs, "/e")
    assert record is not None and record.payload == b"summary"
    with Engine.open("/e", OPTIONS, fs=fs) as reopened:
        assert [reopened.get(b"k%03d" % i) for i in range(20)] == [
            b"v%d" % i * 100 for i in range(20)
        ]
    assert clean_marker.check(fs, "/e") is not None  # closed cleanly again


def test_the_reopen_removes_the_mark_durably_before_any_write() -> None:
    fs = MemFS()
    engine = suspended_engine(fs)
    assert engine.mark_clean(b"summary")
    engine.resume_files()
    assert not engine.marked_clean
    fs.crash()  # right after the reopen: the removal was synced
    assert clean_marker.check(fs, "/e") is None
    fs = MemFS()
    engine = suspended_engine(fs)
    assert engine.mark_clean(b"summary")
    engine.resume_files()
    engine.put(b"later", b"x")
    engine.sync()
    fs.crash()
    assert clean_marker.check(fs, "/e") is None  # recovered as after a crash
    with Engine.open("/e", OPTIONS, fs=fs) as reopened:
        assert reopened.get(b"later") == b"x"
        assert reopened.get(b"k000") == b"v0" * 100


def test_closing_a_marked_engine_writes_nothing() -> None:
    fs = MemFS()
    engine = suspended_engine(fs)
    assert engine.mark_clean(b"summary")
    before = files(fs, "/e")
    engine.close()
    assert files(fs, "/e") == before
    fs.crash()
    record = clean_marker.check(fs, "/e")
    assert record is not None and record.payload == b"summary"


def test_only_a_suspended_engine_is_marked() -> None:
    fs = MemFS()
    engine = Engine.open("/e", OPTIONS, fs=fs)
    engine.put(b"k", b"v")
    assert not engine.mark_clean(b"summary")  # its files are open: writes may come
    assert not fs.exists("/e/" + clean_marker.CLEAN_NAME)
    engine.close()


def record(value: bytes) -> bytes:
    return build_batch([(None, value, (), 0)])


def log_values(log: PartitionLog) -> list[bytes]:
    read = log.read(0, max_bytes=1 << 30)
    return [
        bytes(r.value or b"")
        for data in read.batches
        for batch in iter_batches(data)
        for r in decode_records(batch)
    ]


def reopen(fs: MemFS, name: str, clock: ManualClock) -> tuple[PartitionLog, bool]:
    """As a broker's start does: a log with a clean record is checked and deferred,
    the others recovered; whether it was deferred."""
    checked = clean_marker.check(fs, name)
    if checked is not None:
        summary = decode_summary(checked.payload, name)
        assert summary is not None
        log = PartitionLog.deferred(
            fs, name, TopicConfig(), clock, summary=summary, engine_options=OPTIONS
        )
        return log, True
    return PartitionLog.open(fs, name, TopicConfig(), clock, OPTIONS), False


def test_logs_marked_idle_keep_every_acknowledged_record_across_crashes() -> None:
    """Three logs under a limit of one open, released and reopened at every step, marked
    clean at random moments (as a retention pass does to those idle long enough); a
    crash at a random step, several times: a log with a record starts deferred and
    serves its summary's offsets, and every log holds every acknowledged record, in
    order (at most the one in flight besides)."""
    deferred_starts = 0
    for seed in SEEDS:
        rng = random.Random(seed)
        fs = MemFS()
        clock = ManualClock()
        names = ["/a", "/b", "/c"]
        acked: dict[str, list[bytes]] = {name: [] for name in names}
        for _life in range(3):
            limit = OpenLogLimit(1, run_now)
            logs: dict[str, PartitionLog] = {}
            in_flight: tuple[str, bytes] | None = None
            try:
                for name in names:
                    logs[name] = PartitionLog.open(
                        fs, name, TopicConfig(), clock, OPTIONS, open_limit=limit
                    )
                fs.fail_after(rng.randrange(300))
                for _step in range(120):
                    clock.advance(1.0)
                    if rng.random() < 0.3:
                        for log in logs.values():
                            log.mark_idle_clean(rng.choice([0.0, 2.0]))
                        continue
                    name = rng.choice(names)
                    value = b"%s-%d-" % (name.encode(), len(acked[name])) + b"x" * rng.choice(
                        [10, 600, 5000]
                    )
                    in_flight = (name, value)
                    logs[name].append(record(value))
                    acked[name].append(value)
                    in_flight = None
            except Exception as exc:
                assert caused_by_crash(exc), exc
            fs.fail_after(None)
            fs.crash(rng)
            for name in names:
                log, was_deferred = reopen(fs, name, clock)
                with log:
                    deferred_starts += was_deferred
                    if was_deferred:  # the summary: as of the log's last release
                        assert log.log_end_offset in (len(acked[name]), len(acked[name]) + 1)
                    got = log_values(log)
                    if got != acked[name]:  # only the append in flight may have landed
                        assert in_flight is not None and in_flight[0] == name, name
                        assert got == [*acked[name], in_flight[1]], name
                        acked[name].append(in_flight[1])
    assert deferred_starts > 0, deferred_starts  # the case under test happened


def test_a_stop_marks_a_released_log_instead_of_reopening_and_flushing_it() -> None:
    """A log released since its last use is closed by writing its record (its memtable
    stays in its synced WAL) rather than by a flush: the stop adds the record and
    nothing else; the next start defers it and serves every record."""
    fs, clock = MemFS(), ManualClock()
    limit = OpenLogLimit(1, run_now)
    logs = {
        name: PartitionLog.open(fs, name, TopicConfig(), clock, OPTIONS, open_limit=limit)
        for name in ("/a", "/b")
    }
    logs["/a"].append(record(b"a0"))
    logs["/b"].append(record(b"b0"))  # the limit of one releases /a
    assert not logs["/a"].files_open
    before = files(fs, "/a")
    for log in logs.values():
        log.close()
    after = files(fs, "/a")
    assert set(after) - set(before) == {clean_marker.CLEAN_NAME}
    assert {name: after[name] for name in before} == before  # nothing else written
    fs.crash()
    for name in ("/a", "/b"):
        log, deferred = reopen(fs, name, clock)
        with log:
            assert deferred, name  # /b closed the usual way, /a by its record
            assert log_values(log) == [name[1:].encode() + b"0"]


def test_a_mark_whose_close_fails_leaves_the_log_counted_by_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A mark reopens a released log's files for its summary and closes them again. If
    that close is refused (the engine's suspend fails: a disk error, a job wanted), the
    files stay open: the log is counted by the open-files limit again, so the next use
    of another log releases it, rather than it staying open outside the limit."""
    fs, clock = MemFS(), ManualClock()
    limit = OpenLogLimit(1, run_now)
    a = PartitionLog.open(fs, "/a", TopicConfig(), clock, OPTIONS, open_limit=limit)
    b = PartitionLog.open(fs, "/b", TopicConfig(), clock, OPTIONS, open_limit=limit)
    a.append(record(b"a0"))
    b.append(record(b"b0"))  # the limit of one releases /a
    assert not a.files_open
    refused: list[Engine] = []

    def refuse_once(engine: Engine) -> bool:
        refused.append(engine)
        monkeypatch.undo()  # the next suspend is the real one
        return False

    monkeypatch.setattr(Engine, "suspend_files", refuse_once)
    assert not a.mark_idle_clean(0.0)
    assert refused and a.files_open  # the failure under test happened
    b.append(record(b"b1"))  # a use of another log: the limit releases /a again
    assert not a.files_open
    assert a.mark_idle_clean(0.0)  # and a later pass marks it
    assert log_values(a) == [b"a0"] and log_values(b) == [b"b0", b"b1"]
    a.close()
    b.close()
