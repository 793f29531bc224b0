"""Nothing acknowledged is lost silently: damaged or missing stored files are refused at
open (naming the file), quarantined when asked, found by the scrub, and a real torn tail
(bytes after the last fsync, after a crash) is still cut and logged with its size."""

from __future__ import annotations

import logging
import posixpath

import pytest

from sentinel.broker.group_events import OffsetAndMetadata
from sentinel.broker.meta_store import MetaStore
from sentinel.broker.topic_config import TopicConfig
from sentinel.broker.topics import OfflinePartition, TopicRegistry
from sentinel.clock import ManualClock
from sentinel.errors import (
    CorruptionError,
    DamagedDataError,
    DiskError,
    MissingFileError,
    StorageUnavailableError,
)
from sentinel.fs import MemFS
from sentinel.record import build_batch
from sentinel.storage import clean_marker
from sentinel.storage.engine import Engine
from sentinel.storage.files import TABLE_SUFFIX, WAL_SUFFIX, join
from sentinel.storage.options import EngineOptions
from sentinel.storage.scrub import ScrubReport, scrub_engine
from sentinel.storage.wal import WalOptions
from sentinel.storage.wal_format import FRAME_HEADER_SIZE, HEADER_SIZE, scan_entries

DB = "/db"
# Small segments, no flush on close: the data stays in several WAL segments.
OPTS = EngineOptions(
    background=False, flush_on_close=False, wal=WalOptions(segment_bytes=400)
)
KEYS = {b"key%03d" % i: b"value-%03d" % i * 3 for i in range(40)}


def build(*, clean: bool) -> MemFS:
    fs = MemFS()
    engine = Engine.open(DB, OPTS, fs=fs)
    for key, value in KEYS.items():
        engine.put(key, value)
    if clean:
        engine.close()
    else:
        fs.crash()  # everything was fsynced (sync always): nothing acknowledged is lost
    return fs


def segments(fs: MemFS) -> list[str]:
    return sorted(n for n in fs.listdir(DB) if n.endswith(WAL_SUFFIX))


def rewrite(fs: MemFS, name: str, data: bytes) -> None:
    handle = fs.create(join(DB, name))
    handle.write(data)
    handle.sync()
    handle.close()


def flip(fs: MemFS, name: str, position: int) -> None:
    data = bytearray(fs.read_all(join(DB, name)))
    data[position] ^= 0x40
    rewrite(fs, name, bytes(data))


def assert_refused(fs: MemFS, name: str) -> None:
    with pytest.raises(DiskError) as caught:
        Engine.open(DB, OPTS, fs=fs).close()
    assert name in str(caught.value)
    assert "\n" not in str(caught.value)


def assert_everything(fs: MemFS) -> None:
    with Engine.open(DB, OPTS, fs=fs) as engine:
        assert dict(engine.scan()) == KEYS


def frame_starts(data: bytes) -> list[int]:
    starts, offset = [], HEADER_SIZE
    while offset < len(data):
        starts.append(offset)
        offset += FRAME_HEADER_SIZE + int.from_bytes(data[offset : offset + 4], "little")
    return starts


