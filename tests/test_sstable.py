"""SSTables against a sorted-list oracle; every region corrupted; the writer's contract."""

from __future__ import annotations

import bisect
import contextlib
import random
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.codec.crc import crc32c
from sentinel.errors import (
    ClosedError,
    CorruptionError,
    InvalidArgumentError,
    StateError,
    UnsupportedFormatError,
)
from sentinel.fs import FS, File, MemFS, OsFS, SimulatedCrash
from sentinel.storage.block import IndexBlock
from sentinel.storage.block_cache import BlockCache
from sentinel.storage.entry import ABSENT, Absent, Entry, EntrySource
from sentinel.storage.sstable import (
    FOOTER_SIZE,
    Footer,
    MetaBlock,
    TableOptions,
    TableReader,
    TableWriter,
    write_table,
)
from sentinel.storage.value_log import ValuePointer

PATH = "/t/00000000000000000001.sst"


def memfs() -> MemFS:
    fs = MemFS()
    fs.makedirs("/t")
    return fs


class Oracle:
    """A sorted list and bisect: what every lookup must answer."""

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        self.keys = [k for k, _ in entries]

    def get(self, key: bytes) -> bytes | None | Absent:
        i = bisect.bisect_left(self.keys, key)
        if i < len(self.keys) and self.keys[i] == key:
            return self.entries[i][1]
        return ABSENT

    def floor(self, key: bytes, strict: bool) -> Entry | None:
        if strict:
            i = bisect.bisect_left(self.keys, key) - 1
        else:
            i = bisect.bisect_right(self.keys, key) - 1
        return self.entries[i] if i >= 0 else None

    def range(self, start: bytes | None, end: bytes | None) -> list[Entry]:
        return [
            (k, v)
            for k, v in self.entries
            if (start is None or k >= start) and (end is None or k < end)
        ]


def check_against_oracle(reader: TableReader, entries: list[Entry], probes: list[bytes]) -> None:
    oracle = Oracle(entries)
    assert list(reader.entries()) == entries
    for key in oracle.keys + probes:
        assert reader.get(key) == oracle.get(key), key
        assert reader.floor(key) == oracle.floor(key, False), key
        assert reader.floor(key, strict=True) == oracle.floor(key, True), key
        if oracle.get(key) is not ABSENT:
            assert reader.may_contain(key)
    bounds: list[bytes | None] = [None, *probes[:6], *oracle.keys[:3], *oracle.keys[-2:]]
    for start in bounds:
        for end in bounds:
            assert list(reader.entries(start, end)) == oracle.range(start, end), (start, end)


# -- round trips


entry_lists = st.dictionaries(
    st.binary(max_size=6),
    st.none() | st.binary(max_size=40) | st.binary(min_size=300, max_size=700),
    min_size=1,
    max_size=80,
).map(lambda d: sorted(d.items()))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entry_lists,
    st.lists(st.binary(max_size=7), max_size=12),
    st.sampled_from([24, 100, 512, 4096]),
    st.sampled_from([0, 3, 10]),
    st.booleans(),
    st.sampled_from([None, 0, 2000, 1 << 20]),
)
def test_round_trip_against_oracle(
    entries: list[Entry],
    probes: list[bytes],
    block_size: int,
    bloom_bits: int,
    prefix: bool,
    cache_bytes: int | None,
) -> None:
    fs = memfs()
    options = TableOptions(block_size, bloom_bits, prefix)
    meta = write_table(fs, PATH, 1, entries, options)
    assert meta.entry_count == len(entries)
    assert (meta.min_key, meta.max_key) == (entries[0][0], entries[-1][0])
    assert meta.size == fs.file_size(PATH)
    cache = None if cache_bytes is None else BlockCache(cache_bytes)
    reader = TableReader.open(fs, PATH, 1, cache)
    assert reader.meta == meta
    assert reader.properties.tombstone_count == sum(v is None for _, v in entries)
    check_against_oracle(reader, entries, probes)
    reader.verify()
    reader.close()


