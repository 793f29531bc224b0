"""A damaged MANIFEST is named as the cause, never taken for a crash's torn tail.

After a clean stop the clean-shutdown record pins the live manifest (CURRENT's choice,
its size, a checksum of its tail): a manifest cut, grown, changed at its end or replaced
is refused by the cheap check at start, by ``Engine.open`` and by ``--verify``. After a
crash, a manifest whose last edit is cut while the state before that edit needs a file
that is gone is damage too: a real crash never deletes a file before the edit that
supersedes it is durable. And every damage of the meta store refuses its open."""

from __future__ import annotations

import posixpath

import pytest

import test_damage as damage_tests
from sentinel.broker.meta_store import MetaStore
from sentinel.broker.storage_setup import open_meta
from sentinel.broker.topics import OfflinePartition, TopicRegistry
from sentinel.broker.verify import verify_data_dir
from sentinel.cli.server import refusal_line
from sentinel.errors import CorruptionError, DamagedDataError, DiskError
from sentinel.fs import MemFS
from sentinel.storage import clean_marker
from sentinel.storage.engine import Engine
from sentinel.storage.files import (
    CURRENT_NAME,
    MANIFEST_PREFIX,
    TABLE_SUFFIX,
    join,
    manifest_name,
)
from sentinel.storage.options import EngineOptions

DB = "/db"
OPTS = EngineOptions(background=False)
KEYS = {b"key%03d" % i: b"value-%03d" % i * 3 for i in range(40)}


def write(fs: MemFS, path: str, data: bytes) -> None:
    handle = fs.create(path)
    handle.write(data)
    handle.sync()
    handle.close()


def manifest_path(fs: MemFS, directory: str) -> str:
    (name,) = [n for n in fs.listdir(directory) if n.startswith(MANIFEST_PREFIX)]
    return join(directory, name)


def clean_engine() -> MemFS:
    """An engine with tables (so its manifest has edits), closed cleanly."""
    fs = MemFS()
    with Engine.open(DB, OPTS, fs=fs) as engine:
        for key, value in KEYS.items():
            engine.put(key, value)
        engine.flush()
        engine.put(b"zz", b"after the flush")
    return fs


def damage_manifest(fs: MemFS, path: str, how: str) -> None:
    data = fs.read_all(path)
    if how == "cut":
        write(fs, path, data[:-1])
    elif how == "grown":
        write(fs, path, data + b"\0")
    elif how == "flipped":
        write(fs, path, data[:-1] + bytes([data[-1] ^ 0x01]))
    elif how == "replaced":  # CURRENT names another (valid) manifest
        number = int(posixpath.basename(path).removeprefix(MANIFEST_PREFIX)) + 100
        write(fs, join(posixpath.dirname(path), manifest_name(number)), data)
        current = (manifest_name(number) + "\n").encode()
        write(fs, join(posixpath.dirname(path), CURRENT_NAME), current)
        fs.remove(path)


DAMAGE = ["cut", "grown", "flipped", "replaced"]


# ------------------------------------------------- the clean record pins the manifest


def test_a_clean_record_round_trips_its_manifest_pin() -> None:
    fs = clean_engine()
    record = clean_marker.check(fs, DB)
    assert record is not None and record.manifest is not None
    path = manifest_path(fs, DB)
    assert manifest_name(record.manifest.number) == posixpath.basename(path)
    assert record.manifest.size == fs.file_size(path)
    encoded = clean_marker.encode(record)
    assert clean_marker.decode_record(encoded, "x") == record
    for cut in range(1, 21):  # a record cut inside the pin is corruption, not a v2 record
        with pytest.raises(CorruptionError):
            clean_marker.decode_record(encoded[:-4 - cut] + encoded[-4:], "x")


def test_a_version_2_record_without_a_pin_is_still_accepted() -> None:
    fs = clean_engine()
    record = clean_marker.read_record(fs, DB)
    assert record is not None
    old = clean_marker.CleanRecord(record.segments, record.tables, record.log_number, b"p")
    encoded = clean_marker.encode(old)
    assert encoded[4:6] == b"\x02\x00"  # the version-2 layout, byte for byte
    write(fs, join(DB, clean_marker.CLEAN_NAME), encoded)
    checked = clean_marker.check(fs, DB)
    assert checked is not None and checked.manifest is None and checked.payload == b"p"
    with Engine.open(DB, OPTS, fs=fs) as engine:
        assert engine.get(b"key007") == KEYS[b"key007"]


@pytest.mark.parametrize("how", DAMAGE)
def test_after_a_clean_stop_a_changed_manifest_is_refused_naming_it(how: str) -> None:
    fs = clean_engine()
    path = manifest_path(fs, DB)
    damage_manifest(fs, path, how)
    named = join(DB, CURRENT_NAME) if how == "replaced" else path
    with pytest.raises(DiskError) as checked:
        clean_marker.check(fs, DB)
    assert named in str(checked.value) and "clean shutdown" in str(checked.value)
    before = {n: fs.read_all(join(DB, n)) for n in fs.listdir(DB)}
    with pytest.raises(DiskError) as opened:
        Engine.open(DB, OPTS, fs=fs)
    assert named in str(opened.value) or path in str(opened.value)
    assert {n: fs.read_all(join(DB, n)) for n in fs.listdir(DB) if n != "LOCK"} == {
        n: d for n, d in before.items() if n != "LOCK"
    }  # refused before anything was written


