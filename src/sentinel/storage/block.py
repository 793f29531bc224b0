"""Data blocks and the index block of an SSTable: builder, reader (decode) and iterator.

Data block (little-endian; about ``block_size`` bytes, or one entry if it is larger)::

    +--------------------------------------------------+ 0
    | prefix              P bytes, shared by every key |
    | suffix 0 .. suffix n-1   each key minus prefix   |
    | value 0 .. value n-1     a tombstone is empty    |
    +--------------------------------------------------+ D
    | bound[0 .. 2n]      u32 x (2n + 1)               |
    | kind[0 .. n-1]      u8 x n: 0 put, 1 tombstone,  |
    |                     2 value pointer              |
    | n                   u32, >= 1                    |
    | crc32c              u32 over every byte above    |
    +--------------------------------------------------+ D + 9n + 12

    bound[0] = P; suffix i = [bound[i], bound[i+1]); value i = [bound[n+i], bound[n+i+1]);
    bound[2n] = D. Offsets are relative to the block's first byte.

The prefix is the longest common prefix of the block's keys when prefix compression is
on, else empty; readers handle both. Offset keys (8-byte big-endian) share ~6 bytes in
a block. Keeping the prefix block-wide rather than per entry (LevelDB's restart points)
keeps decoding to list comprehensions over ``bound``: a block decodes into two parallel
lists in one pass, with no per-entry unpack. It is off by default: measured on 100k
offset keys, it shrinks a table by 5.6 % (100-byte values) or 16 % (20-byte values) but
costs ~13 % of scan speed (one concatenation per key); with the log's 16 KiB values
each entry is a block of its own and it makes no difference either way.

Index block (one entry per data block, in file order)::

    +--------------------------------------------------+ 0
    | first_key 0 | last_key 0 | first_key 1 | ...     |
    +--------------------------------------------------+ D
    | bound[0 .. 2n]      u32 x (2n + 1), bound[0] = 0 |  first_key i = [bound[2i], bound[2i+1])
    |                                                  |  last_key i = [bound[2i+1], bound[2i+2])
    | offset[0 .. n-1]    u64 x n   block start in file|
    | size[0 .. n-1]      u32 x n   block length       |
    | n                   u32, >= 1                    |
    | crc32c              u32 over every byte above    |
    +--------------------------------------------------+

Decoding verifies the CRC first: a block that fails it raises ``CorruptionError`` and is
never returned as data.
"""

from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise

from sentinel.codec.crc import crc32c
from sentinel.errors import CorruptionError, InvalidArgumentError
from sentinel.storage.entry import ABSENT, Absent, Entry
from sentinel.storage.value_log import ValuePointer

PUT = 0
TOMBSTONE = 1
POINTER = 2  # the value is a ValuePointer into a WAL segment (value separation)

_U32 = struct.Struct("<I")
_TAIL = struct.Struct("<II")  # n, crc32c
BLOCK_OVERHEAD = 12  # bound[0], n, crc
ENTRY_OVERHEAD = 9  # two bounds and a kind byte
MAX_BLOCK = (1 << 32) - 1


@lru_cache(maxsize=1024)
def _u32_array(count: int) -> struct.Struct:
    return struct.Struct(f"<{count}I")


@lru_cache(maxsize=256)
def _u64_array(count: int) -> struct.Struct:
    return struct.Struct(f"<{count}Q")


def _common_prefix_len(a: bytes, b: bytes) -> int:
    limit = min(len(a), len(b))
    i = 0
    while i < limit and a[i] == b[i]:
        i += 1
    return i


# ----------------------------------------------------------------------- builder