def test_reader_is_an_entry_source() -> None:
    fs = memfs()
    write_table(fs, PATH, 1, [(b"a", b"1")])
    source: EntrySource = TableReader.open(fs, PATH, 1)
    assert source.get(b"a") == b"1"


def test_get_present_absent_and_tombstone() -> None:
    fs = memfs()
    write_table(fs, PATH, 1, [(b"b", b"1"), (b"d", None), (b"f", b"")])
    reader = TableReader.open(fs, PATH, 1, BlockCache())
    assert reader.get(b"b") == b"1"
    assert reader.get(b"d") is None
    assert reader.get(b"f") == b""
    for absent in (b"", b"a", b"c", b"e", b"g", b"bb"):
        assert reader.get(absent) is ABSENT
    assert not reader.may_contain(b"a")  # outside the key range: no filter needed
    assert not reader.may_contain(b"z")


def test_floor_at_every_block_boundary() -> None:
    fs = memfs()
    entries: list[Entry] = [
        ((3 * i).to_bytes(2, "big"), None if i % 5 == 0 else b"v%d" % i) for i in range(1, 200)
    ]
    write_table(fs, PATH, 1, entries, TableOptions(block_size=48))
    reader = TableReader.open(fs, PATH, 1)
    assert reader.properties.block_count > 40
    probes = [i.to_bytes(2, "big") for i in range(0, 605)]
    probes += [k + b"\x00" for k, _ in entries] + [k[:1] for k, _ in entries] + [b"", b"\xff" * 3]
    oracle = Oracle(entries)
    for key in probes:
        assert reader.floor(key) == oracle.floor(key, False), key
        assert reader.floor(key, strict=True) == oracle.floor(key, True), key


def test_large_values_get_blocks_of_their_own() -> None:
    fs = memfs()
    rng = random.Random(3)
    entries: list[Entry] = [
        (i.to_bytes(8, "big"), rng.randbytes(16 * 1024 if i % 3 else 10)) for i in range(30)
    ]
    write_table(fs, PATH, 1, entries)
    reader = TableReader.open(fs, PATH, 1, BlockCache())
    assert reader.properties.block_count >= 20
    check_against_oracle(reader, entries, [b"\x00", b"\xff" * 9])
    reader.verify()


def test_single_entry_table() -> None:
    fs = memfs()
    meta = write_table(fs, PATH, 9, [(b"only", b"one")])
    assert (meta.file_number, meta.min_key, meta.max_key, meta.entry_count) == (
        9, b"only", b"only", 1,
    )  # fmt: skip
    reader = TableReader.open(fs, PATH, 9)
    check_against_oracle(reader, [(b"only", b"one")], [b"", b"onl", b"onlyy", b"z"])


def test_offset_keys_many_blocks_without_bloom() -> None:
    fs = memfs()
    entries: list[Entry] = [(i.to_bytes(8, "big"), b"x" * (i % 50)) for i in range(0, 3000, 2)]
    write_table(fs, PATH, 1, entries, TableOptions(bloom_bits_per_key=0))
    reader = TableReader.open(fs, PATH, 1)
    probes = [i.to_bytes(8, "big") for i in range(1, 3002, 97)]
    check_against_oracle(reader, entries, probes)


# -- IO: one block read per get, bloom skips, readahead


class CountingFile:
    def __init__(self, inner: File, owner: CountingFS) -> None:
        self._inner = inner
        self._owner = owner

    @property
    def path(self) -> str:
        return self._inner.path

    def pread(self, offset: int, size: int) -> bytes:
        self._owner.preads += 1
        return self._inner.pread(offset, size)

    def size(self) -> int:
        return self._inner.size()

    def close(self) -> None:
        self._inner.close()


