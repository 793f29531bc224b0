"""The write-ahead log's on-disk format: segment header, entry frames, and replay.

The writer (``wal.WriteAheadLog``) appends frames; this module encodes them, decodes them
and replays a directory of segments. Nothing here holds state: every function takes
bytes or a directory and returns what it found.

Segment files are named ``wal_name(n)`` (``00000000000000000007.wal``). All integers are
**little-endian**. A segment is a header followed by entries; entries never span segments::

    segment header (20 bytes)
    +--------+---------+---------+-------------+--------------------+
    | magic  | version | flags   | segment no. | crc32c(bytes 0-15) |
    | "SWAL" | u16 = 1 | u16 = 0 | u64         | u32                |
    +--------+---------+---------+-------------+--------------------+
     0        4         6         8             16                  20

    entry frame (9 bytes + payload)
    +------------+--------+---------------------------------+---------------+
    | length u32 | type u8| crc32c(length, type, payload) u32| payload bytes |
    +------------+--------+---------------------------------+---------------+
     0            4        5                                 9        9+length

``type`` is 1 (a full entry); 0 is never written, so a zero-filled tail reads as bad.
The CRC covers the length and type bytes as well as the payload (computed as
``crc32c(payload, crc32c(bytes 0-4))``): a flipped length bit is then always caught by
the checksum instead of only when the new length happens to run past the end.
The header repeats the segment number so that a file copied or renamed onto the wrong
name is refused. ``flags`` are reserved (written 0, ignored on read).

Replay reads every segment numbered >= N in ascending order (numbers only grow; gaps are
fine). The writer fsyncs a segment before it creates the next, so only the last segment
can have a torn tail: replay cuts that tail off, and treats a bad entry anywhere else as
corruption. ``replay`` must not run against a directory a live WAL writes.

``value_log`` reads single frames in place, with ``FRAME_HEAD`` and ``FRAME_LEN_TYPE``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from sentinel.codec.crc import crc32c
from sentinel.errors import CorruptionError, UnsupportedFormatError
from sentinel.fs import FS
from sentinel.storage.files import WAL_SUFFIX, join, parse_number, wal_name

MAGIC = b"SWAL"
FORMAT_VERSION = 1
HEADER_SIZE = 20
FRAME_HEADER_SIZE = 9
ENTRY_FULL = 1
MAX_PAYLOAD_LIMIT = 0xFFFF_FFFF  # the length field is a u32

_HEADER_BODY = struct.Struct("<4sHHQ")
_U32 = struct.Struct("<I")
#: The frame's first 5 bytes (length, type): its CRC is seeded with their checksum.
FRAME_LEN_TYPE = struct.Struct("<IB")
#: The whole frame header: length, type, CRC.
FRAME_HEAD = struct.Struct("<IBI")


@dataclass(frozen=True, slots=True)
class ReplayReport:
    entries: int
    segments: list[int]  # segment numbers read
    dropped_bytes: int  # bytes cut off a torn/corrupt tail (0 if clean)
    truncated_segment: int | None  # the segment cut (or removed, if its header was torn)


# ------------------------------------------------------------------------ format


def encode_header(number: int) -> bytes:
    body = _HEADER_BODY.pack(MAGIC, FORMAT_VERSION, 0, number)
    return body + _U32.pack(crc32c(body))


def encode_frame(payload: bytes) -> bytes:
    """One entry as it is stored: frame header, then the payload."""
    length = len(payload)
    crc = crc32c(payload, crc32c(FRAME_LEN_TYPE.pack(length, ENTRY_FULL)))
    return FRAME_HEAD.pack(length, ENTRY_FULL, crc) + payload


def frame_parts(payload: Sequence[bytes]) -> tuple[bytes, ...]:
    """The frame of a payload given in parts: (frame header, *parts). Written with one
    ``writev``, a large value is never copied into a joined buffer."""
    length = sum(len(part) for part in payload)
    crc = crc32c(FRAME_LEN_TYPE.pack(length, ENTRY_FULL))
    for part in payload:
        crc = crc32c(part, crc)
    return (FRAME_HEAD.pack(length, ENTRY_FULL, crc), *payload)


def check_header(path: str, data: bytes, number: int) -> None:
    """Raise unless ``data`` starts with a valid header for segment ``number``."""
    if len(data) < HEADER_SIZE:
        raise CorruptionError(path, "segment header", f"only {len(data)} bytes")
    magic, version, _flags, stored_number = _HEADER_BODY.unpack_from(data)
    if magic != MAGIC:
        raise CorruptionError(path, "segment header", f"bad magic {magic!r}")
    if crc32c(data[:16]) != _U32.unpack_from(data, 16)[0]:
        raise CorruptionError(path, "segment header", "checksum mismatch")
    if version != FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"{path}: WAL format version {version}, this build reads {FORMAT_VERSION}"
        )
    if stored_number != number:
        raise CorruptionError(
            path, "segment header", f"header names segment {stored_number}, not {number}"
        )


def scan_entries(data: bytes, start: int = HEADER_SIZE) -> tuple[list[bytes], int, str | None]:
    """Decode the entries from ``start``: (payloads, end of the last good entry, problem).

    ``problem`` is None when the data ends exactly after a whole entry."""
    payloads: list[bytes] = []
    unpack = FRAME_HEAD.unpack_from
    end = len(data)
    offset = start
    while offset < end:
        if end - offset < FRAME_HEADER_SIZE:
            return payloads, offset, f"short frame header ({end - offset} bytes)"
        length, kind, crc = unpack(data, offset)
        body = offset + FRAME_HEADER_SIZE
        if body + length > end:
            return payloads, offset, f"length {length} runs past the end of the segment"
        if kind != ENTRY_FULL:
            return payloads, offset, f"unknown entry type {kind}"
        payload = data[body : body + length]
        if crc32c(payload, crc32c(data[offset : offset + 5])) != crc:
            return payloads, offset, "checksum mismatch"
        payloads.append(payload)
        offset = body + length
    return payloads, offset, None


# ------------------------------------------------------------------------ replay


def list_segments(fs: FS, directory: str) -> list[int]:
    """Numbers of the WAL segments in ``directory``, ascending."""
    numbers = (parse_number(name, WAL_SUFFIX) for name in fs.listdir(directory))
    return sorted(n for n in numbers if n is not None)


def replay(fs: FS, directory: str, first_segment: int) -> tuple[list[bytes], ReplayReport]:
    """Every payload in the segments numbered >= ``first_segment``, in order.

    A bad entry in the last segment is a torn tail: the segment is truncated at the last
    whole entry and synced (a last segment shorter than a header, or a header-sized run
    of zeros, is a torn create: it is removed). A bad entry or header anywhere else raises
    ``CorruptionError``: that data was acknowledged and is never skipped silently.
    """
    numbers = [n for n in list_segments(fs, directory) if n >= first_segment]
    payloads: list[bytes] = []
    dropped = 0
    truncated: int | None = None
    for index, number in enumerate(numbers):
        entries, cut = _replay_segment(fs, directory, number, index == len(numbers) - 1)
        payloads.extend(entries)
        if cut is not None:
            dropped, truncated = cut, number
    return payloads, ReplayReport(len(payloads), numbers, dropped, truncated)


def _replay_segment(
    fs: FS, directory: str, number: int, last: bool
) -> tuple[list[bytes], int | None]:
    """(payloads, bytes cut off or None if the segment is whole)."""
    path = join(directory, wal_name(number))
    data = fs.read_all(path)
    torn_create = len(data) < HEADER_SIZE or data[:HEADER_SIZE] == bytes(HEADER_SIZE)
    if last and len(data) <= HEADER_SIZE and torn_create:
        fs.remove(path)
        fs.sync_dir(directory)
        return [], len(data)
    check_header(path, data, number)
    payloads, good_end, problem = scan_entries(data)
    if problem is None:
        return payloads, None
    if not last:
        raise CorruptionError(path, f"entry {len(payloads)} at offset {good_end}", problem)
    file = fs.open_append(path)
    try:
        file.truncate(good_end)
        file.sync()
    finally:
        file.close()
    return payloads, len(data) - good_end