class BlockBuilder:
    """Collects sorted entries of one data block; ``finish_into`` lays the block out.

    The shared prefix is kept up to date as keys arrive (one ``startswith`` per key),
    so ``estimated_size`` is the exact encoded size and never decreases.
    """

    __slots__ = ("_keys", "_prefix", "_raw_size", "_use_prefix", "_values")

    def __init__(self, prefix: bool = False) -> None:
        self._use_prefix = prefix
        self._keys: list[bytes] = []
        self._values: list[bytes | None] = []
        self._prefix = b""
        self._raw_size = BLOCK_OVERHEAD  # the size if no prefix were shared

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def estimated_size(self) -> int:
        """The encoded size of the entries so far (0 for an empty builder)."""
        if not self._keys:
            return 0
        return self._raw_size - (len(self._keys) - 1) * len(self._prefix)

    @property
    def raw_size(self) -> int:
        """The encoded size if no prefix were shared: 12 + sum(key + value + 9)."""
        return self._raw_size

    @property
    def keys(self) -> list[bytes]:
        return self._keys

    @property
    def values(self) -> list[bytes | None]:
        return self._values

    def add(self, key: bytes, value: bytes | None, size: int = -1) -> int:
        """Append an entry and return ``estimated_size``. The caller keeps keys strictly
        ascending; ``size``, if given, is ``len(key) + len(value) + ENTRY_OVERHEAD``."""
        keys = self._keys
        prefix = self._prefix
        if not keys:
            if self._use_prefix:
                self._prefix = prefix = key
        elif prefix and not key.startswith(prefix):
            self._prefix = prefix = prefix[: _common_prefix_len(prefix, key)]
        keys.append(key)
        self._values.append(value)
        if size < 0:
            size = len(key) + ENTRY_OVERHEAD + (0 if value is None else len(value))
        self._raw_size += size
        return self._raw_size - (len(keys) - 1) * len(prefix)

    def finish_into(self, out: bytearray) -> int:
        """Append the encoded block to ``out``, reset, and return the block's length."""
        keys, values = self._keys, self._values
        n = len(keys)
        if n == 0:
            raise InvalidArgumentError("an empty block cannot be encoded")
        if self._raw_size > MAX_BLOCK:
            raise InvalidArgumentError(f"entry too large for a block ({self._raw_size} bytes)")
        p = len(self._prefix)
        start = len(out)
        bounds = [p]
        end = p
        out += keys[0][:p]
        if p:
            for key in keys:
                suffix = key[p:]
                out += suffix
                end += len(suffix)
                bounds.append(end)
        else:
            for key in keys:
                out += key
                end += len(key)
                bounds.append(end)
        kinds = bytearray(n)
        for i, value in enumerate(values):
            if value is None:
                kinds[i] = TOMBSTONE
            else:
                if type(value) is ValuePointer:
                    kinds[i] = POINTER
                out += value
                end += len(value)
            bounds.append(end)
        out += _u32_array(2 * n + 1).pack(*bounds)
        out += kinds
        out += _U32.pack(n)
        out += _U32.pack(crc32c(memoryview(out)[start:]))
        self._keys = []
        self._values = []
        self._prefix = b""
        self._raw_size = BLOCK_OVERHEAD
        return len(out) - start


def encode_block(entries: list[Entry], prefix: bool = False) -> bytes:
    """One data block holding ``entries`` (sorted); for tests and tools."""
    builder = BlockBuilder(prefix)
    for key, value in entries:
        builder.add(key, value)
    out = bytearray()
    builder.finish_into(out)
    return bytes(out)


# ------------------------------------------------------------------------ reader


class Block:
    """A decoded, verified data block: parallel sorted key and value lists.

    Immutable after construction, so one instance is shared through the block cache.
    """

    __slots__ = ("charge", "keys", "values")

    def __init__(self, keys: list[bytes], values: list[bytes | None], charge: int) -> None:
        self.keys = keys
        self.values = values
        self.charge = charge  # bytes it holds, roughly: what the block cache counts

    def __len__(self) -> int:
        return len(self.keys)

    def get(self, key: bytes) -> bytes | None | Absent:
        keys = self.keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            return self.values[i]
        return ABSENT

    def floor(self, key: bytes, *, strict: bool = False) -> Entry | None:
        i = (bisect_left(self.keys, key) if strict else bisect_right(self.keys, key)) - 1
        if i < 0:
            return None
        return self.keys[i], self.values[i]

    def entries(self, start: bytes | None = None, end: bytes | None = None) -> Iterator[Entry]:
        """The iterator: entries with ``start <= key < end``."""
        keys = self.keys
        lo = 0 if start is None else bisect_left(keys, start)
        hi = len(keys) if end is None else bisect_left(keys, end)
        if lo == 0 and hi == len(keys):
            return zip(keys, self.values, strict=True)
        return zip(keys[lo:hi], self.values[lo:hi], strict=True)


