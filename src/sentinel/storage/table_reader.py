"""The SSTable reader: ``TableReader`` opens a table file (layout drawn in
``table_format``) and serves point reads, floor lookups and range scans.

Opening checks the magic first (``CorruptionError``), then the version
(``UnsupportedFormatError``), then the CRC, then reads filter, index and meta in one
``pread`` and verifies each. Data blocks are verified when read; a block that fails is
reported as ``CorruptionError(path, "block@<offset>")`` and never returned as data.

Thread safety: after ``open`` a reader is immutable; reads use ``pread`` (no shared
file position), so any number of threads may call ``get`` / ``entries`` / ``floor`` at
once. ``close`` must wait until no read is in flight. ``detach`` (an idle engine's
files) closes the file while no read runs; the first read after it reopens it.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from itertools import pairwise
from operator import add

from sentinel.errors import ClosedError, CorruptionError
from sentinel.fs import FS, File
from sentinel.storage.block import Block, IndexBlock, decode_block
from sentinel.storage.block_cache import BlockCache
from sentinel.storage.bloom import BloomFilter
from sentinel.storage.entry import ABSENT, Absent, Entry
from sentinel.storage.files import TableMeta
from sentinel.storage.table_format import FOOTER_SIZE, Footer, MetaBlock, TableProperties

#: Serializes the reopening of detached tables' files (rare: the first read after an
#: idle engine's files were closed), so that two readers do not both open one.
_REOPEN_LOCK = threading.Lock()

FIRST_READAHEAD = 64 * 1024
MAX_READAHEAD = 256 * 1024


class TableReader:
    """An open table: footer, meta, index and filter in memory; blocks read on demand.

    An ``EntrySource``: ``get``, ``entries``, ``floor``. Point reads go through the
    block cache; ``entries`` reads the first block through it too (short range reads
    are common), then reads ahead several blocks per ``pread`` (64 KiB, doubling to
    256 KiB) without filling the cache, so a long scan does not evict the hot blocks.
    """

    __slots__ = (
        "_cache", "_closed", "_ends", "_file", "_filter", "_first_keys", "_fs", "_last_keys",
        "_max_key", "_min_key", "_number", "_offsets", "_path", "_sizes", "meta",
        "pointer_segment_numbers", "properties",
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
        self._file: File | None = file
        self._fs: FS | None = None  # set by ``detach``: where a read reopens the file
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
        #: The WAL segments this table's value pointers point into (what must be kept
        #: and found), empty without pointers. A version-1 table recorded only the
        #: range: all of it, as that build read it.
        self.pointer_segment_numbers: frozenset[int] = (
            frozenset()
            if not meta.pointer_count
            else frozenset(
                meta.pointer_segments
                if meta.pointer_segments is not None
                else range(meta.min_pointer_segment, meta.max_pointer_segment + 1)
            )
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
        meta = MetaBlock.decode(tail[at + f.index_size :], path, f.format_version)
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

    def detach(self, fs: FS) -> None:
        """Close the file (an idle engine's files); the next read that needs a block
        reopens it from ``fs`` (a table that is not read again costs no ``open``).
        No read meanwhile."""
        file, self._file, self._fs = self._file, None, fs
        if file is not None:
            file.close()

    def reattach(self, fs: FS) -> None:
        """Reopen the file now rather than at the next read."""
        self._fs = fs
        self._open_file()

    def _open_file(self) -> File:
        """The open file: reopened after ``detach`` (one opener at a time)."""
        file = self._file
        if file is not None:
            return file
        with _REOPEN_LOCK:
            if self._file is None:
                if self._closed:
                    raise ClosedError(f"table {self._path} is closed")
                assert self._fs is not None, "a table's file is closed only by detach"
                self._file = self._fs.open_read(self._path)
            return self._file

    def close(self) -> None:
        """Close the file; later reads that need a block raise ``ClosedError``. Cached
        blocks stay valid (tables are immutable); the engine calls
        ``BlockCache.evict_file`` when it deletes the table."""
        self._closed = True
        with _REOPEN_LOCK:
            file, self._file = self._file, None
        if file is not None:
            file.close()

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
        block = decode_block(self._open_file().pread(offset, size), 0, size, self._path,
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
            chunk = self._open_file().pread(base, ends[j - 1] - base)
            for k in range(i, j):
                where = f"block@{offsets[k]}"
                yield k, decode_block(chunk, offsets[k] - base, sizes[k], self._path, where)
            i = j
            readahead = min(2 * readahead, MAX_READAHEAD)
