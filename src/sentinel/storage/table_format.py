"""The SSTable file format: layout, footer, meta block, and the options and properties
that describe a table. ``table_writer`` builds tables and ``table_reader`` reads them.

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
    56 min_key | max_key | segment list (version 2) | u32 crc32c over everything before it

    segment list: u32 count, then count u64s, ascending: every WAL segment the table's
    value pointers point into (count 0 without pointers)

A table that holds value pointers (see ``value_log``) records the WAL segments they
point into, so the engine knows which segments must be kept, and which a start must
find, without reading it. Version 1 recorded only the range (min, max): a merge of
tables that point into segments 8 and 10 then claimed 9 as well, which held only
small values and was deleted long before, and the next start refused the partition for
a segment it never needed. A version-1 table is still read, its range taken whole.

Footer (little-endian, fixed 60 bytes; the regions must tile the file as drawn)::

    0  u32 crc32c of footer[4:60]
    4  u64 index_offset    12 u32 index_size
    16 u64 filter_offset   24 u32 filter_size   (0 / 0: no filter)
    28 u64 meta_offset     36 u32 meta_size
    40 u64 entry_count
    48 u32 format_version  (2; 1 is read: no segment list)
    52 8s  magic b"\\x8aSNTLSST"

``Footer.decode`` checks the magic first (``CorruptionError``), then the version
(``UnsupportedFormatError``), then the CRC; ``MetaBlock.decode`` checks its CRC, then
that the key lengths fill the block.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass

from sentinel.codec.crc import crc32c
from sentinel.errors import CorruptionError, InvalidArgumentError, UnsupportedFormatError

MAGIC = b"\x8aSNTLSST"
FORMAT_VERSION = 2
#: The versions this build reads: 1 has no segment list in its meta block.
READABLE_VERSIONS = frozenset({1, FORMAT_VERSION})
_FOOTER = struct.Struct("<IQIQIQIQI8s")
FOOTER_SIZE = _FOOTER.size  # 60
_META = struct.Struct("<QQQQQQII")
_U32 = struct.Struct("<I")


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
    format_version: int = FORMAT_VERSION

    def encode(self) -> bytes:
        body = _FOOTER.pack(
            0, self.index_offset, self.index_size, self.filter_offset, self.filter_size,
            self.meta_offset, self.meta_size, self.entry_count, self.format_version, MAGIC,
        )  # fmt: skip
        return _U32.pack(crc32c(body[4:])) + body[4:]

    @classmethod
    def decode(cls, data: bytes, path: str) -> Footer:
        if len(data) != FOOTER_SIZE:
            raise CorruptionError(path, "footer", f"{len(data)} bytes, expected {FOOTER_SIZE}")
        (stored, index_offset, index_size, filter_offset, filter_size, meta_offset, meta_size,
         entry_count, version, magic) = _FOOTER.unpack(data)  # fmt: skip
        if magic != MAGIC:
            raise CorruptionError(path, "footer", f"bad magic {magic!r}")
        if version not in READABLE_VERSIONS:
            raise UnsupportedFormatError(
                f"{path}: table format version {version}; this build reads 1 to "
                f"{FORMAT_VERSION}"
            )
        if crc32c(memoryview(data)[4:]) != stored:
            raise CorruptionError(path, "footer", "checksum mismatch")
        return cls(
            index_offset, index_size, filter_offset, filter_size, meta_offset, meta_size,
            entry_count, version,
        )  # fmt: skip


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
    #: Every WAL segment the value pointers point into, ascending (version 2); None:
    #: not recorded (a version-1 table: the range above, taken whole).
    pointer_segments: tuple[int, ...] | None = ()

    def encode(self) -> bytes:
        """The version-2 meta block (``pointer_segments`` must be given)."""
        segments = self.pointer_segments
        if segments is None:
            raise InvalidArgumentError("a version-2 meta block lists its pointer segments")
        out = bytearray(
            _META.pack(self.tombstone_count, self.key_bytes, self.value_bytes,
                       self.pointer_count, self.min_pointer_segment, self.max_pointer_segment,
                       len(self.min_key), len(self.max_key))
        )  # fmt: skip
        out += self.min_key
        out += self.max_key
        out += struct.pack(f"<I{len(segments)}Q", len(segments), *segments)
        out += _U32.pack(crc32c(out))
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes, path: str, version: int = FORMAT_VERSION) -> MetaBlock:
        size = len(data)
        if size < _META.size + 4:
            raise CorruptionError(path, "meta", f"meta block of {size} bytes is truncated")
        if crc32c(memoryview(data)[:-4]) != _U32.unpack_from(data, size - 4)[0]:
            raise CorruptionError(path, "meta", "checksum mismatch")
        (tombstones, key_bytes, value_bytes, pointers, min_segment, max_segment, min_len,
         max_len) = _META.unpack_from(data)  # fmt: skip
        keys_end = _META.size + min_len + max_len
        segments: tuple[int, ...] | None = None
        if version == 1:
            if keys_end + 4 != size:
                raise CorruptionError(path, "meta", "key lengths do not match the block size")
        else:
            if keys_end + 8 > size:
                raise CorruptionError(path, "meta", "key lengths do not match the block size")
            (count,) = _U32.unpack_from(data, keys_end)
            if keys_end + 4 + 8 * count + 4 != size:
                raise CorruptionError(path, "meta", "segment list does not match the block size")
            segments = struct.unpack_from(f"<{count}Q", data, keys_end + 4)
            _check_segments(path, segments, pointers, min_segment, max_segment)
        keys = data[_META.size : keys_end]
        return cls(
            tombstones, key_bytes, value_bytes, keys[:min_len], keys[min_len:],
            pointers, min_segment, max_segment, segments,
        )  # fmt: skip


def _check_segments(
    path: str, segments: tuple[int, ...], pointers: int, low: int, high: int
) -> None:
    """The segment list agrees with the pointer count and range (its CRC passed: a
    disagreement is a writer's bug, refused as damage rather than trusted)."""
    if not pointers:
        if segments:
            raise CorruptionError(path, "meta", "a segment list without value pointers")
        return
    ascending = all(a < b for a, b in itertools.pairwise(segments))
    if not segments or not ascending or segments[0] != low or segments[-1] != high:
        raise CorruptionError(
            path, "meta", f"segment list disagrees with the pointer range {low}..{high}"
        )