def decode_block(buf: bytes, start: int, size: int, path: str, where: str) -> Block:
    """Verify and decode the data block at ``buf[start : start + size]``."""
    end = start + size
    if size < BLOCK_OVERHEAD + ENTRY_OVERHEAD or end > len(buf):
        raise CorruptionError(path, where, f"block of {size} bytes is truncated")
    n, stored = _TAIL.unpack_from(buf, end - 8)
    if crc32c(memoryview(buf)[start : end - 4]) != stored:
        raise CorruptionError(path, where, "checksum mismatch")
    at = size - BLOCK_OVERHEAD - ENTRY_OVERHEAD * n  # = D
    if n < 1 or at < 0:
        raise CorruptionError(path, where, f"bad entry count {n}")
    if start and n > 4:
        buf = buf[start:end]  # one copy beats shifting every offset
        start = 0
    bounds = _u32_array(2 * n + 1).unpack_from(buf, start + at)
    p = bounds[0]
    if bounds[2 * n] != at or p > bounds[1]:
        raise CorruptionError(path, where, "entry bounds do not match the block size")
    if start:
        parts = [buf[start + a : start + b] for a, b in pairwise(bounds)]
    else:
        parts = [buf[a:b] for a, b in pairwise(bounds)]
    keys = parts[:n]
    if p:
        prefix = buf[start : start + p]
        keys = [prefix + suffix for suffix in keys]
    values: list[bytes | None] = list(parts[n:])
    kinds_at = start + at + 4 * (2 * n + 1)
    kinds = buf[kinds_at : kinds_at + n]
    puts = kinds.count(PUT)
    if puts != n:
        if puts + kinds.count(TOMBSTONE) + kinds.count(POINTER) != n:
            raise CorruptionError(path, where, "unknown entry kind")
        for i, kind in enumerate(kinds):
            if kind == TOMBSTONE:
                values[i] = None
            elif kind == POINTER:
                values[i] = ValuePointer(values[i] or b"")
    return Block(keys, values, size + 100 * n)


# ------------------------------------------------------------------- index block


@dataclass(frozen=True, slots=True)
class IndexBlock:
    """Per data block: first key, last key, offset and size (parallel lists)."""

    first_keys: list[bytes]
    last_keys: list[bytes]
    offsets: list[int]
    sizes: list[int]

    def encode(self) -> bytes:
        n = len(self.offsets)
        if n == 0 or not n == len(self.sizes) == len(self.first_keys) == len(self.last_keys):
            raise InvalidArgumentError("an index needs one first key, last key and size per block")
        out = bytearray()
        bounds = [0]
        for first, last in zip(self.first_keys, self.last_keys, strict=True):
            out += first
            bounds.append(len(out))
            out += last
            bounds.append(len(out))
        out += _u32_array(2 * n + 1).pack(*bounds)
        out += _u64_array(n).pack(*self.offsets)
        out += _u32_array(n).pack(*self.sizes)
        out += _U32.pack(n)
        out += _U32.pack(crc32c(out))
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes, path: str, where: str = "index") -> IndexBlock:
        size = len(data)
        if size < 12:
            raise CorruptionError(path, where, f"index block of {size} bytes is truncated")
        n, stored = _TAIL.unpack_from(data, size - 8)
        if crc32c(memoryview(data)[: size - 4]) != stored:
            raise CorruptionError(path, where, "checksum mismatch")
        at = size - 12 - 20 * n  # = D
        if n < 1 or at < 0:
            raise CorruptionError(path, where, f"bad block count {n}")
        bounds = _u32_array(2 * n + 1).unpack_from(data, at)
        if bounds[0] != 0 or bounds[2 * n] != at:
            raise CorruptionError(path, where, "key bounds do not match the block size")
        keys = [data[a:b] for a, b in pairwise(bounds)]
        offsets = list(_u64_array(n).unpack_from(data, at + 4 * (2 * n + 1)))
        sizes = list(_u32_array(n).unpack_from(data, at + 4 * (2 * n + 1) + 8 * n))
        return cls(keys[0::2], keys[1::2], offsets, sizes)
