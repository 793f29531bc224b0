"""The engine's API on the in-memory and the real filesystem."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.errors import (
    ClosedError,
    CorruptionError,
    KeyTooLargeError,
    LockedError,
    MissingFileError,
    NotAnEngineDirectoryError,
    ValueTooLargeError,
)
from sentinel.fs import MemFS, OsFS
from sentinel.storage.compaction import CompactionOptions
from sentinel.storage.engine import Engine
from sentinel.storage.options import EngineOptions
from sentinel.storage.wal import SyncMode, WalOptions
from sentinel.storage.write_batch import WriteBatch

SMALL = EngineOptions(memtable_bytes=16 * 1024, background=False)


def key(i: int) -> bytes:
    return i.to_bytes(8, "big")


def test_put_get_delete_and_reopen() -> None:
    fs = MemFS()
    with Engine.open("/db", SMALL, fs=fs) as engine:
        engine.put(b"a", b"1")
        engine.put(b"b", b"2")
        engine.delete(b"a")
        assert engine.get(b"a") is None
        assert engine.get(b"b") == b"2"
    with Engine.open("/db", SMALL, fs=fs) as engine:
        assert engine.get(b"a") is None
        assert engine.get(b"b") == b"2"
        assert list(engine.scan()) == [(b"b", b"2")]


def test_write_batch_is_applied_whole() -> None:
    fs = MemFS()
    with Engine.open("/db", SMALL, fs=fs) as engine:
        engine.write(WriteBatch().put(b"x", b"1").put(b"y", b"2").delete(b"x"))
        assert list(engine.scan()) == [(b"y", b"2")]


def test_flush_and_compaction_keep_every_value() -> None:
    fs = MemFS()
    opts = EngineOptions(memtable_bytes=8 * 1024, background=False)
    with Engine.open("/db", opts, fs=fs) as engine:
        for i in range(2000):
            engine.put(key(i % 700), b"v%d" % i)
        engine.compact()
        stats = engine.stats()
        assert stats.flushes > 1
        for i in range(1300, 2000):
            assert engine.get(key(i % 700)) == b"v%d" % i
        assert len(list(engine.scan())) == 700


def test_ascending_keys_are_moved_not_rewritten() -> None:
    fs = MemFS()
    opts = EngineOptions(memtable_bytes=8 * 1024, background=False)
    with Engine.open("/db", opts, fs=fs) as engine:
        for i in range(3000):
            engine.put(key(i), b"x" * 100)
        engine.compact()
        stats = engine.stats()
        assert stats.compaction_bytes_written == 0
        assert stats.trivial_moves > 0
        assert [k for k, _ in engine.scan(key(10), key(13))] == [key(10), key(11), key(12)]


def test_seek_floor_skips_tombstones() -> None:
    fs = MemFS()
    with Engine.open("/db", SMALL, fs=fs) as engine:
        for i in (10, 20, 30):
            engine.put(key(i), b"%d" % i)
        engine.flush()
        engine.delete(key(20))
        assert engine.seek_floor(key(25)) == (key(10), b"10")
        assert engine.seek_floor(key(30)) == (key(30), b"30")
        assert engine.seek_floor(key(5)) is None


def test_delete_range() -> None:
    fs = MemFS()
    with Engine.open("/db", SMALL, fs=fs) as engine:
        for i in range(100):
            engine.put(key(i), b"v")
        engine.flush()
        assert engine.delete_range(key(50), None) == 50
        assert engine.seek_floor(key(99)) == (key(49), b"v")


def test_too_large_key_and_value_are_refused() -> None:
    fs = MemFS()
    opts = EngineOptions(max_key_bytes=8, max_value_bytes=16, background=False)
    with Engine.open("/db", opts, fs=fs) as engine:
        with pytest.raises(KeyTooLargeError):
            engine.put(b"k" * 9, b"v")
        with pytest.raises(ValueTooLargeError):
            engine.put(b"k", b"v" * 17)
        with pytest.raises(ValueTooLargeError):
            engine.write(WriteBatch().put(b"a", b"1").put(b"b", b"v" * 17))
        assert engine.get(b"a") is None
        assert engine.stats().user_bytes_written == 0


def test_not_an_engine_directory_is_refused_and_untouched(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(NotAnEngineDirectoryError):
        Engine.open(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_second_open_is_locked(tmp_path: Path) -> None:
    engine = Engine.open(str(tmp_path / "db"))
    try:
        with pytest.raises(LockedError):
            Engine.open(str(tmp_path / "db"))
    finally:
        engine.close()
    Engine.open(str(tmp_path / "db")).close()


def test_closed_engine_refuses_calls() -> None:
    engine = Engine.open("/db", SMALL, fs=MemFS())
    engine.close()
    with pytest.raises(ClosedError):
        engine.put(b"a", b"b")
    with pytest.raises(ClosedError):
        engine.get(b"a")


@pytest.mark.parametrize("mode", list(SyncMode))
def test_background_engine_on_os(tmp_path: Path, mode: SyncMode) -> None:
    opts = EngineOptions(memtable_bytes=32 * 1024, wal=WalOptions(sync_mode=mode))
    path = str(tmp_path / "db")
    with Engine.open(path, opts) as engine:
        for i in range(3000):
            engine.put(key(i), b"%d" % i * 10)
        engine.compact()
        assert engine.get(key(1234)) == b"1234" * 10
    with Engine.open(path, opts, fs=OsFS()) as engine:
        assert sum(1 for _ in engine.scan()) == 3000
        assert engine.replay_report is not None


def test_stats_report_levels_and_amplification() -> None:
    with Engine.open("/db", SMALL, fs=MemFS()) as engine:
        for i in range(1000):
            engine.put(key(i), b"v" * 50)
        engine.flush()
        stats = engine.stats()
        assert sum(stats.tables_per_level) >= 1
        assert stats.write_amplification > 1.0
        for i in range(1000, 3000):
            engine.put(key(i), b"w" * 50)
        engine.flush()
        engine.compact()
        # The metrics' cheap reading agrees with the full one.
        stats, work = engine.stats(), engine.work_figures()
        assert work.flushes >= 2 and work.compactions + work.trivial_moves >= 1
        assert work == (
            stats.flushes, stats.compactions, stats.trivial_moves,
            stats.flush_bytes_written, stats.compaction_bytes_written,
            sum(stats.tables_per_level),
        )


def test_large_values_are_written_once_and_read_back_through_pointers() -> None:
    fs = MemFS()
    opts = EngineOptions(memtable_bytes=64 * 1024, background=False, value_separation_bytes=1024)
    big = {key(i): bytes([i % 251]) * 5000 for i in range(40)}
    with Engine.open("/db", opts, fs=fs) as engine:
        for k, v in big.items():
            engine.put(k, v)
        engine.put(key(1000), b"small")
        engine.flush()
        stats = engine.stats()
        assert stats.flush_bytes_written < 10_000  # pointers, not 200 KB of values
        assert engine.get(key(3)) == big[key(3)]
    with Engine.open("/db", opts, fs=fs) as engine:
        assert dict(engine.scan(key(0), key(40))) == big
        assert engine.seek_floor(key(39)) == (key(39), big[key(39)])
        assert engine.get(key(1000)) == b"small"


def test_wal_segments_are_kept_while_tables_point_into_them() -> None:
    fs = MemFS()
    opts = EngineOptions(memtable_bytes=32 * 1024, background=False, value_separation_bytes=512)
    with Engine.open("/db", opts, fs=fs) as engine:
        for i in range(60):
            engine.put(key(i), b"x" * 4000)
        engine.flush()

        def segments() -> list[str]:
            return [n for n in fs.listdir("/db") if n.endswith(".wal")]

        kept = len(segments())
        assert kept > 2  # older segments hold the values tables point to
        engine.drop_tables_below(key(1000))
        assert len(segments()) < kept  # nothing points into them any more
        assert list(engine.scan()) == []


def test_a_merge_of_tables_pointing_into_segments_apart_needs_only_those() -> None:
    """Tables pointing into WAL segments 8 and 10 are merged after 9 (small values
    only, flushed inline) was deleted: the merged table needs 8 and 10, not 9. With a
    pointer range a start refused the engine for 9 (a kill -9 soak found it)."""
    fs = MemFS()
    opts = EngineOptions(
        background=False,
        value_separation_bytes=512,
        compaction=CompactionOptions(l0_compaction_trigger=1),  # every flush is merged
    )

    def segments() -> set[str]:
        return {n for n in fs.listdir("/db") if n.endswith(".wal")}

    with Engine.open("/db", opts, fs=fs) as engine:
        for _ in range(7):  # a table spanning a..z at every level: each flush merges
            engine.put(b"a", b"a")
            engine.put(b"z", b"z")
            engine.flush()
        engine.put(b"b", b"B" * 4000)
        engine.flush()
        (first,) = engine.pointer_segment_numbers()
        engine.put(b"m", b"m")  # inline: its segment is deleted after its flush
        engine.flush()
        gone = f"{first + 1:020d}.wal"
        assert gone not in segments()
        engine.put(b"c", b"C" * 4000)
        engine.flush()
        assert engine.pointer_segment_numbers() == {first, first + 2}
        assert engine.stats().tables_per_level[0] == 0  # merged into one table below
    with Engine.open("/db", opts, fs=fs) as engine:
        assert engine.get(b"b") == b"B" * 4000
        assert engine.get(b"c") == b"C" * 4000
        assert engine.get(b"m") == b"m"
    fs.remove(f"/db/{first + 2:020d}.wal")  # one it does need: refused, named
    with pytest.raises(MissingFileError, match=f"{first + 2:020d}.wal"):
        Engine.open("/db", opts, fs=fs)


def test_a_damaged_separated_value_is_a_corruption_error_not_data() -> None:
    fs = MemFS()
    opts = EngineOptions(background=False, value_separation_bytes=100)
    with Engine.open("/db", opts, fs=fs) as engine:
        engine.put(b"k", b"V" * 1000)
        engine.flush()
    wal = sorted(n for n in fs.listdir("/db") if n.endswith(".wal"))[0]
    data = bytearray(fs.read_all("/db/" + wal))
    at = data.index(b"V" * 1000) + 500
    data[at] ^= 0x01
    handle = fs.create("/db/" + wal)
    handle.write(data)
    handle.sync()
    with Engine.open("/db", opts, fs=fs) as engine, pytest.raises(CorruptionError):
        engine.get(b"k")


def test_a_manifest_from_a_newer_format_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    import struct

    from sentinel.codec.crc import crc32c
    from sentinel.errors import UnsupportedFormatError
    from sentinel.storage.manifest import MAGIC

    path = tmp_path / "db"
    with Engine.open(str(path), EngineOptions(background=False)) as engine:
        engine.put(b"k", b"v")
    current = (path / "CURRENT").read_text().strip()
    manifest = path / current
    data = bytearray(manifest.read_bytes())
    prefix = MAGIC + struct.pack("<I", 99)
    data[: len(prefix) + 4] = prefix + struct.pack("<I", crc32c(prefix))
    manifest.write_bytes(bytes(data))
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with pytest.raises(UnsupportedFormatError, match="format 99"):
        Engine.open(str(path))
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before


def _log_like_writes(engine: Engine, count: int) -> None:
    """A partition log's pattern: ascending data keys, and beside them keys of another
    family (a checkpoint every few writes) whose range spans every flushed table's."""
    for i in range(count):
        wb = WriteBatch().put(b"D" + key(i), b"v" * 200)
        if i % 10 == 0:
            wb.put(b"MC" + key(i), b"c")
        engine.write(wb)