class CountingFS:
    def __init__(self, inner: FS) -> None:
        self.inner = inner
        self.preads = 0

    def open_read(self, path: str) -> CountingFile:
        return CountingFile(self.inner.open_read(path), self)


def open_counting(fs: FS, cache: BlockCache | None = None) -> tuple[TableReader, CountingFS]:
    counting = CountingFS(fs)
    reader = TableReader.open(counting, PATH, 1, cache)  # type: ignore[arg-type]
    counting.preads = 0
    return reader, counting


def test_get_reads_one_block_and_then_hits_the_cache() -> None:
    fs = memfs()
    write_table(fs, PATH, 1, [(i.to_bytes(8, "big"), b"v" * 100) for i in range(0, 20_000, 2)])
    cache = BlockCache()
    reader, counting = open_counting(fs, cache)
    for i in range(0, 20_000, 202):
        assert reader.get(i.to_bytes(8, "big")) == b"v" * 100
    reads = counting.preads
    assert reads == 100  # blocks hold ~36 entries: 100 distinct blocks
    for i in range(0, 20_000, 202):
        reader.get(i.to_bytes(8, "big"))
    assert counting.preads == reads
    assert cache.hits == 100


def test_absent_keys_mostly_skip_io() -> None:
    fs = memfs()
    write_table(fs, PATH, 1, [(i.to_bytes(8, "big"), b"v") for i in range(0, 20_000, 2)])
    reader, counting = open_counting(fs)
    for i in range(1, 20_000, 2):  # odd keys: inside the range, never added
        assert reader.get(i.to_bytes(8, "big")) is ABSENT
    assert counting.preads < 10_000 * 0.02


def test_scan_reads_ahead() -> None:
    fs = memfs()
    entries: list[Entry] = [(i.to_bytes(8, "big"), bytes([i]) * 16384) for i in range(64)]
    write_table(fs, PATH, 1, entries)
    reader, counting = open_counting(fs, BlockCache())
    assert list(reader.entries()) == entries
    assert 2 <= counting.preads <= 10  # 64 blocks
    counting.preads = 0
    scan = reader.entries(entries[10][0])
    assert next(scan) == entries[10]
    assert counting.preads == 1  # a short read from a position reads one block
    scan.close()


# -- the writer


def test_unsorted_or_duplicate_keys_are_refused() -> None:
    fs = memfs()
    writer = TableWriter(fs, PATH, 1)
    writer.add(b"b", b"1")
    with pytest.raises(InvalidArgumentError):
        writer.add(b"a", b"2")
    with pytest.raises(InvalidArgumentError):
        writer.add(b"b", b"2")
    writer.add(b"c", None)
    reader_meta = writer.finish()
    assert reader_meta.entry_count == 2


def test_finish_without_entries_is_refused() -> None:
    fs = memfs()
    writer = TableWriter(fs, PATH, 1)
    with pytest.raises(InvalidArgumentError):
        writer.finish()
    writer.abandon()
    assert not fs.exists(PATH)
    with pytest.raises(InvalidArgumentError):
        write_table(fs, PATH, 1, [])
    assert not fs.exists(PATH)


def test_writer_states() -> None:
    fs = memfs()
    writer = TableWriter(fs, PATH, 1)
    writer.add(b"a", b"1")
    writer.finish()
    with pytest.raises(StateError):
        writer.add(b"b", b"2")
    with pytest.raises(StateError):
        writer.finish()
    with pytest.raises(StateError):
        writer.abandon()
    assert fs.exists(PATH)


def test_abandon_removes_the_partial_file() -> None:
    fs = memfs()
    writer = TableWriter(fs, PATH, 1, TableOptions(block_size=64))
    for i in range(5000):
        writer.add(i.to_bytes(4, "big"), b"value" * 100)
    assert fs.file_size(PATH) > 0  # large chunks were written already
    writer.abandon()
    writer.abandon()
    assert not fs.exists(PATH)


