"""SSTables: immutable sorted files of entries. ``TableWriter`` builds, ``TableReader`` reads.

File layout::

    +----------------------------+ 0
    | data block 0               |  see ``block``: entries, bounds, kinds, n, crc32c
    | data block 1               |  ~block_size each; a larger entry gets its own block
    | ...                        |
    +----------------------------+ data_end (= filter_offset, or index_offset if none)
    | filter block (optional)    |  see ``bloom``: header, 512-bit buckets, crc32c
    +----------------------------+ index_offset
    | index block                |  see ``block``: first/last key, offset, size per block
    +----------------------------+ meta_offset
    | meta block                 |  properties, min key, max key, crc32c
    +----------------------------+ file_size - 60
    | footer (60 bytes)          |
    +----------------------------+ file_size

Meta block (little-endian)::

    0  u64 tombstone_count      16 u64 value_bytes (sum of value lengths)
    8  u64 key_bytes            24 u64 pointer_count (entries whose value is a pointer)
    32 u64 min_pointer_segment  40 u64 max_pointer_segment (0, 0 without pointers)
    48 u32 min_key_len          52 u32 max_key_len
    56 min_key | max_key | u32 crc32c over everything before it

A table that holds value pointers (see ``value_log``) records the range of WAL segments
they point into, so the engine knows which segments must be kept without reading it.

Footer (little-endian, fixed 60 bytes; the regions must tile the file as drawn)::

    0  u32 crc32c of footer[4:60]
    4  u64 index_offset    12 u32 index_size
    16 u64 filter_offset   24 u32 filter_size   (0 / 0: no filter)
    28 u64 meta_offset     36 u32 meta_size
    40 u64 entry_count
    48 u32 format_version  (1)
    52 8s  magic b"\\x8aSNTLSST"

Opening checks the magic first (``CorruptionError``), then the version
(``UnsupportedFormatError``), then the CRC, then reads filter, index and meta in one
``pread`` and verifies each. Data blocks are verified when read; a block that fails is
reported as ``CorruptionError(path, "block@<offset>")`` and never returned as data.

Thread safety: after ``open`` a reader is immutable; reads use ``pread`` (no shared
file position), so any number of threads may call ``get`` / ``entries`` / ``floor`` at
once. ``close`` must wait until no read is in flight. A writer belongs to one thread.
"""

from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from itertools import pairwise
from operator import add

from sentinel.codec.crc import crc32c
from sentinel.errors import (
    ClosedError,
    CorruptionError,
    InvalidArgumentError,
    StateError,
    UnsupportedFormatError,
)
from sentinel.fs import FS, File
from sentinel.storage.block import (
    BLOCK_OVERHEAD,
    ENTRY_OVERHEAD,
    MAX_BLOCK,
    Block,
    BlockBuilder,
    IndexBlock,
    decode_block,
)
from sentinel.storage.block_cache import BlockCache
from sentinel.storage.bloom import BloomBuilder, BloomFilter
from sentinel.storage.entry import ABSENT, Absent, Entry
from sentinel.storage.files import TableMeta
from sentinel.storage.value_log import ValuePointer

MAGIC = b"\x8aSNTLSST"
FORMAT_VERSION = 1
_FOOTER = struct.Struct("<IQIQIQIQI8s")
FOOTER_SIZE = _FOOTER.size  # 60
_META = struct.Struct("<QQQQQQII")
_U32 = struct.Struct("<I")
WRITE_CHUNK = 1 << 20
MAX_ENTRY = MAX_BLOCK - 64  # key + value: offsets in a block are u32
FIRST_READAHEAD = 64 * 1024
MAX_READAHEAD = 256 * 1024


@dataclass(frozen=True, slots=True)
class TableOptions:
    block_size: int = 4096
    bloom_bits_per_key: int = 10  # 0: no filter
    prefix_compression: bool = False  # store each block's common key prefix once

    def __post_init__(self) -> None:
        if not 1 <= self.block_size <= 1 << 30:
            raise InvalidArgumentError(f"block_size {self.block_size} is out of range")
        if not 0 <= self.bloom_bits_per_key <= 64:
            raise InvalidArgumentError(
                f"bloom_bits_per_key {self.bloom_bits_per_key} is not in [0, 64]"
            )


@dataclass(frozen=True, slots=True)
class TableProperties:
    """What the meta block records besides the key range."""

    entry_count: int
    tombstone_count: int
    key_bytes: int
    value_bytes: int
    block_count: int