def regions(data: bytes) -> list[int]:
    """Positions in every region: header, each frame's header, each frame's payload."""
    positions = list(range(HEADER_SIZE))
    offset = HEADER_SIZE
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "little")
        positions += range(offset, offset + FRAME_HEADER_SIZE)
        body = offset + FRAME_HEADER_SIZE
        positions += sorted({body, body + length // 2, body + length - 1})
        offset = body + length
    return positions


def test_the_data_spans_several_wal_segments() -> None:
    fs = build(clean=True)
    assert len(segments(fs)) >= 3
    assert clean_marker.CLEAN_NAME in fs.listdir(DB)
    with Engine.open(DB, OPTS, fs=fs) as engine:
        assert clean_marker.CLEAN_NAME not in fs.listdir(DB)  # removed before any write
        assert dict(engine.scan()) == KEYS
    assert clean_marker.CLEAN_NAME in fs.listdir(DB)


@pytest.mark.parametrize("clean", [True, False], ids=["clean-shutdown", "crash"])
def test_a_flipped_byte_in_any_region_of_any_segment_is_refused(clean: bool) -> None:
    names = segments(build(clean=clean))
    for which in (0, len(names) // 2, len(names) - 1):
        name = names[which]
        data = build(clean=clean).read_all(join(DB, name))
        _payloads, _end, problem = scan_entries(data)
        assert problem is None
        for position in regions(data):
            fs = build(clean=clean)
            flip(fs, name, position)
            assert_refused(fs, name)


def test_after_a_crash_a_flip_in_the_last_frame_is_refused_not_cut() -> None:
    """A whole last frame with a changed byte is not what a crash leaves (a prefix, or
    unwritten sectors): under sync always it was acknowledged, so it is refused at every
    position, as any other damage is, and nothing is truncated."""
    probe = build(clean=False)
    name = segments(probe)[-1]
    data = probe.read_all(join(DB, name))
    for position in range(frame_starts(data)[-1], len(data)):
        fs = build(clean=False)
        flip(fs, name, position)
        flipped = fs.read_all(join(DB, name))
        assert_refused(fs, name)
        assert fs.read_all(join(DB, name)) == flipped


@pytest.mark.parametrize("clean", [True, False], ids=["clean-shutdown", "crash"])
def test_a_missing_segment_is_refused(clean: bool) -> None:
    names = segments(build(clean=clean))
    doomed = names[:-1] if not clean else names  # after a crash the newest may be torn
    for name in doomed:
        fs = build(clean=clean)
        fs.remove(join(DB, name))
        assert_refused(fs, name)


@pytest.mark.parametrize("clean", [True, False], ids=["clean-shutdown", "crash"])
def test_a_truncated_or_emptied_segment_is_refused(clean: bool) -> None:
    names = segments(build(clean=clean))
    checked = names if clean else names[:-1]
    for name in checked:
        data = build(clean=clean).read_all(join(DB, name))
        sizes = [0, HEADER_SIZE // 2, HEADER_SIZE + 4, len(data) - 3]
        if clean:  # at a frame boundary: only the clean-shutdown record tells
            sizes += [HEADER_SIZE, frame_starts(data)[1]]
        for size in sizes:
            fs = build(clean=clean)
            rewrite(fs, name, data[:size])
            assert_refused(fs, name)


def test_a_torn_tail_after_a_crash_recovers_everything_acknowledged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bytes written after the last fsync: a whole frame's prefix at every length."""
    probe = build(clean=False)
    name = segments(probe)[-1]
    torn = b"\x40\x00\x00\x00\x01" + b"\x07" * 40  # a frame header promising 64 bytes
    for cut in range(1, len(torn)):
        fs = build(clean=False)
        rewrite(fs, name, fs.read_all(join(DB, name)) + torn[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert_everything(fs)
        assert f"cut a torn tail of {cut} bytes from {name}" in caplog.text


def test_a_torn_create_of_the_newest_segment_is_a_note_to_the_scrub_as_at_open() -> None:
    """A new segment whose header write was torn (a crash with fewer bytes than a
    header, whatever they are): the start removes it, and ``--verify`` notes it rather
    than calling it damage (it used to, unless the bytes were zeros)."""
    probe = build(clean=False)
    header = probe.read_all(join(DB, segments(probe)[-1]))[:HEADER_SIZE]
    number = int(segments(probe)[-1].removesuffix(WAL_SUFFIX)) + 1
    name = f"{number:020d}{WAL_SUFFIX}"
    for cut in range(HEADER_SIZE):
        fs = build(clean=False)
        rewrite(fs, name, header[:cut])
        report = ScrubReport()
        scrub_engine(fs, DB, report)
        assert report.damaged == [], (cut, report)
        assert_everything(fs)


def test_after_a_clean_shutdown_a_tail_is_damage_not_a_torn_write() -> None:
    fs = build(clean=True)
    name = segments(fs)[-1]
    rewrite(fs, name, fs.read_all(join(DB, name)) + b"\x40\x00\x00")
    assert_refused(fs, name)


# ------------------------------------------------- tables and value segments


def build_tables(value_bytes: int = 10) -> MemFS:
    fs = MemFS()
    options = EngineOptions(background=False, value_separation_bytes=64)
    with Engine.open(DB, options, fs=fs) as engine:
        for i in range(30):
            engine.put(b"k%03d" % i, bytes([i]) * value_bytes)
    return fs


def test_a_missing_table_is_refused_naming_it() -> None:
    fs = build_tables()
    table = next(n for n in fs.listdir(DB) if n.endswith(TABLE_SUFFIX))
    fs.remove(join(DB, table))
    with pytest.raises(MissingFileError, match=table):
        Engine.open(DB, fs=fs)


def test_a_damaged_table_footer_index_or_meta_is_refused_at_open() -> None:
    fs = build_tables()
    table = next(n for n in fs.listdir(DB) if n.endswith(TABLE_SUFFIX))
    size = fs.file_size(join(DB, table))
    for back in (1, 20, 48, 80):  # footer, then the meta and index blocks before it
        fs = build_tables()
        data = bytearray(fs.read_all(join(DB, table)))
        data[size - back] ^= 0xFF
        rewrite(fs, table, bytes(data))
        with pytest.raises(CorruptionError, match=table):
            Engine.open(DB, fs=fs)


def value_segment(fs: MemFS) -> str:
    """The WAL segment the tables' value pointers point into."""
    with Engine.open(DB, fs=fs) as engine:
        lo = min(engine.pointer_segment_numbers())
    return f"{lo:020d}{WAL_SUFFIX}"


def test_a_missing_or_headless_value_segment_is_refused_at_open() -> None:
    name = value_segment(build_tables(200))
    fs = build_tables(200)
    fs.remove(join(DB, name))
    with pytest.raises(MissingFileError, match=name):
        Engine.open(DB, fs=fs)
    for position in (0, 8, 19):
        fs = build_tables(200)
        flip(fs, name, position)
        with pytest.raises(CorruptionError, match=name):
            Engine.open(DB, fs=fs)
    fs = build_tables(200)
    rewrite(fs, name, fs.read_all(join(DB, name))[:-10])  # truncated after a clean close
    with pytest.raises(CorruptionError, match=name):
        Engine.open(DB, fs=fs)


def test_a_flipped_value_is_corruption_on_read_and_found_by_the_scrub() -> None:
    name = value_segment(build_tables(200))
    fs = build_tables(200)
    flip(fs, name, fs.file_size(join(DB, name)) // 2)
    report = ScrubReport()
    scrub_engine(fs, DB, report)
    assert [d.path for d in report.damaged] == [join(DB, name)]
    with Engine.open(DB, fs=fs) as engine, pytest.raises(CorruptionError, match=name):
        dict(engine.scan())


def test_the_scrub_of_a_clean_engine_finds_nothing_and_changes_nothing() -> None:
    fs = build(clean=True)
    before = {n: fs.read_all(join(DB, n)) for n in fs.listdir(DB) if n != "LOCK"}
    report = ScrubReport()
    scrub_engine(fs, DB, report)
    assert report.damaged == []
    assert report.files > 3
    assert {n: fs.read_all(join(DB, n)) for n in fs.listdir(DB) if n != "LOCK"} == before


def test_the_scrub_tells_a_torn_tail_from_a_changed_last_frame() -> None:
    """``--verify`` agrees with the start: a prefix of a frame is a torn tail (noted),
    a flipped byte in the whole last frame is damage."""
    fs = build(clean=False)
    name = segments(fs)[-1]
    data = fs.read_all(join(DB, name))
    rewrite(fs, name, data + b"\x40\x00\x00\x00\x01")  # a frame header promising 64 bytes
    torn = ScrubReport()
    scrub_engine(fs, DB, torn)
    assert torn.damaged == [] and [n.path for n in torn.notes] == [join(DB, name)]
    fs = build(clean=False)
    flip(fs, name, len(data) - 1)
    changed = ScrubReport()
    scrub_engine(fs, DB, changed)
    assert [d.path for d in changed.damaged] == [join(DB, name)]
    assert "changed after they were written" in changed.damaged[0].detail


# ------------------------------------------------------ partitions, meta store


DATA = "/data"


def registry(
    fs: MemFS, meta: MetaStore, *, skip: bool = False, flush_on_close: bool = False
) -> TopicRegistry:
    """The broker's registry on ``fs``; by default a close leaves the WAL unflushed (the
    damage these tests make is in the WAL)."""
    return TopicRegistry(
        fs,
        DATA,
        meta,
        clock=ManualClock(),
        engine_options=EngineOptions(background=False, flush_on_close=flush_on_close),
        default_config=TopicConfig(),
        skip_damaged=skip,
    )


def two_partitions(*, flush_on_close: bool = False) -> MemFS:
    """Topic ``t`` of 2 partitions, one batch each, closed cleanly."""
    fs = MemFS()
    meta = MetaStore.open(fs, posixpath.join(DATA, "meta"))
    topics = registry(fs, meta, flush_on_close=flush_on_close)
    topics.open()
    topic = topics.create("t", 2)
    for index in range(2):
        topic.partition(index).append(build_batch([(None, b"v%d" % index, (), 1)]))
    topics.close()
    meta.close()
    return fs


def partition_wal(fs: MemFS, index: int) -> str:
    directory = posixpath.join(DATA, "topics", "t", str(index))
    name = max(n for n in fs.listdir(directory) if n.endswith(WAL_SUFFIX))
    return posixpath.join(directory, name)


def damage_partition_1(fs: MemFS) -> str:
    path = partition_wal(fs, 1)
    data = bytearray(fs.read_all(path))
    data[HEADER_SIZE + 2] ^= 0x01
    handle = fs.create(path)
    handle.write(bytes(data))
    handle.sync()
    handle.close()
    return path


def test_a_damaged_partition_refuses_the_start_naming_partition_and_file() -> None:
    fs = two_partitions()
    path = damage_partition_1(fs)
    meta = MetaStore.open(fs, posixpath.join(DATA, "meta"))
    with pytest.raises(DamagedDataError) as caught:
        registry(fs, meta).open()
    assert caught.value.quarantinable
    assert "partition t-1" in str(caught.value) and path in str(caught.value)
    meta.close()


def test_skip_damaged_leaves_the_partition_offline_and_the_others_serving() -> None:
    fs = two_partitions()
    damage_partition_1(fs)
    meta = MetaStore.open(fs, posixpath.join(DATA, "meta"))
    topics = registry(fs, meta, skip=True)
    topics.open()
    topic = topics.get("t")
    assert isinstance(topic.partitions[1], OfflinePartition)
    with pytest.raises(StorageUnavailableError, match="partition t-1") as caught:
        topic.partition(1)
    assert caught.value.partition == "t-1"
    assert len(topic.partition(0).read(0, 1 << 20).batches) == 1
    topics.close()
    meta.close()


def test_a_clean_partition_is_checked_at_start_without_being_opened() -> None:
    fs = two_partitions()
    meta = MetaStore.open(fs, posixpath.join(DATA, "meta"))
    topics = registry(fs, meta)
    topics.open()
    log = topics.get("t").partition(1)
    assert not log.opened and log.log_end_offset == 1 and log.high_watermark == 1
    assert clean_marker.CLEAN_NAME in fs.listdir(posixpath.dirname(partition_wal(fs, 1)))
    assert len(log.read(0, 1 << 20).batches) == 1  # the first use opens it
    assert log.opened
    topics.close()
    meta.close()


@pytest.mark.parametrize("damage", ["truncate", "extend", "delete"])
def test_a_clean_partition_with_a_changed_segment_refuses_the_start(damage: str) -> None:
    fs = two_partitions()
    path = partition_wal(fs, 1)
    data = fs.read_all(path)
    if damage == "delete":
        fs.remove(path)
    else:
        handle = fs.create(path)
        handle.write(data[:-3] if damage == "truncate" else data + b"\0")
        handle.sync()
        handle.close()
    meta = MetaStore.open(fs, posixpath.join(DATA, "meta"))
    with pytest.raises(DamagedDataError) as caught:
        registry(fs, meta).open()
    assert "partition t-1" in str(caught.value) and path in str(caught.value)
    meta.close()


@pytest.mark.parametrize("what", ["directory", "contents"])
def test_a_partition_whose_data_is_gone_is_refused_never_recreated(what: str) -> None:
    fs = two_partitions()
    directory = posixpath.join(DATA, "topics", "t", "1")
    if what == "directory":
        fs.remove_tree(directory)
    else:
        for name in fs.listdir(directory):
            fs.remove(posixpath.join(directory, name))
    meta = MetaStore.open(fs, posixpath.join(DATA, "meta"))
    with pytest.raises(DamagedDataError, match="partition t-1"):
        registry(fs, meta).open()
    assert not fs.exists(posixpath.join(directory, "CURRENT"))
    meta.close()


def test_a_read_of_damaged_stored_data_names_the_partition() -> None:
    fs = MemFS()
    meta = MetaStore.open(fs, posixpath.join(DATA, "meta"))
    topics = registry(fs, meta)
    topics.open()
    log = topics.create("t", 1).partition(0)
    log.append(build_batch([(None, b"x" * 8000, (), 1)]))  # value-separated
    log.engine.flush()
    path = partition_wal(fs, 0)
    directory = posixpath.dirname(path)
    pointed = min(n for n in fs.listdir(directory) if n.endswith(WAL_SUFFIX))
    fs.remove(posixpath.join(directory, pointed))
    with pytest.raises(StorageUnavailableError, match="partition t-0") as caught:
        log.read(0, 1 << 20)
    assert pointed in str(caught.value)
    topics.close()
    meta.close()


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_meta_store_never_rolls_committed_offsets_back(damage: str) -> None:
    """Offsets 100/200/300 then 1000/1100/1200 were committed: a damaged WAL must not
    bring the older ones back, it must stop the open naming the file."""
    fs = MemFS()
    meta_dir = posixpath.join(DATA, "meta")
    meta = MetaStore.open(fs, meta_dir)
    for offsets in ((100, 200, 300), (1000, 1100, 1200)):
        for partition, offset in enumerate(offsets):
            meta.commit_offsets("g", {("t", partition): OffsetAndMetadata(offset, "")})
    if damage == "flip":
        fs.crash()  # the commits are in the WAL, one entry each
    else:
        meta.close()
    name = max(n for n in fs.listdir(meta_dir) if n.endswith(WAL_SUFFIX))
    path = posixpath.join(meta_dir, name)
    data = fs.read_all(path)
    if damage == "flip":
        corrupt = bytearray(data)
        corrupt[frame_starts(data)[-2] + FRAME_HEADER_SIZE + 2] ^= 0x01
        data = bytes(corrupt)
    elif damage == "truncate":
        data = data[:-3]
    if damage == "delete":
        fs.remove(path)
    else:
        handle = fs.create(path)
        handle.write(data)
        handle.sync()
        handle.close()
    with pytest.raises(DiskError, match=name):
        MetaStore.open(fs, meta_dir)
