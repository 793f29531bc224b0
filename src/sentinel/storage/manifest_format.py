"""The manifest's on-disk format: the file header, record framing and ``VersionEdit``
payloads. ``manifest`` writes and recovers manifest files with it; nothing here does IO.

Layout of ``MANIFEST-<20 digits>`` (integers little-endian)::

    +------------------------------------------------------------------------+
    | header (16 B): magic b"SNTLMANI" (8 B) | format_version u32            |
    |                | crc32c(magic + format_version) u32                    |
    +------------------------------------------------------------------------+
    | record 0: SNAPSHOT, the whole version (an edit to an empty one)        |
    | record 1..n: EDIT, one per ``append``                                  |
    +------------------------------------------------------------------------+

    record  := length u32 | crc32c(length) u32 | crc32c(payload) u32 | payload
    payload := kind u8 (1 SNAPSHOT, 2 EDIT)
               [num_levels u8]                        (SNAPSHOT only)
               flags u8 (bit 0: log_number, bit 1: next_file_number; SNAPSHOT has both)
               [log_number u64] [next_file_number u64]
               removed_count u32, removed_count * (level u8, file_number u64)
               added_count u32, added_count * table
    table   := level u8 | file_number u64 | size u64 | entry_count u64
               | min_key_len u32 | min_key | max_key_len u32 | max_key

``manifest.Manifest`` writes the header, a SNAPSHOT record, then one EDIT record per
``append``. Decoding never repairs:

- ``check_header``: a bad magic, an unknown older version or a bad CRC raise
  ``CorruptionError``; a newer version raises ``UnsupportedFormatError``.
- ``record_at``: the length has its own CRC so a record's extent is trusted before its
  payload is. A torn last record (the file ends inside it, or it ends exactly at the end
  of the file and reads as zeros from a sector boundary on (``storage.torn``), or its
  header and everything after it are zeros) is reported as ``None``: an edit whose
  ``append`` never returned. A whole last record whose payload checksum fails otherwise
  was changed after it was written and raises ``CorruptionError``, as any other bad
  record does, and so does a length above ``MAX_RECORD_BYTES``.
- ``decode_edit``: a malformed payload raises ``ValueError`` (or ``InvariantError``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sentinel.codec.crc import crc32c
from sentinel.errors import CorruptionError, UnsupportedFormatError
from sentinel.storage.files import TableMeta
from sentinel.storage.torn import reads_unwritten, zeros_to_end
from sentinel.storage.version import InvariantError, VersionEdit

MAGIC = b"SNTLMANI"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sII")
RECORD_HEADER = struct.Struct("<III")
KIND_SNAPSHOT = 1
KIND_EDIT = 2
FLAG_LOG_NUMBER = 1
FLAG_NEXT_FILE_NUMBER = 2
#: A record longer than this is corrupt (a snapshot of ~1 M tables fits).
MAX_RECORD_BYTES = 256 * 1024 * 1024

_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_REMOVED = struct.Struct("<BQ")
_TABLE = struct.Struct("<BQQQ")


# ------------------------------------------------------------------ encoding


def encode_header() -> bytes:
    prefix = MAGIC + _U32.pack(FORMAT_VERSION)
    return prefix + _U32.pack(crc32c(prefix))


def encode_record(payload: bytes) -> bytes:
    length = _U32.pack(len(payload))
    return RECORD_HEADER.pack(len(payload), crc32c(length), crc32c(payload)) + payload


def encode_edit(edit: VersionEdit, *, snapshot_levels: int | None = None) -> bytes:
    """The payload of one record: a SNAPSHOT if ``snapshot_levels`` is given, else an EDIT."""
    parts: list[bytes] = []
    if snapshot_levels is not None:
        if edit.log_number is None or edit.next_file_number is None or edit.removed:
            raise InvariantError("a snapshot needs both numbers and removes nothing")
        parts.append(_U8.pack(KIND_SNAPSHOT) + _U8.pack(snapshot_levels))
    else:
        parts.append(_U8.pack(KIND_EDIT))
    flags = (FLAG_LOG_NUMBER if edit.log_number is not None else 0) | (
        FLAG_NEXT_FILE_NUMBER if edit.next_file_number is not None else 0
    )
    parts.append(_U8.pack(flags))
    if edit.log_number is not None:
        parts.append(_U64.pack(edit.log_number))
    if edit.next_file_number is not None:
        parts.append(_U64.pack(edit.next_file_number))
    parts.append(_U32.pack(len(edit.removed)))
    parts.extend(_REMOVED.pack(level, number) for level, number in edit.removed)
    parts.append(_U32.pack(len(edit.added)))
    for level, meta in edit.added:
        parts.append(_TABLE.pack(level, meta.file_number, meta.size, meta.entry_count))
        parts.append(_U32.pack(len(meta.min_key)) + meta.min_key)
        parts.append(_U32.pack(len(meta.max_key)) + meta.max_key)
    return b"".join(parts)


class _Reader:
    """Bounded reads from one payload; any overrun is a ``ValueError``."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise ValueError(f"payload ends {end - len(self._data)} bytes early")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple[int, ...]:
        return fmt.unpack(self.take(fmt.size))

    def done(self) -> bool:
        return self._pos == len(self._data)