def test_write_table_abandons_on_a_failing_source() -> None:
    fs = memfs()

    def source() -> Iterator[Entry]:
        yield b"a", b"1"
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError):
        write_table(fs, PATH, 1, source())
    assert not fs.exists(PATH)


def test_crash_at_every_step_leaves_no_file() -> None:
    entries: list[Entry] = [(i.to_bytes(4, "big"), b"v" * 3000) for i in range(800)]
    fs = memfs()
    fs.fail_after(None)
    ops = fs.ops
    write_table(fs, PATH, 1, entries)
    total = fs.ops - ops
    for step in range(total):
        fs = memfs()
        fs.fail_after(step)
        with pytest.raises(SimulatedCrash):
            write_table(fs, PATH, 1, entries)
        assert not fs.exists(PATH)


def test_finished_table_survives_a_crash() -> None:
    fs = memfs()
    entries: list[Entry] = [(i.to_bytes(4, "big"), b"v%d" % i) for i in range(3000)]
    write_table(fs, PATH, 1, entries)
    fs.sync_dir("/t")  # the caller's job
    fs.crash()
    reader = TableReader.open(fs, PATH, 1)
    assert list(reader.entries()) == entries


def test_estimated_size_tracks_the_file() -> None:
    fs = memfs()
    writer = TableWriter(fs, PATH, 1)
    previous = 0
    for i in range(20_000):
        writer.add(i.to_bytes(8, "big"), b"x" * 100)
        assert writer.estimated_size >= previous
        previous = writer.estimated_size
    meta = writer.finish()
    assert 0.97 < previous / meta.size < 1.0  # finish adds filter, index, meta, footer


def test_options_are_validated() -> None:
    for bad in ({"block_size": 0}, {"bloom_bits_per_key": -1}, {"bloom_bits_per_key": 65}):
        with pytest.raises(InvalidArgumentError):
            TableOptions(**bad)  # type: ignore[arg-type]


def test_closed_reader_refuses_reads() -> None:
    fs = memfs()
    write_table(fs, PATH, 1, [(b"a", b"1")])
    reader = TableReader.open(fs, PATH, 1)
    reader.close()
    with pytest.raises(ClosedError):
        reader.get(b"a")
    with pytest.raises(ClosedError):
        list(reader.entries())


# -- corruption: every byte of every region


def small_table(fs: FS, path: str) -> tuple[bytes, list[Entry]]:
    entries: list[Entry] = [
        (b"key%03d" % i, None if i % 4 == 0 else b"value-%d" % i) for i in range(30)
    ]
    write_table(fs, path, 1, entries, TableOptions(block_size=96))
    return fs.read_all(path), entries


def regions(data: bytes) -> list[str]:
    """The region each byte belongs to, named as ``CorruptionError.where`` names it."""
    size = len(data)
    footer = Footer.decode(data[-FOOTER_SIZE:], "golden")
    index_end = footer.index_offset + footer.index_size
    index = IndexBlock.decode(data[footer.index_offset : index_end], "golden")
    names = []
    for pos in range(size):
        if pos >= size - 12:
            names.append("version" if pos < size - 8 else "footer")
        elif pos >= size - FOOTER_SIZE:
            names.append("footer")
        elif pos >= footer.meta_offset:
            names.append("meta")
        elif pos >= footer.index_offset:
            names.append("index")
        elif footer.filter_size and pos >= footer.filter_offset:
            names.append("filter")
        else:
            i = bisect.bisect_right(index.offsets, pos) - 1
            names.append(f"block@{index.offsets[i]}")
    return names


def read_everything(fs: FS, path: str, entries: list[Entry]) -> None:
    reader = TableReader.open(fs, path, 1, BlockCache())
    try:
        assert list(reader.entries()) == entries  # never wrong data
        for key, value in entries:
            assert reader.get(key) == value
        reader.verify()
    finally:
        reader.close()


def write_file(fs: FS, path: str, data: bytes) -> None:
    file = fs.create(path)
    file.write(data)
    file.close()