def test_table_families_let_ascending_data_move_down_instead_of_being_rewritten() -> None:
    compaction = CompactionOptions(l0_compaction_trigger=2, table_families=(b"D", b"MC"))
    opts = EngineOptions(memtable_bytes=8 * 1024, background=False, compaction=compaction)
    fs = MemFS()
    with Engine.open("/db", opts, fs=fs) as engine:
        _log_like_writes(engine, 3000)
        engine.compact()
        stats = engine.stats()
        assert stats.flushes > 50
        # Each data entry is rewritten at most once (the merge of its L0 table); the
        # tables merged out of L0 are never merged again.
        assert stats.compaction_bytes_written < 1.5 * stats.flush_bytes_written
        assert [k for k, _ in engine.scan(b"D", b"E")] == [b"D" + key(i) for i in range(3000)]
        assert len(list(engine.scan(b"MC", b"MD"))) == 300
    with Engine.open("/db", opts, fs=fs) as engine:
        assert engine.get(b"D" + key(2999)) == b"v" * 200
        assert engine.get(b"MC" + key(2990)) == b"c"


def test_a_merge_never_writes_two_families_into_one_table() -> None:
    compaction = CompactionOptions(l0_compaction_trigger=2, table_families=(b"D", b"MC"))
    opts = EngineOptions(memtable_bytes=8 * 1024, background=False, compaction=compaction)
    with Engine.open("/db", opts, fs=MemFS()) as engine:
        _log_like_writes(engine, 1000)
        engine.compact()
        # (A flushed table holds both families; the first ones move down whole while
        # L1 is empty. Once a merge has filled L1, every L0 table overlaps its
        # checkpoint table and is merged: L1 holds only merge outputs.)
        l1 = engine.version.levels[1]
        assert len(l1) >= 2
        for table in l1:
            assert table.min_key[:1] == table.max_key[:1], table

