"""An engine reopened after a crash goes on in the last WAL segment its replay read (a
torn tail cut first) when it keeps the replay in its memtable, rather than making a new
segment: fewer fsyncs at a start after kill -9, and no segment more per partition for
every crash. Crash at every step of that second life; and kill after kill."""

from __future__ import annotations

import random

import pytest

import engine_ops
from engine_ops import Op
from sentinel.fs import MemFS
from sentinel.storage.compaction import CompactionOptions
from sentinel.storage.engine import Engine
from sentinel.storage.files import WAL_SUFFIX
from sentinel.storage.options import EngineOptions
from sentinel.storage.write_batch import WriteBatch

OPTIONS = EngineOptions(
    memtable_bytes=8000,  # a replay of up to 2,000 bytes stays in the memtable
    background=False,
    value_separation_bytes=48,  # large values live in the WAL, pointed to
    compaction=CompactionOptions(
        l0_compaction_trigger=2, l1_target_bytes=4096, target_file_bytes=2048
    ),
)
FIRST_LIFE = {b"first%02d" % i: b"v%02d" % i * 3 for i in range(8)}  # 1,088 in a memtable
TORN = b"\x2a\x00\x00\x00\x01"  # the start of a frame a kill cut short


def _segments(fs: MemFS) -> list[str]:
    return sorted(n for n in fs.listdir("/db") if n.endswith(WAL_SUFFIX))


def _first_life(*, torn: bool) -> MemFS:
    """Eight acknowledged puts, then kill -9 (with ``torn``, inside a ninth's write)."""
    fs = MemFS()
    engine = Engine.open("/db", OPTIONS, fs=fs)
    for key, value in FIRST_LIFE.items():
        engine.put(key, value)
    fs.kill()
    if torn:
        handle = fs.open_append("/db/" + _segments(fs)[-1])
        handle.write(TORN)
        handle.sync()
        handle.close()
    return fs


def _second_life(fs: MemFS, ops: list[Op]) -> tuple[dict[bytes, bytes | None], Op | None]:
    """Reopen and apply ``ops``: the acknowledged state and the op a crash cut short."""
    return engine_ops.run_until_crash(fs, OPTIONS, ops, acked_before=FIRST_LIFE)


def _check(fs: MemFS, acked: dict[bytes, bytes | None], in_flight: Op | None) -> None:
    engine_ops.check_recovered(fs, OPTIONS, acked, in_flight)


@pytest.mark.parametrize("torn", [False, True], ids=["whole", "torn-tail"])
def test_the_reopened_engine_appends_to_the_segment_it_replayed(torn: bool) -> None:
    fs = _first_life(torn=torn)
    before = _segments(fs)
    engine = Engine.open("/db", OPTIONS, fs=fs)
    assert engine.replay_kept_bytes > 0
    report = engine.replay_report
    assert report is not None and report.dropped_bytes == (len(TORN) if torn else 0)
    assert _segments(fs) == before  # no new segment
    size = fs.file_size("/db/" + before[-1])
    engine.put(b"second", b"life")
    assert fs.file_size("/db/" + before[-1]) > size  # after its valid end
    fs.crash()  # a power cut: what was synced stays, the torn bytes are gone
    with Engine.open("/db", OPTIONS, fs=fs) as again:
        assert again.get(b"second") == b"life"
        assert {k: again.get(k) for k in FIRST_LIFE} == FIRST_LIFE
        assert again.replay_report is not None
        assert again.replay_report.dropped_bytes == 0


@pytest.mark.parametrize("torn", [False, True], ids=["whole", "torn-tail"])
def test_crash_at_every_step_of_the_life_after_a_kill(torn: bool) -> None:
    ops = engine_ops.workload(7)
    counting = _first_life(torn=torn)
    start = counting.ops
    _second_life(counting, ops)
    total = counting.ops - start
    assert total > 150  # the open, the appends, rolls, flushes and compactions
    for fail_at in range(total):
        fs = _first_life(torn=torn)
        fs.fail_after(fail_at)
        acked, in_flight = _second_life(fs, ops)
        fs.crash()
        _check(fs, acked, in_flight)


def test_torn_unsynced_tails_in_the_life_after_a_kill() -> None:
    ops = engine_ops.workload(8)
    counting = _first_life(torn=True)
    start = counting.ops
    _second_life(counting, ops)
    total = counting.ops - start
    rng = random.Random(5)
    for fail_at in range(0, total, 2):
        fs = _first_life(torn=True)
        fs.fail_after(fail_at)
        acked, in_flight = _second_life(fs, ops)
        fs.crash(rng)  # keeps a random part of each unsynced tail
        _check(fs, acked, in_flight)


def test_kill_after_kill_leaves_no_segment_more() -> None:
    """Each start after kill -9 made a new segment, which the kept replay then needed
    until a flush: a partition killed 40 times held 40 segments (a helper's kill soak),
    and every start read them all again."""
    fs = _first_life(torn=False)
    segments = _segments(fs)
    for round_ in range(6):
        engine = Engine.open("/db", OPTIONS, fs=fs)
        if round_ % 2:
            engine.put(b"round%d" % round_, b"x")
        fs.kill()
        assert _segments(fs) == segments
    with Engine.open("/db", OPTIONS, fs=fs) as engine:
        assert {k: engine.get(k) for k in FIRST_LIFE} == FIRST_LIFE
        assert [engine.get(b"round%d" % r) for r in range(6)] == [None, b"x"] * 3


def test_a_replay_too_large_to_keep_is_flushed_and_a_new_segment_made() -> None:
    """A replay over a quarter of the memtable is flushed to a table at open: the
    manifest's log number then moves past its segments, so the WAL starts a new one."""
    fs = MemFS()
    engine = Engine.open("/db", OPTIONS, fs=fs)
    big = {b"big%02d" % i: bytes([i]) * 40 for i in range(40)}  # ~5.5 KB in a memtable
    for key, value in big.items():
        engine.put(key, value)
    fs.kill()
    before = _segments(fs)
    with Engine.open("/db", OPTIONS, fs=fs) as reopened:
        assert reopened.replay_kept_bytes == 0
        after = _segments(fs)
        assert after[-1] > before[-1]
        assert {k: reopened.get(k) for k in big} == big


def test_what_a_replay_serves_is_fsynced_before_it_is_served() -> None:
    """The killed process wrote its last entry and was killed before the fsync (the
    page cache keeps it). The next open replays and serves it, so it must be durable
    first: a power cut after that open loses nothing the open served."""
    fs = MemFS()
    engine = Engine.open("/db", OPTIONS, fs=fs)
    for key, value in FIRST_LIFE.items():
        engine.put(key, value)
    engine.write_nowait(WriteBatch().put(b"unsynced", b"in the page cache"))
    engine.wal.hand_to_os()  # written, never fsynced
    fs.kill()
    reopened = Engine.open("/db", OPTIONS, fs=fs)
    assert reopened.replay_kept_bytes > 0  # the replay stays: the WAL goes on in it
    assert reopened.get(b"unsynced") == b"in the page cache"  # served from now on
    fs.crash()  # a power cut
    after = Engine.open("/db", OPTIONS, fs=fs)
    assert after.get(b"unsynced") == b"in the page cache"
    assert all(after.get(k) == v for k, v in FIRST_LIFE.items())
    after.close()