def test_every_flipped_byte_in_every_region_is_detected() -> None:
    fs = memfs()
    data, entries = small_table(fs, PATH)
    names = regions(data)
    assert {"footer", "version", "meta", "index", "filter"} <= set(names)
    assert sum(name.startswith("block@") for name in set(names)) > 5
    for pos, name in enumerate(names):
        bad = bytearray(data)
        bad[pos] ^= 0xFF
        write_file(fs, "/t/bad.sst", bytes(bad))
        if name == "version":
            with pytest.raises(UnsupportedFormatError):
                read_everything(fs, "/t/bad.sst", entries)
            continue
        with pytest.raises(CorruptionError) as info:
            read_everything(fs, "/t/bad.sst", entries)
        assert (info.value.path, info.value.where) == ("/t/bad.sst", name), pos


def test_single_bit_flips_are_detected() -> None:
    fs = memfs()
    data, entries = small_table(fs, PATH)
    rng = random.Random(11)
    for pos in rng.sample(range(len(data) - 12), 200):
        bad = bytearray(data)
        bad[pos] ^= 1 << rng.randrange(8)
        write_file(fs, "/t/bad.sst", bytes(bad))
        with pytest.raises(CorruptionError):
            read_everything(fs, "/t/bad.sst", entries)


def test_every_truncation_is_detected() -> None:
    fs = memfs()
    data, entries = small_table(fs, PATH)
    for size in range(len(data)):
        write_file(fs, "/t/short.sst", data[:size])
        with pytest.raises(CorruptionError) as info:
            read_everything(fs, "/t/short.sst", entries)
        assert info.value.where == "footer"


def test_future_format_version_is_unsupported() -> None:
    fs = memfs()
    data, _ = small_table(fs, PATH)
    bad = bytearray(data)
    struct.pack_into("<I", bad, len(bad) - 12, 3)
    footer = len(bad) - FOOTER_SIZE
    struct.pack_into("<I", bad, footer, crc32c(bad[footer + 4 :]))  # a valid v3 footer
    write_file(fs, "/t/v3.sst", bytes(bad))
    with pytest.raises(UnsupportedFormatError, match="version 3"):
        TableReader.open(fs, "/t/v3.sst", 1)


def test_a_bad_block_never_enters_the_cache() -> None:
    fs = memfs()
    data, entries = small_table(fs, PATH)
    names = regions(data)
    bad = bytearray(data)
    bad[3] ^= 0x20  # inside the first data block
    write_file(fs, "/t/bad.sst", bytes(bad))
    cache = BlockCache()
    reader = TableReader.open(fs, "/t/bad.sst", 1, cache)
    for _ in range(2):
        with pytest.raises(CorruptionError) as info:
            reader.get(entries[0][0])
        assert info.value.where == names[0]
    assert len(cache) == 0
    assert reader.get(entries[-1][0]) == entries[-1][1]  # other blocks still serve


def test_verify_reads_the_file_not_the_cache() -> None:
    fs = memfs()
    data, entries = small_table(fs, PATH)
    cache = BlockCache()
    reader = TableReader.open(fs, PATH, 1, cache)
    assert reader.get(entries[0][0]) == entries[0][1]  # block 0 is now cached
    bad = bytearray(data)
    bad[3] ^= 0x20
    write_file(fs, PATH, bytes(bad))  # block 0 rots on disk after it was cached
    reader = TableReader.open(fs, PATH, 1, cache)
    assert reader.get(entries[0][0]) == entries[0][1]  # served from the cache
    with pytest.raises(CorruptionError):
        reader.verify()