def test_an_engine_marked_clean_while_idle_pins_its_manifest_too() -> None:
    fs = MemFS()
    engine = Engine.open(DB, EngineOptions(background=False, hold_lock=False), fs=fs)
    for key, value in KEYS.items():
        engine.put(key, value)
    engine.flush()
    assert engine.suspend_files() and engine.mark_clean(b"s")
    fs.crash()
    damage_manifest(fs, manifest_path(fs, DB), "cut")
    with pytest.raises(CorruptionError, match=MANIFEST_PREFIX):
        clean_marker.check(fs, DB)


# ----------------------------------- a cut last edit whose older state needs a gone file


def crashed_after_a_flush() -> tuple[MemFS, str]:
    """A crash after a flush whose manifest edit moved the log number past a segment
    that was then deleted (as the flush does)."""
    fs = MemFS()
    engine = Engine.open(DB, OPTS, fs=fs)
    for key, value in KEYS.items():
        engine.put(key, value)
    engine.flush()
    fs.crash()
    assert "00000000000000000001.wal" not in fs.listdir(DB)
    return fs, manifest_path(fs, DB)


def test_a_cut_last_edit_whose_older_state_needs_a_deleted_wal_blames_the_manifest() -> None:
    fs, path = crashed_after_a_flush()
    write(fs, path, fs.read_all(path)[:-1])
    with pytest.raises(CorruptionError) as caught:
        Engine.open(DB, OPTS, fs=fs)
    text = str(caught.value)
    assert caught.value.path == path
    assert "torn tail" in text and "00000000000000000001.wal" in text and "\n" not in text


def test_a_cut_last_edit_whose_older_state_needs_a_deleted_table_blames_the_manifest() -> None:
    fs = MemFS()
    engine = Engine.open(DB, OPTS, fs=fs)
    engine.put(b"a", b"old")
    engine.flush()
    (dropped,) = [n for n in fs.listdir(DB) if n.endswith(TABLE_SUFFIX)]
    engine.put(b"m", b"new")
    engine.flush()
    assert engine.drop_tables_below(b"b") > 0  # one edit removes it, then it is deleted
    fs.crash()
    assert dropped not in fs.listdir(DB)
    path = manifest_path(fs, DB)
    write(fs, path, fs.read_all(path)[:-1])
    with pytest.raises(CorruptionError) as caught:
        Engine.open(DB, OPTS, fs=fs)
    assert caught.value.path == path and dropped in str(caught.value)


def test_a_genuine_torn_edit_still_recovers() -> None:
    """The crash a torn tail stands for: the edit was cut, nothing it superseded was
    deleted, so the older state is whole and nothing is lost."""
    fs, path = crashed_after_a_flush()
    good = fs.read_all(path)
    write(fs, path, good + good[16:][:30])  # a half-written record after the last one
    with Engine.open(DB, OPTS, fs=fs) as engine:
        assert dict(engine.scan()) == KEYS


# ---------------------------------------------------------- the broker: start, verify


DATA = damage_tests.DATA


def registry(fs: MemFS, meta: MetaStore, *, skip: bool = False) -> TopicRegistry:
    return damage_tests.registry(fs, meta, skip=skip, flush_on_close=True)


def two_partitions() -> MemFS:
    return damage_tests.two_partitions(flush_on_close=True)


@pytest.mark.parametrize("how", DAMAGE)
def test_a_clean_partition_with_a_changed_manifest_refuses_the_start(how: str) -> None:
    fs = two_partitions()
    directory = posixpath.join(DATA, "topics", "t", "1")
    path = manifest_path(fs, directory)
    damage_manifest(fs, path, how)
    named = join(directory, CURRENT_NAME) if how == "replaced" else path
    meta = MetaStore.open(fs, posixpath.join(DATA, "meta"))
    with pytest.raises(DamagedDataError) as caught:
        registry(fs, meta).open()
    assert "partition t-1" in str(caught.value) and named in str(caught.value)
    topics = registry(fs, meta, skip=True)
    topics.open()
    assert isinstance(topics.get("t").partitions[1], OfflinePartition)
    topics.close()
    meta.close()
    report = verify_data_dir(fs, DATA)
    assert [d.path for d in report.damaged] == [named]


def test_verify_blames_a_cut_manifest_not_the_wal_its_older_state_needs() -> None:
    fs = two_partitions()
    meta_dir = posixpath.join(DATA, "meta")
    meta = MetaStore.open(fs, meta_dir)
    meta._engine.flush()  # a flush: it deletes the meta store's WAL 1
    fs.crash()
    path = manifest_path(fs, meta_dir)
    write(fs, path, fs.read_all(path)[:-1])
    report = verify_data_dir(fs, DATA)
    assert [d.path for d in report.damaged] == [path]
    assert "torn tail" in report.damaged[0].detail
    with pytest.raises(DamagedDataError) as caught:
        open_meta(fs, meta_dir)
    assert refusal_line(caught.value).startswith(f"data damaged: meta store: corruption in {path}")


def test_a_flipped_meta_store_table_block_refuses_its_open_with_the_prefix() -> None:
    fs = two_partitions()
    meta_dir = posixpath.join(DATA, "meta")
    meta = MetaStore.open(fs, meta_dir)
    meta._engine.flush()  # the topic definition in a table
    meta.close()
    (table,) = [n for n in fs.listdir(meta_dir) if n.endswith(TABLE_SUFFIX)]
    data = bytearray(fs.read_all(join(meta_dir, table)))
    data[10] ^= 0xFF  # block 0, read by the first scan
    write(fs, join(meta_dir, table), bytes(data))
    with pytest.raises(DamagedDataError) as caught:
        open_meta(fs, meta_dir)
    line = refusal_line(caught.value)
    assert line.startswith("data damaged: meta store: corruption in") and table in line