@dataclass(frozen=True, slots=True)
class Footer:
    index_offset: int
    index_size: int
    filter_offset: int
    filter_size: int
    meta_offset: int
    meta_size: int
    entry_count: int

    def encode(self) -> bytes:
        body = _FOOTER.pack(
            0, self.index_offset, self.index_size, self.filter_offset, self.filter_size,
            self.meta_offset, self.meta_size, self.entry_count, FORMAT_VERSION, MAGIC,
        )  # fmt: skip
        return _U32.pack(crc32c(body[4:])) + body[4:]

    @classmethod
    def decode(cls, data: bytes, path: str) -> Footer:
        if len(data) != FOOTER_SIZE:
            raise CorruptionError(path, "footer", f"{len(data)} bytes, expected {FOOTER_SIZE}")
        stored, *fields, version, magic = _FOOTER.unpack(data)
        if magic != MAGIC:
            raise CorruptionError(path, "footer", f"bad magic {magic!r}")
        if version != FORMAT_VERSION:
            raise UnsupportedFormatError(
                f"{path}: table format version {version}; this build reads {FORMAT_VERSION}"
            )
        if crc32c(memoryview(data)[4:]) != stored:
            raise CorruptionError(path, "footer", "checksum mismatch")
        return cls(*fields)


@dataclass(frozen=True, slots=True)
class MetaBlock:
    tombstone_count: int
    key_bytes: int
    value_bytes: int
    min_key: bytes
    max_key: bytes
    pointer_count: int = 0
    min_pointer_segment: int = 0
    max_pointer_segment: int = 0

    def encode(self) -> bytes:
        out = bytearray(
            _META.pack(self.tombstone_count, self.key_bytes, self.value_bytes,
                       self.pointer_count, self.min_pointer_segment, self.max_pointer_segment,
                       len(self.min_key), len(self.max_key))
        )  # fmt: skip
        out += self.min_key
        out += self.max_key
        out += _U32.pack(crc32c(out))
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes, path: str) -> MetaBlock:
        size = len(data)
        if size < _META.size + 4:
            raise CorruptionError(path, "meta", f"meta block of {size} bytes is truncated")
        if crc32c(memoryview(data)[:-4]) != _U32.unpack_from(data, size - 4)[0]:
            raise CorruptionError(path, "meta", "checksum mismatch")
        (tombstones, key_bytes, value_bytes, pointers, min_segment, max_segment, min_len,
         max_len) = _META.unpack_from(data)  # fmt: skip
        if _META.size + min_len + max_len + 4 != size:
            raise CorruptionError(path, "meta", "key lengths do not match the block size")
        keys = data[_META.size : size - 4]
        return cls(
            tombstones, key_bytes, value_bytes, keys[:min_len], keys[min_len:],
            pointers, min_segment, max_segment,
        )  # fmt: skip


# ------------------------------------------------------------------------ writer


class _WriterState(Enum):
    OPEN = "open"
    FINISHED = "finished"
    BROKEN = "broken"  # an IO error left a partial file: only abandon() is allowed
    ABANDONED = "abandoned"