def test_footer_and_meta_golden_bytes() -> None:
    body = struct.pack("<QIQIQIQI", 1, 2, 3, 4, 5, 6, 7, 2) + b"\x8aSNTLSST"
    assert Footer(1, 2, 3, 4, 5, 6, 7).encode() == struct.pack("<I", crc32c(body)) + body
    assert len(body) + 4 == FOOTER_SIZE == 60
    meta = struct.pack("<QQQQQQII", 1, 2, 3, 4, 5, 7, 1, 2) + b"a" + b"zz"
    meta += struct.pack("<IQQ", 2, 5, 7)  # the segments pointed into: 5 and 7, not 6
    block = MetaBlock(1, 2, 3, b"a", b"zz", 4, 5, 7, (5, 7))
    assert block.encode() == meta + struct.pack("<I", crc32c(meta))
    assert MetaBlock.decode(meta + struct.pack("<I", crc32c(meta)), "t") == block


def test_a_version_1_table_is_read_with_its_pointer_range_whole() -> None:
    """Version 1 recorded only the range of segments pointed into: still read, and
    every segment of the range is kept and checked, as that build did."""
    meta = struct.pack("<QQQQQQII", 0, 1, 9, 2, 5, 7, 1, 1) + b"a" + b"b"
    block = MetaBlock.decode(meta + struct.pack("<I", crc32c(meta)), "t", version=1)
    assert block.pointer_segments is None
    assert (block.min_pointer_segment, block.max_pointer_segment) == (5, 7)
    footer = Footer(1, 2, 3, 4, 5, 6, 7, format_version=1).encode()
    assert Footer.decode(footer, "t").format_version == 1
    fs = MemFS()
    fs.makedirs("/t")
    entries = [(b"a", ValuePointer.to(5, 100, 13, 4000)), (b"b", ValuePointer.to(7, 20, 13, 5))]
    write_table(fs, "/t/1.sst", 1, entries)
    data = bytearray(fs.read_all("/t/1.sst"))
    new = Footer.decode(bytes(data[-FOOTER_SIZE:]), "t")
    old_meta = struct.pack("<QQQQQQII", 0, 2, 0, 2, 5, 7, 1, 1) + b"a" + b"b"
    old_meta += struct.pack("<I", crc32c(old_meta))
    rebuilt = data[: new.meta_offset] + old_meta
    rebuilt += Footer(new.index_offset, new.index_size, new.filter_offset, new.filter_size,
                      new.meta_offset, len(old_meta), new.entry_count,
                      format_version=1).encode()  # fmt: skip
    handle = fs.create("/t/2.sst")
    handle.write(bytes(rebuilt))
    handle.sync()
    reader = TableReader.open(fs, "/t/2.sst", 2)
    assert list(reader.entries()) == entries
    assert reader.pointer_segment_numbers == {5, 6, 7}
    assert TableReader.open(fs, "/t/1.sst", 1).pointer_segment_numbers == {5, 7}


@pytest.mark.parametrize(
    ("pointers", "low", "high", "segments"),
    [
        (0, 0, 0, (3,)),  # a list without pointers
        (2, 3, 5, ()),  # pointers without a list
        (2, 3, 5, (3, 4)),  # the list ends below the range
        (2, 3, 5, (5, 3)),  # not ascending
        (2, 3, 5, (3, 3, 5)),  # a segment twice
    ],
)
def test_a_segment_list_that_disagrees_with_the_pointers_is_damage(
    pointers: int, low: int, high: int, segments: tuple[int, ...]
) -> None:
    meta = struct.pack("<QQQQQQII", 0, 1, 1, pointers, low, high, 1, 1) + b"a" + b"b"
    meta += struct.pack(f"<I{len(segments)}Q", len(segments), *segments)
    with pytest.raises(CorruptionError, match="segment list"):
        MetaBlock.decode(meta + struct.pack("<I", crc32c(meta)), "t")


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=5),
    st.binary(max_size=5),
    st.lists(st.integers(0, (1 << 64) - 1), max_size=20, unique=True).map(sorted),
    st.binary(max_size=300),
    st.sampled_from([1, 2]),
)
def test_meta_block_round_trips_and_any_bytes_decode_or_are_damage(
    low_key: bytes, high_key: bytes, segments: list[int], noise: bytes, version: int
) -> None:
    block = MetaBlock(
        1, 2, 3, low_key, high_key, len(segments),
        segments[0] if segments else 0, segments[-1] if segments else 0, tuple(segments),
    )  # fmt: skip
    assert MetaBlock.decode(block.encode(), "t") == block
    for data in (noise, noise + struct.pack("<I", crc32c(noise))):  # checksummed garbage too
        with contextlib.suppress(CorruptionError):
            MetaBlock.decode(data, "t", version)


