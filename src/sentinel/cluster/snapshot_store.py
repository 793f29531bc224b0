"""Snapshot files of the controller's state (``<data>/cluster-metadata-snapshot/``).

One file per snapshot, named by the offset of the metadata log it covers (the applied
end: every entry below it is in the image, none at or after it), ``%020d.snapshot``.
A file is CRC-framed::

    offset  size  field
    0       8     magic     b"SNTLCSNP"
    8       1     version   1
    9       8     offset    u64, the applied end (equal to the file's name)
    17      4     length    u32, bytes of the body
    21      4     crc       u32, CRC-32C of bytes 8..21 and the body
    25      ...   body      ``MetadataImage.encode_snapshot()``

Written tmp + fsync + rename + directory fsync, so after a crash at any step the
directory holds the older snapshots unchanged and maybe a ``.tmp`` (removed at open).
The newest ``KEEP`` (two) are kept; older ones are deleted after the new one is durable.
The same framed bytes travel to a follower that installs a snapshot (the transport call
``controller_snapshot``), so what it receives is checked as a file read from disk is.
"""

from __future__ import annotations

import posixpath
import struct
from dataclasses import dataclass

from sentinel.codec.crc import crc32c
from sentinel.errors import CorruptionError
from sentinel.fs import FS

MAGIC = b"SNTLCSNP"
VERSION = 1
KEEP = 2
SUFFIX = ".snapshot"
_HEAD = struct.Struct(">BQI")  # version, offset, length
_CRC = struct.Struct(">I")
HEADER_BYTES = len(MAGIC) + _HEAD.size + _CRC.size


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A snapshot read back: the log offset it covers and the image's bytes."""

    offset: int
    body: bytes
    path: str


def encode_file(offset: int, body: bytes) -> bytes:
    head = _HEAD.pack(VERSION, offset, len(body))
    return MAGIC + head + _CRC.pack(crc32c(body, crc32c(head))) + body


def decode_file(data: bytes, path: str) -> tuple[int, bytes]:
    """(offset, body) of a snapshot file's bytes; ``CorruptionError`` naming ``path``."""
    if len(data) < HEADER_BYTES or data[: len(MAGIC)] != MAGIC:
        raise CorruptionError(path, "the header", "not a controller snapshot (magic or size)")
    head = data[len(MAGIC) : len(MAGIC) + _HEAD.size]
    version, offset, length = _HEAD.unpack(head)
    if version != VERSION:
        raise CorruptionError(path, "the header", f"unknown snapshot version {version}")
    if len(data) != HEADER_BYTES + length:
        raise CorruptionError(
            path, "the body", f"{len(data) - HEADER_BYTES} bytes where the header says {length}"
        )
    (crc,) = _CRC.unpack_from(data, len(MAGIC) + _HEAD.size)
    body = data[HEADER_BYTES:]
    if crc32c(body, crc32c(head)) != crc:
        raise CorruptionError(path, "the body", "checksum mismatch")
    return offset, body


def file_name(offset: int) -> str:
    return f"{offset:020d}{SUFFIX}"


class SnapshotStore:
    """The snapshot directory of one broker (not thread-safe: one writer at a time)."""

    def __init__(self, fs: FS, directory: str) -> None:
        self.fs = fs
        self.directory = directory
        fs.makedirs(directory)
        for name in fs.listdir(directory):
            if name.endswith(".tmp"):  # a write a crash interrupted
                fs.remove(posixpath.join(directory, name))

    def path(self, offset: int) -> str:
        return posixpath.join(self.directory, file_name(offset))

    def offsets(self) -> list[int]:
        """The offsets of the snapshot files present, oldest first."""
        found = []
        for name in self.fs.listdir(self.directory):
            stem = name[: -len(SUFFIX)]
            if name.endswith(SUFFIX) and stem.isdigit() and len(stem) == 20:
                found.append(int(stem))
        return sorted(found)

    def write(self, offset: int, body: bytes) -> None:
        """Store the snapshot covering ``offset`` durably, then drop all but the newest
        ``KEEP``."""
        self.write_file(offset, encode_file(offset, body))

    def write_file(self, offset: int, data: bytes) -> None:
        """Store framed bytes (``encode_file``'s, checked) as the snapshot of ``offset``."""
        fs, path = self.fs, self.path(offset)
        tmp = path + ".tmp"
        f = fs.create(tmp)
        try:
            f.write(data)
            f.sync()
        finally:
            f.close()
        fs.rename(tmp, path)
        fs.sync_dir(self.directory)
        present = self.offsets()
        old = [o for o in present[: max(0, len(present) - KEEP)] if o != offset]
        for o in old:
            fs.remove(self.path(o))
        if old:
            fs.sync_dir(self.directory)

    def read(self, offset: int) -> Snapshot:
        """The snapshot of ``offset``, checked; ``CorruptionError`` naming the file."""
        path = self.path(offset)
        stored, body = decode_file(self.fs.read_all(path), path)
        if stored != offset:
            raise CorruptionError(path, "the header", f"it covers offset {stored}, not {offset}")
        return Snapshot(offset, body, path)

    def read_file(self, offset: int) -> bytes:
        """The framed bytes of the snapshot of ``offset`` (checked), to send."""
        data = self.fs.read_all(self.path(offset))
        decode_file(data, self.path(offset))
        return data