class TableWriter:
    """Builds one table from entries added in strictly ascending key order."""

    def __init__(
        self, fs: FS, path: str, file_number: int, options: TableOptions = TableOptions()
    ) -> None:
        self._fs = fs
        self._path = path
        self._file_number = file_number
        self._block_size = options.block_size
        self._file: File = fs.create(path)
        self._out = bytearray()
        self._written = 0
        self._block = BlockBuilder(options.prefix_compression)
        self._pending = 0  # encoded size of the pending block
        self._bloom = (
            BloomBuilder(options.bloom_bits_per_key) if options.bloom_bits_per_key else None
        )
        self._index = IndexBlock([], [], [], [])
        self._last_key: bytes | None = None
        # totals over finished blocks
        self._count = 0
        self._tombstones = 0
        self._pointers = 0
        self._min_segment = 0
        self._max_segment = 0
        self._key_bytes = 0
        self._value_bytes = 0
        self._state = _WriterState.OPEN

    @property
    def path(self) -> str:
        return self._path

    @property
    def entry_count(self) -> int:
        return self._count + len(self._block)

    @property
    def estimated_size(self) -> int:
        """Bytes of the file so far, counting buffered bytes and the pending block (exact
        until ``finish`` adds filter, index, meta and footer). Never decreases."""
        return self._written + len(self._out) + self._pending

    def add(self, key: bytes, value: bytes | None) -> None:
        """Append an entry; ``value=None`` is a tombstone. Keys must strictly ascend."""
        if self._state is not _WriterState.OPEN:
            raise StateError(f"table writer for {self._path} is {self._state.value}")
        last = self._last_key
        if last is not None and key <= last:
            raise InvalidArgumentError(f"key {key!r} does not follow {last!r}")
        size = len(key) + ENTRY_OVERHEAD + (0 if value is None else len(value))
        if size > MAX_ENTRY:
            raise InvalidArgumentError(f"entry of {size} bytes is larger than a block can be")
        pending = self._pending
        if pending and pending + size > self._block_size:
            self._finish_block()
        self._pending = pending = self._block.add(key, value, size)
        self._last_key = key
        if pending >= self._block_size:
            self._finish_block()

    def finish(self) -> TableMeta:
        """Write the last block, filter, index, meta and footer; fsync; close."""
        if self._state is not _WriterState.OPEN:
            raise StateError(f"table writer for {self._path} is {self._state.value}")
        if self._last_key is None:
            raise InvalidArgumentError(f"{self._path}: a table needs at least one entry")
        self._state = _WriterState.BROKEN  # until the file is complete and synced
        if self._pending:
            self._finish_block()
        first_key = self._index.first_keys[0]
        out = self._out
        data_end = self._written + len(out)
        filter_size = 0
        if self._bloom is not None:
            out += self._bloom.finish()
            filter_size = self._written + len(out) - data_end
        index_offset = self._written + len(out)
        out += self._index.encode()
        meta_offset = self._written + len(out)
        out += MetaBlock(
            self._tombstones, self._key_bytes, self._value_bytes, first_key, self._last_key,
            self._pointers, self._min_segment, self._max_segment,
        ).encode()  # fmt: skip
        end = self._written + len(out)
        out += Footer(
            index_offset, meta_offset - index_offset, data_end if filter_size else 0,
            filter_size, meta_offset, end - meta_offset, self._count,
        ).encode()  # fmt: skip
        self._flush()
        self._file.sync()
        self._file.close()
        self._state = _WriterState.FINISHED
        return TableMeta(self._file_number, self._written, self._count, first_key,
                         self._last_key)  # fmt: skip

    def properties(self) -> TableProperties:
        """Totals over the blocks finished so far (all of them after ``finish``)."""
        return TableProperties(
            self._count, self._tombstones, self._key_bytes, self._value_bytes,
            len(self._index.offsets),
        )  # fmt: skip

    def abandon(self) -> None:
        """Close and remove the partial file. A no-op if already abandoned."""
        if self._state is _WriterState.ABANDONED:
            return
        if self._state is _WriterState.FINISHED:
            raise StateError(f"{self._path} is finished; remove the table instead")
        self._state = _WriterState.ABANDONED
        self._file.close()
        if self._fs.exists(self._path):
            self._fs.remove(self._path)

    def _finish_block(self) -> None:
        block = self._block
        keys, values = block.keys, block.values
        tombstones = values.count(None)
        key_bytes = sum(map(len, keys))
        for value in values:
            if type(value) is ValuePointer:
                segment = value.segment
                if not self._pointers or segment < self._min_segment:
                    self._min_segment = segment
                self._max_segment = max(self._max_segment, segment)
                self._pointers += 1
        self._count += len(keys)
        self._tombstones += tombstones
        self._key_bytes += key_bytes
        # the raw size is 12 + 9 per entry + keys + values
        self._value_bytes += (
            block.raw_size - BLOCK_OVERHEAD - ENTRY_OVERHEAD * len(keys) - key_bytes
        )
        if self._bloom is not None:
            self._bloom.add_keys(keys)
        index = self._index
        index.first_keys.append(keys[0])
        index.last_keys.append(keys[-1])
        index.offsets.append(self._written + len(self._out))
        index.sizes.append(block.finish_into(self._out))
        self._pending = 0
        if len(self._out) >= WRITE_CHUNK:
            self._flush()

    def _flush(self) -> None:
        out = self._out
        state, self._state = self._state, _WriterState.BROKEN
        self._file.write(out)
        self._state = state
        self._written += len(out)
        self._out = bytearray()


def write_table(
    fs: FS,
    path: str,
    file_number: int,
    entries: Iterable[Entry],
    options: TableOptions = TableOptions(),
) -> TableMeta:
    """Write ``entries`` (sorted by key) as one table; remove the file if anything fails."""
    writer = TableWriter(fs, path, file_number, options)
    try:
        for key, value in entries:
            writer.add(key, value)
        return writer.finish()
    except BaseException as exc:
        try:
            writer.abandon()
        except Exception as cleanup:
            exc.add_note(f"abandoning {path} failed too: {cleanup!r}")
        raise