def test_a_segment_list_cut_short_is_damage() -> None:
    meta = struct.pack("<QQQQQQII", 0, 1, 1, 1, 3, 3, 1, 1) + b"a" + b"b"
    meta += struct.pack("<IQ", 2, 3)  # says two, holds one
    with pytest.raises(CorruptionError, match="segment list does not match"):
        MetaBlock.decode(meta + struct.pack("<I", crc32c(meta)), "t")


def test_value_pointers_round_trip_and_record_their_segments() -> None:
    fs = MemFS()
    fs.makedirs("/t")
    entries: list[tuple[bytes, bytes | None]] = [
        (b"a", b"inline"),
        (b"b", ValuePointer.to(7, 100, 13, 4000)),
        (b"c", None),
        (b"d", ValuePointer.to(9, 20, 13, 5)),
    ]
    write_table(fs, "/t/1.sst", 1, entries)
    reader = TableReader.open(fs, "/t/1.sst", 1)
    got = list(reader.entries())
    assert got == entries
    assert type(got[1][1]) is ValuePointer and type(got[0][1]) is bytes
    assert reader.pointer_segment_numbers == {7, 9}  # not 8: nothing points there
    assert reader.get(b"d") == ValuePointer.to(9, 20, 13, 5)
    plain = write_table(fs, "/t/2.sst", 2, [(b"x", b"y")])
    assert TableReader.open(fs, "/t/2.sst", plain.file_number).pointer_segment_numbers == set()


# -- the real filesystem


def test_os_fs_round_trip_and_corruption(tmp_path: Path) -> None:
    fs = OsFS()
    path = str(tmp_path / "00000000000000000001.sst")
    data, entries = small_table(fs, path)
    read_everything(fs, path, entries)
    names = regions(data)
    for name in ("footer", "index", "filter", "meta", names[len(names) // 4]):
        bad = bytearray(data)
        bad[names.index(name) + 1] ^= 0x55
        write_file(fs, path, bytes(bad))
        with pytest.raises(CorruptionError) as info:
            read_everything(fs, path, entries)
        assert info.value.where == name


def test_concurrent_readers_share_a_table(tmp_path: Path) -> None:
    fs = OsFS()
    path = str(tmp_path / "00000000000000000001.sst")
    rng = random.Random(5)
    entries: list[Entry] = [
        (i.to_bytes(8, "big"), None if i % 11 == 0 else rng.randbytes(rng.randrange(0, 3000)))
        for i in range(0, 4000, 2)
    ]
    write_table(fs, path, 1, entries)
    reader = TableReader.open(fs, path, 1, BlockCache(64 * 1024))  # small: constant eviction
    oracle = Oracle(entries)
    errors: list[str] = []

    def worker(seed: int) -> None:
        local = random.Random(seed)
        for _ in range(300):
            key = local.randrange(4002).to_bytes(8, "big")
            if reader.get(key) != oracle.get(key):
                errors.append(f"get {key!r}")
            if reader.floor(key, strict=True) != oracle.floor(key, True):
                errors.append(f"floor {key!r}")
        end = local.randrange(4002).to_bytes(8, "big")
        if list(reader.entries(None, end)) != oracle.range(None, end):
            errors.append(f"scan to {end!r}")

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reader.close()
    assert errors == []
