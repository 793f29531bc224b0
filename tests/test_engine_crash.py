"""Crash safety on the in-memory filesystem: crash at every step, torn WAL tails, and
flipped bytes in tables."""

from __future__ import annotations

import random

import pytest

import engine_ops
from engine_ops import Op
from sentinel.errors import CorruptionError, UnsupportedFormatError
from sentinel.fs import MemFS
from sentinel.storage.compaction import CompactionOptions
from sentinel.storage.engine import Engine
from sentinel.storage.files import TABLE_SUFFIX, WAL_SUFFIX
from sentinel.storage.options import EngineOptions
from sentinel.storage.wal import SyncMode, WalOptions

OPTIONS = EngineOptions(
    memtable_bytes=1500,
    background=False,
    value_separation_bytes=48,  # about half the values live in the WAL, pointed to
    compaction=CompactionOptions(
        l0_compaction_trigger=2, l1_target_bytes=4096, target_file_bytes=2048
    ),
)


def workload(seed: int) -> list[tuple[bytes, bytes | None]]:
    return engine_ops.workload(seed, count=160, keys=60, padding=80)


def _compact_and_close(engine: Engine) -> None:
    engine.compact()
    engine.close()


def run_until_crash(fs: MemFS, ops: list[Op]) -> tuple[dict[bytes, bytes | None], Op | None]:
    return engine_ops.run_until_crash(fs, OPTIONS, ops, finish=_compact_and_close)


def check_recovered(fs: MemFS, acked: dict[bytes, bytes | None], in_flight: Op | None) -> None:
    engine_ops.check_recovered(fs, OPTIONS, acked, in_flight)


def count_ops(ops: list[tuple[bytes, bytes | None]]) -> int:
    fs = MemFS()
    run_until_crash(fs, ops)
    return fs.ops


@pytest.mark.parametrize("seed", [1, 2])
def test_crash_at_every_step(seed: int) -> None:
    ops = workload(seed)
    total = count_ops(ops)
    assert total > 300
    for fail_at in range(total):
        fs = MemFS()
        fs.fail_after(fail_at)
        acked, in_flight = run_until_crash(fs, ops)
        fs.crash()
        check_recovered(fs, acked, in_flight)


def test_crash_keeping_torn_unsynced_tails() -> None:
    ops = workload(3)
    total = count_ops(ops)
    rng = random.Random(99)
    for fail_at in range(0, total, 3):
        fs = MemFS()
        fs.fail_after(fail_at)
        acked, in_flight = run_until_crash(fs, ops)
        fs.crash(rng)
        check_recovered(fs, acked, in_flight)


def _wal_path(fs: MemFS) -> str:
    wals = [name for name in fs.listdir("/db") if name.endswith(WAL_SUFFIX)]
    return "/db/" + max(wals)


def test_truncating_the_last_wal_entry_at_every_byte_keeps_the_rest() -> None:
    opts = EngineOptions(background=False, flush_on_close=False)
    # Learn where the last entry starts and ends.
    fs = MemFS()
    engine = Engine.open("/db", opts, fs=fs)
    for i in range(20):
        engine.put(b"key%02d" % i, b"value%02d" % i)
    before = fs.file_size(_wal_path(fs))
    engine.put(b"last", b"L" * 40)
    after = fs.file_size(_wal_path(fs))
    engine.close()
    for cut in range(before, after):
        fs = MemFS()
        engine = Engine.open("/db", opts, fs=fs)
        for i in range(20):
            engine.put(b"key%02d" % i, b"value%02d" % i)
        engine.put(b"last", b"L" * 40)
        # A crash (no clean shutdown): only then may the last entry be a torn tail.
        fs.crash()
        handle = fs.open_append(_wal_path(fs))
        handle.truncate(cut)
        handle.sync()
        with Engine.open("/db", opts, fs=fs) as reopened:
            assert reopened.get(b"last") is None
            for i in range(20):
                assert reopened.get(b"key%02d" % i) == b"value%02d" % i
            report = reopened.replay_report
            assert report is not None
            assert report.dropped_bytes == cut - before


def test_flipping_any_byte_of_a_table_never_returns_wrong_data() -> None:
    opts = EngineOptions(background=False)
    entries = {b"k%03d" % i: b"v%03d" % i * 5 for i in range(60)}

    def build() -> tuple[MemFS, str]:
        fs = MemFS()
        with Engine.open("/db", opts, fs=fs) as engine:
            for key, value in entries.items():
                engine.put(key, value)
        tables = [n for n in fs.listdir("/db") if n.endswith(TABLE_SUFFIX)]
        assert len(tables) == 1
        return fs, "/db/" + tables[0]

    fs, path = build()
    size = fs.file_size(path)
    outcomes = {"error": 0, "clean": 0}
    for position in range(size):
        fs, path = build()
        data = bytearray(fs.read_all(path))
        data[position] ^= 0x5A
        handle = fs.create(path)
        handle.write(data)
        handle.sync()
        try:
            with Engine.open("/db", opts, fs=fs) as engine:
                assert dict(engine.scan()) == entries
                for key, value in entries.items():
                    assert engine.get(key) == value
                assert engine.get(b"absent") is None
            outcomes["clean"] += 1
        except (CorruptionError, UnsupportedFormatError):
            outcomes["error"] += 1
    assert outcomes["error"] > size * 0.9


def test_a_replay_kept_in_memory_is_synced_before_it_is_served() -> None:
    """A replay small enough to stay in the active memtable (no table, no manifest edit
    at open) serves what the killed process wrote without syncing: it must be durable
    then, or a power cut after the start takes back records already read. Its WAL
    segments stay until a flush covers them; a second crash replays them again."""
    options = EngineOptions(background=False, wal=WalOptions(sync_mode=SyncMode.NONE))
    fs = MemFS()
    engine = Engine.open("/db", options, fs=fs)
    written = {b"k%02d" % i: b"v%d" % i for i in range(20)}
    for key, value in written.items():
        engine.put(key, value)
    fs.kill()  # nothing was synced; the page cache holds all of it

    manifests = sorted(n for n in fs.listdir("/db") if n.startswith("MANIFEST"))
    engine = Engine.open("/db", options, fs=fs)
    assert engine.replay_kept_bytes > 0
    assert not [n for n in fs.listdir("/db") if n.endswith(TABLE_SUFFIX)]
    # The manifest, which ended cleanly, is appended to again, not rewritten.
    assert sorted(n for n in fs.listdir("/db") if n.startswith("MANIFEST")) == manifests
    assert {k: engine.get(k) for k in written} == written
    engine.put(b"later", b"after the first start")
    engine.sync()
    fs.crash()  # a power cut: only what was synced survives

    engine = Engine.open("/db", options, fs=fs)
    assert {k: engine.get(k) for k in written} == written
    assert engine.get(b"later") == b"after the first start"
    segments_before = sorted(n for n in fs.listdir("/db") if n.endswith(WAL_SUFFIX))
    engine.flush()
    segments_after = sorted(n for n in fs.listdir("/db") if n.endswith(WAL_SUFFIX))
    assert segments_after[0] > segments_before[-1]  # the flush let the replayed ones go
    engine.close()
    engine = Engine.open("/db", options, fs=fs)
    assert {k: engine.get(k) for k in written} == written
    engine.close()