@dataclass(frozen=True, slots=True)
class DecodedRecord:
    edit: VersionEdit
    #: For a SNAPSHOT, the number of levels of the version; None for an EDIT.
    snapshot_levels: int | None


def decode_edit(payload: bytes) -> DecodedRecord:
    """Decode one record's payload; ``ValueError`` (or ``InvariantError``) if malformed."""
    reader = _Reader(payload)
    (kind,) = reader.unpack(_U8)
    levels: int | None = None
    if kind == KIND_SNAPSHOT:
        (levels,) = reader.unpack(_U8)
    elif kind != KIND_EDIT:
        raise ValueError(f"unknown record kind {kind}")
    (flags,) = reader.unpack(_U8)
    if flags & ~(FLAG_LOG_NUMBER | FLAG_NEXT_FILE_NUMBER):
        raise ValueError(f"unknown flags {flags:#x}")
    log_number = reader.unpack(_U64)[0] if flags & FLAG_LOG_NUMBER else None
    next_file_number = reader.unpack(_U64)[0] if flags & FLAG_NEXT_FILE_NUMBER else None
    (removed_count,) = reader.unpack(_U32)
    removed = []
    for _ in range(removed_count):
        level, number = reader.unpack(_REMOVED)
        removed.append((level, number))
    (added_count,) = reader.unpack(_U32)
    added = []
    for _ in range(added_count):
        level, number, size, count = reader.unpack(_TABLE)
        min_key = reader.take(reader.unpack(_U32)[0])
        max_key = reader.take(reader.unpack(_U32)[0])
        added.append((level, TableMeta(number, size, count, min_key, max_key)))
    if not reader.done():
        raise ValueError("trailing bytes after the edit")
    if levels is not None and (log_number is None or next_file_number is None or removed):
        raise ValueError("a snapshot without both numbers, or with removals")
    edit = VersionEdit(
        added=tuple(added),
        removed=tuple(removed),
        log_number=log_number,
        next_file_number=next_file_number,
    )
    return DecodedRecord(edit, levels)


# ------------------------------------------------------------------ decoding


def check_header(path: str, data: bytes) -> None:
    if len(data) < HEADER.size:
        raise CorruptionError(path, "header", f"the file has only {len(data)} bytes")
    magic, version, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptionError(path, "header", f"bad magic {magic!r}")
    if version > FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"{path} has manifest format {version}; this build reads up to {FORMAT_VERSION}"
        )
    if version != FORMAT_VERSION:
        raise CorruptionError(path, "header", f"unknown format version {version}")
    if crc != crc32c(data[:12]):
        raise CorruptionError(path, "header", "checksum mismatch")


def record_at(path: str, data: bytes, pos: int) -> tuple[bytes, int] | None:
    """The payload at ``pos`` and the next offset; None if a torn tail starts here."""
    size = len(data)
    if size - pos < RECORD_HEADER.size:
        return None  # the file ends inside a record header
    length, length_crc, payload_crc = RECORD_HEADER.unpack_from(data, pos)
    where = f"record at offset {pos}"
    if crc32c(data[pos : pos + 4]) != length_crc:
        if zeros_to_end(data, pos):
            return None  # zeros to the end: space allocated, never written
        raise CorruptionError(path, where, "length checksum mismatch")
    if length > MAX_RECORD_BYTES:
        raise CorruptionError(path, where, f"length {length} exceeds {MAX_RECORD_BYTES}")
    end = pos + RECORD_HEADER.size + length
    if end > size:
        return None  # the file ends inside the payload
    payload = data[pos + RECORD_HEADER.size : end]
    if crc32c(payload) != payload_crc:
        if end != size:
            raise CorruptionError(path, where, "payload checksum mismatch, and records follow")
        if reads_unwritten(data, pos, end):
            return None  # the last record, its end never written
        raise CorruptionError(
            path, where, "payload checksum mismatch in the whole last record: its bytes "
            "changed after they were written, not a torn write",
        )  # fmt: skip
    return payload, end
