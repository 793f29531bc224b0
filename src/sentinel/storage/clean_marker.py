"""The clean-shutdown marker: proof that the engine closed after its final sync.

``Engine.close`` writes it last (after the final WAL sync, the manifest close and the
deletion of obsolete segments); ``Engine.open`` reads it, checks the WAL against it and
removes it (fsynced) before its first write. With a marker there is no torn tail: every
WAL segment it lists must be there with exactly the recorded size, so a truncated,
emptied or deleted segment is damage, never a crash to recover from (as Kafka's
``.kafka_cleanshutdown``). Without one the engine crashed, and only the newest segment
may have a torn tail.

File ``CLEAN_SHUTDOWN`` (little-endian, format version 1)::

    +--------+---------+----------+-----------+-----------------------------+-----------+
    | magic  | version | reserved | count u32 | count x (segment u64,       | crc32c    |
    | "SCLN" | u16 = 1 | u16 = 0  |           |          size u64)          | u32       |
    +--------+---------+----------+-----------+-----------------------------+-----------+

The CRC covers every byte before it.
"""

from __future__ import annotations

import struct

from sentinel.codec.crc import crc32c
from sentinel.errors import CorruptionError, UnsupportedFormatError
from sentinel.fs import FS
from sentinel.storage.files import TEMP_SUFFIX, WAL_SUFFIX, join, parse_number

CLEAN_NAME = "CLEAN_SHUTDOWN"
MAGIC = b"SCLN"
FORMAT_VERSION = 1

_HEAD = struct.Struct("<4sHHI")
_PAIR = struct.Struct("<QQ")
_U32 = struct.Struct("<I")


def encode(segments: dict[int, int]) -> bytes:
    body = bytearray(_HEAD.pack(MAGIC, FORMAT_VERSION, 0, len(segments)))
    for number in sorted(segments):
        body += _PAIR.pack(number, segments[number])
    return bytes(body) + _U32.pack(crc32c(bytes(body)))


def decode(data: bytes, path: str) -> dict[int, int]:
    """Segment number -> size in bytes; ``CorruptionError`` if the marker is damaged."""
    if len(data) < _HEAD.size + _U32.size:
        raise CorruptionError(path, "marker", f"only {len(data)} bytes")
    magic, version, _reserved, count = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise CorruptionError(path, "marker", f"bad magic {magic!r}")
    if crc32c(data[:-4]) != _U32.unpack_from(data, len(data) - 4)[0]:
        raise CorruptionError(path, "marker", "checksum mismatch")
    if version != FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"{path}: clean-shutdown format version {version}, this build reads "
            f"{FORMAT_VERSION}"
        )
    if len(data) != _HEAD.size + count * _PAIR.size + _U32.size:
        raise CorruptionError(path, "marker", f"{len(data)} bytes for {count} segments")
    pairs = (_PAIR.unpack_from(data, _HEAD.size + i * _PAIR.size) for i in range(count))
    return dict(pairs)


def read(fs: FS, directory: str) -> dict[int, int] | None:
    """The recorded segments, or None if the engine did not close cleanly."""
    path = join(directory, CLEAN_NAME)
    if not fs.exists(path):
        return None
    return decode(fs.read_all(path), path)


def write(fs: FS, directory: str) -> None:
    """Record every WAL segment and its size: temp file, fsync, rename, fsync the dir."""
    segments = {}
    for name in fs.listdir(directory):
        number = parse_number(name, WAL_SUFFIX)
        if number is not None:
            segments[number] = fs.file_size(join(directory, name))
    temp = join(directory, CLEAN_NAME + TEMP_SUFFIX)
    handle = fs.create(temp)
    try:
        handle.write(encode(segments))
        handle.sync()
    finally:
        handle.close()
    fs.rename(temp, join(directory, CLEAN_NAME))
    fs.sync_dir(directory)


def remove(fs: FS, directory: str) -> None:
    """Forget the clean shutdown (durably) before the first write of a new run."""
    path = join(directory, CLEAN_NAME)
    if fs.exists(path):
        fs.remove(path)
        fs.sync_dir(directory)
