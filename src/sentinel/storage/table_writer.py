"""The SSTable builder: ``TableWriter`` turns entries added in ascending key order into
one table file (layout drawn in ``table_format``); ``write_table`` writes an iterable.

The writer encodes finished blocks into a buffer and writes it out whenever it holds
``WRITE_CHUNK`` (1 MiB); ``finish`` appends the filter, index, meta block and footer,
fsyncs and closes. An IO error leaves the writer broken: only ``abandon`` (close and
remove the partial file) is allowed then.

Thread safety: a writer belongs to one thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from sentinel.errors import InvalidArgumentError, StateError
from sentinel.fs import FS, File
from sentinel.storage.block import (
    BLOCK_OVERHEAD,
    ENTRY_OVERHEAD,
    MAX_BLOCK,
    BlockBuilder,
    IndexBlock,
)
from sentinel.storage.bloom import BloomBuilder
from sentinel.storage.entry import Entry
from sentinel.storage.files import TableMeta
from sentinel.storage.table_format import Footer, MetaBlock, TableOptions, TableProperties
from sentinel.storage.value_log import ValuePointer

WRITE_CHUNK = 1 << 20
MAX_ENTRY = MAX_BLOCK - 64  # key + value: offsets in a block are u32
DEFAULT_OPTIONS = TableOptions()  # frozen: one shared default is safe


class _WriterState(Enum):
    OPEN = "open"
    FINISHED = "finished"
    BROKEN = "broken"  # an IO error left a partial file: only abandon() is allowed
    ABANDONED = "abandoned"


class TableWriter:
    """Builds one table from entries added in strictly ascending key order."""

    def __init__(
        self, fs: FS, path: str, file_number: int, options: TableOptions = DEFAULT_OPTIONS
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
        self._segments: set[int] = set()  # every segment a value pointer points into
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
            self._pointers, self._min_segment, self._max_segment, tuple(sorted(self._segments)),
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
                self._segments.add(segment)
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
    options: TableOptions = DEFAULT_OPTIONS,
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
