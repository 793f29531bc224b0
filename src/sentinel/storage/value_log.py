"""Large values stay where the WAL first wrote them (WiscKey-style value separation).

A value of at least ``value_separation_bytes`` is written once, in its WAL entry. When its
memtable is flushed, the table stores a ``ValuePointer`` to that entry instead of a copy,
and the WAL segment is kept as long as a live table points into it. The log's pattern
(ascending keys, 16 KiB batches) then writes each byte once instead of twice, and a flush
writes a few bytes per entry instead of the values themselves.

Pointer layout (24 bytes, little-endian), stored in a table as an entry of kind
"pointer"::

    +------------------+-----------------------+--------------------+--------------+
    | segment u64      | frame offset u64      | value start u32    | length u32   |
    +------------------+-----------------------+--------------------+--------------+
     0                  8                       16                   20           24

``frame offset`` is where the WAL entry's frame starts in the segment; ``value start`` is
where the value begins inside the entry's payload. A read fetches the whole frame (drawn
in ``wal_format``) and checks its CRC32C before it returns the value: a damaged frame raises
``CorruptionError`` naming the segment and offset, it is never returned as data. A write
batch of many large values is one frame; recently read frames are kept in the engine's
block cache (a broker's one cache, bounded in bytes for every engine together, under
keys of their own), so a scan does not read such a frame once per value.
"""

from __future__ import annotations

import struct
import threading
from typing import TYPE_CHECKING

from sentinel.codec.crc import crc32c
from sentinel.errors import CorruptionError, MissingFileError
from sentinel.fs import FS, File
from sentinel.storage.files import join, wal_name
from sentinel.storage.wal_format import FRAME_HEAD, FRAME_LEN_TYPE

if TYPE_CHECKING:  # block_cache -> block -> this module
    from sentinel.storage.block_cache import BlockCache

_POINTER = struct.Struct("<QQII")
#: Frames are cached under ``(WAL_KEY | segment, offset)``: WAL segment numbers are the
#: WAL's own, apart from the table file numbers of the same engine's cache keys.
WAL_KEY = 1 << 39
POINTER_SIZE = _POINTER.size


def pack_pointer(segment: int, frame_offset: int, value_start: int, length: int) -> bytes:
    """A pointer's encoding as plain ``bytes``: what an engine keeps per large value in
    its memtable's bookkeeping. Plain bytes (and tuples and dicts of them) are not
    tracked by the garbage collector; a ``ValuePointer``, an instance of a class, is,
    and so was each ``(key, pointer)`` tuple holding one: two objects per produced batch
    that every full collection walks, on the event loop (7,000 batches: 14,243 tracked
    objects, now 242). ``ValuePointer(raw)`` wraps one where it leaves that
    bookkeeping (a flush, a memtable that lets its values go)."""
    return _POINTER.pack(segment, frame_offset, value_start, length)


def pointer_fields(raw: bytes) -> tuple[int, int, int, int]:
    """(segment, frame offset, value start, length) of ``pack_pointer``'s bytes."""
    return _POINTER.unpack(raw)


class ValuePointer(bytes):
    """The encoded location of a value in a WAL segment. A ``bytes`` subclass, so the
    read path's iterators carry it untouched; the engine resolves it at the end."""

    __slots__ = ()

    @classmethod
    def to(cls, segment: int, frame_offset: int, value_start: int, length: int) -> ValuePointer:
        return cls(_POINTER.pack(segment, frame_offset, value_start, length))

    @property
    def fields(self) -> tuple[int, int, int, int]:
        """(segment, frame offset, value start, length)."""
        if len(self) != POINTER_SIZE:
            raise CorruptionError("table", "value pointer", f"{len(self)} bytes, not 24")
        return _POINTER.unpack(self)

    @property
    def segment(self) -> int:
        return self.fields[0]


FRAME_CACHE_BYTES = 8 * 1024 * 1024  # a standalone ValueLog's own cache
MAX_CACHED_FRAME = 2 * 1024 * 1024  # larger frames are read each time, not cached


class ValueLog:
    """Reads values that pointers name. Thread-safe."""

    def __init__(self, fs: FS, directory: str, cache: BlockCache | None = None) -> None:
        """``cache``: the engine's block cache (a broker's shared one), which keeps
        recently read frames within its bound in bytes; by default one of 8 MiB."""
        self._fs = fs
        self._dir = directory
        self._lock = threading.Lock()
        self._files: dict[int, File] = {}
        if cache is None:
            from sentinel.storage.block_cache import BlockCache

            cache = BlockCache(FRAME_CACHE_BYTES)
        self._cache = cache

    def read(self, pointer: ValuePointer) -> bytes:
        return bytes(self.read_view(pointer))

    def read_view(self, pointer: ValuePointer) -> memoryview:
        """``read`` without copying: a view of the value in its (cached) WAL entry."""
        segment, offset, start, length = pointer.fields
        payload = self._frame(segment, offset)
        if start + length > len(payload):
            raise CorruptionError(
                join(self._dir, wal_name(segment)),
                f"entry at {offset}",
                "value pointer runs past the entry",
            )
        return memoryview(payload)[start : start + length]

    def _frame(self, segment: int, offset: int) -> bytes:
        key = (WAL_KEY | segment, offset)
        cached = self._cache.get_frame(key)
        if cached is not None:
            return cached
        with self._lock:
            path = join(self._dir, wal_name(segment))
            file = self._files.get(segment)
            if file is None:
                try:
                    file = self._files[segment] = self._fs.open_read(path)
                except FileNotFoundError:
                    raise MissingFileError(path, "a WAL segment a value pointer needs") from None
        head = file.pread(offset, FRAME_HEAD.size)
        if len(head) < FRAME_HEAD.size:
            raise CorruptionError(path, f"entry at {offset}", "frame header past the end")
        length, kind, stored = FRAME_HEAD.unpack(head)
        payload = file.pread(offset + FRAME_HEAD.size, length)
        if len(payload) != length or (
            crc32c(payload, crc32c(FRAME_LEN_TYPE.pack(length, kind))) != stored
        ):
            raise CorruptionError(path, f"entry at {offset}", "checksum mismatch")
        if length <= MAX_CACHED_FRAME:
            self._cache.put_frame(key, payload)
        return payload

    def forget(self, segments: set[int]) -> None:
        """Close the files of ``segments`` (they are about to be deleted)."""
        with self._lock:
            for segment in segments:
                file = self._files.pop(segment, None)
                if file is not None:
                    file.close()
        for segment in segments:  # (the cache knows which it holds: a dict lookup each)
            self._cache.evict_file(WAL_KEY | segment)

    def close(self) -> None:
        """Close the segments' files. The cached frames stay: a frame never changes,
        and the engine's ``close`` clears its cache."""
        with self._lock:
            for file in self._files.values():
                file.close()
            self._files.clear()