# ------------------------------------------------------------------------ reader


class TableReader:
    """An open table: footer, meta, index and filter in memory; blocks read on demand.

    An ``EntrySource``: ``get``, ``entries``, ``floor``. Point reads go through the
    block cache; ``entries`` reads the first block through it too (short range reads
    are common), then reads ahead several blocks per ``pread`` (64 KiB, doubling to
    256 KiB) without filling the cache, so a long scan does not evict the hot blocks.
    """

    __slots__ = (
        "_cache", "_closed", "_ends", "_file", "_filter", "_first_keys", "_last_keys",
        "_max_key", "_min_key", "_number", "_offsets", "_path", "_sizes", "meta",
        "pointer_segments", "properties",
    )  # fmt: skip

    def __init__(
        self,
        *,
        file: File,
        path: str,
        file_number: int,
        size: int,
        footer: Footer,
        index: IndexBlock,
        ends: list[int],
        bloom: BloomFilter | None,
        meta: MetaBlock,
        cache: BlockCache | None,
    ) -> None:
        min_key, max_key = meta.min_key, meta.max_key
        self._file = file
        self._path = path
        self._number = file_number
        self._cache = cache
        self._filter = bloom
        self._first_keys = index.first_keys
        self._last_keys = index.last_keys
        self._offsets = index.offsets
        self._sizes = index.sizes
        self._ends = ends  # offset + size of each block
        self._min_key = min_key
        self._max_key = max_key
        self._closed = False
        self.meta = TableMeta(file_number, size, footer.entry_count, min_key, max_key)
        self.properties = TableProperties(
            footer.entry_count, meta.tombstone_count, meta.key_bytes, meta.value_bytes,
            len(index.offsets),
        )  # fmt: skip
        #: The WAL segments this table's value pointers point into, or None.
        self.pointer_segments: tuple[int, int] | None = (
            (meta.min_pointer_segment, meta.max_pointer_segment) if meta.pointer_count else None
        )

    @classmethod
    def open(
        cls, fs: FS, path: str, file_number: int, cache: BlockCache | None = None
    ) -> TableReader:
        """Open and verify footer, meta, index and filter (``CorruptionError`` if bad)."""
        file = fs.open_read(path)
        try:
            return cls._load(file, path, file_number, cache)
        except BaseException:
            file.close()
            raise

    @classmethod
    def _load(
        cls, file: File, path: str, file_number: int, cache: BlockCache | None
    ) -> TableReader:
        size = file.size()
        if size < FOOTER_SIZE:
            raise CorruptionError(path, "footer", f"file of {size} bytes has no footer")
        footer = Footer.decode(file.pread(size - FOOTER_SIZE, FOOTER_SIZE), path)
        f = footer
        data_end = f.filter_offset if f.filter_size else f.index_offset
        tiled = (
            (not f.filter_size or f.filter_offset + f.filter_size == f.index_offset)
            and f.index_offset + f.index_size == f.meta_offset
            and f.meta_offset + f.meta_size == size - FOOTER_SIZE
            and data_end > 0
        )
        if not tiled:
            raise CorruptionError(path, "footer", "regions do not tile the file")
        tail = file.pread(data_end, size - FOOTER_SIZE - data_end)
        if len(tail) != size - FOOTER_SIZE - data_end:
            raise CorruptionError(path, "footer", "short read of the metadata regions")
        at = f.index_offset - data_end
        bloom = (
            BloomFilter.decode(memoryview(tail)[: f.filter_size], path) if f.filter_size else None
        )
        index = IndexBlock.decode(tail[at : at + f.index_size], path)
        meta = MetaBlock.decode(tail[at + f.index_size :], path)
        offsets = index.offsets
        ends = list(map(add, offsets, index.sizes))
        if offsets[0] != 0 or ends[:-1] != offsets[1:] or ends[-1] != data_end:
            raise CorruptionError(path, "index", "blocks do not tile the data region")
        if meta.min_key != index.first_keys[0] or meta.max_key != index.last_keys[-1]:
            raise CorruptionError(path, "meta", "key range disagrees with the index")
        return cls(
            file=file, path=path, file_number=file_number, size=size, footer=footer,
            index=index, ends=ends, bloom=bloom, meta=meta, cache=cache,
        )  # fmt: skip

    @property
    def path(self) -> str:
        return self._path

    @property
    def file_number(self) -> int:
        return self._number

    def close(self) -> None:
        """Close the file; later reads that need a block raise ``ClosedError``. Cached
        blocks stay valid (tables are immutable); the engine calls
        ``BlockCache.evict_file`` when it deletes the table."""
        self._closed = True
        self._file.close()

    def may_contain(self, key: bytes) -> bool:
        """False if the table certainly holds no entry for ``key`` (no IO)."""
        if key < self._min_key or key > self._max_key:
            return False
        return self._filter is None or self._filter.may_contain(key)

    def get(self, key: bytes) -> bytes | None | Absent:
        """The value, ``None`` for a tombstone, or ``ABSENT``; at most one block read."""
        if key < self._min_key or key > self._max_key:
            return ABSENT
        if self._filter is not None and not self._filter.may_contain(key):
            return ABSENT
        i = bisect_left(self._last_keys, key)
        if key < self._first_keys[i]:
            return ABSENT
        return self._block(i).get(key)

    def floor(self, key: bytes, *, strict: bool = False) -> Entry | None:
        """The entry with the greatest key ``<= key`` (``< key`` if strict), or None."""
        if strict:
            i = bisect_left(self._first_keys, key) - 1
        else:
            i = bisect_right(self._first_keys, key) - 1
        if i < 0:
            return None
        return self._block(i).floor(key, strict=strict)

    def entries(self, start: bytes | None = None, end: bytes | None = None) -> Iterator[Entry]:
        """Entries with ``start <= key < end`` in key order, tombstones included."""
        lo = 0 if start is None else bisect_left(self._last_keys, start)
        hi = len(self._offsets) if end is None else bisect_left(self._first_keys, end)
        if lo >= hi:
            return
        last = hi - 1
        for i, block in self._scan_blocks(lo, hi):
            if i in (lo, last):
                yield from block.entries(start, end)
            else:
                yield from zip(block.keys, block.values, strict=True)

    def verify(self) -> None:
        """Read every block from the file (not the cache), check its CRC and that keys
        ascend and match the index; ``CorruptionError`` names the first bad region."""
        previous: bytes | None = None
        count = tombstones = 0
        for i, block in self._scan_blocks(0, len(self._offsets), first_from_cache=False):
            keys = block.keys
            where = f"block@{self._offsets[i]}"
            if keys[0] != self._first_keys[i] or keys[-1] != self._last_keys[i]:
                raise CorruptionError(self._path, where, "keys disagree with the index")
            if previous is not None and keys[0] <= previous:
                raise CorruptionError(self._path, where, "keys do not follow the previous block")
            if any(a >= b for a, b in pairwise(keys)):
                raise CorruptionError(self._path, where, "keys are not ascending")
            previous = keys[-1]
            count += len(keys)
            tombstones += block.values.count(None)
        if count != self.meta.entry_count or tombstones != self.properties.tombstone_count:
            raise CorruptionError(
                self._path, "meta", f"{count} entries, {tombstones} tombstones disagree"
            )

    # -- blocks

    def _block(self, i: int) -> Block:
        """Block ``i`` through the cache (verified on its way in)."""
        if self._closed:
            raise ClosedError(f"table {self._path} is closed")
        offset = self._offsets[i]
        cache = self._cache
        if cache is not None:
            block = cache.get((self._number, offset))
            if block is not None:
                return block
        size = self._sizes[i]
        block = decode_block(self._file.pread(offset, size), 0, size, self._path,
                             f"block@{offset}")  # fmt: skip
        if cache is not None:
            cache.put((self._number, offset), block, block.charge)
        return block

    def _scan_blocks(
        self, lo: int, hi: int, *, first_from_cache: bool = True
    ) -> Iterator[tuple[int, Block]]:
        """Blocks ``lo .. hi-1``: the first via the cache (unless told not to), the rest
        straight from the file by readahead, verified and not cached."""
        i = lo
        if first_from_cache:
            yield lo, self._block(lo)
            i += 1
        offsets, sizes, ends = self._offsets, self._sizes, self._ends
        readahead = FIRST_READAHEAD
        while i < hi:
            if self._closed:
                raise ClosedError(f"table {self._path} is closed")
            base = offsets[i]
            j = max(i + 1, bisect_right(ends, base + readahead, i, hi))
            chunk = self._file.pread(base, ends[j - 1] - base)
            for k in range(i, j):
                where = f"block@{offsets[k]}"
                yield k, decode_block(chunk, offsets[k] - base, sizes[k], self._path, where)
            i = j
            readahead = min(2 * readahead, MAX_READAHEAD)
