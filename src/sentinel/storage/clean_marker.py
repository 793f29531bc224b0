"""The clean-shutdown marker: proof that the engine closed after its final sync.

``Engine.close`` writes it last (after the final WAL sync, the manifest close and the
deletion of obsolete segments); ``Engine.open`` reads it, checks the WAL against it and
removes it (fsynced) before its first write. With a marker there is no torn tail: every
WAL segment it lists must be there with exactly the recorded size, so a truncated,
emptied or deleted segment is damage, never a crash to recover from (as Kafka's
``.kafka_cleanshutdown``). Without one the engine crashed, and only the newest segment
may have a torn tail.

File ``CLEAN_SHUTDOWN`` (little-endian, format version 3; version 1 ends after the
segment pairs, version 2 after the payload, and both are still read)::

    +--------+---------+----------+-----------+-----------------------------+
    | magic  | version | reserved | count u32 | count x (segment u64,       |
    | "SCLN" | u16 = 3 | u16 = 0  |           |          size u64)          |
    +--------+---------+----------+-----------+-----------------------------+
    | log_number u64 | tables u32 | tables x (table u64, size u64) |
    +----------------+------------+--------------------------------+
    | payload length u32 | payload (the owner's, opaque) |
    +--------------------+-------------------------------+
    | manifest u64 | manifest size u64 | manifest tail crc32c u32 | crc32c u32 |
    +--------------+-------------------+--------------------------+------------+

The CRC covers every byte before it. Version 2 also lets an engine be *checked without
being opened* (``check``): its tables and segments, the WAL number replay starts from,
and a payload its owner gave to ``Engine.close`` (the partition log's offsets), so that
a broker can serve an idle partition's figures without opening it. Version 3 pins the
live manifest (``ManifestPin``): the number ``CURRENT`` names, the file's size and the
CRC of its last ``TAIL_BYTES`` (the whole file if shorter). A manifest cut, grown,
changed at its end or replaced after the clean shutdown is damage, never a torn tail
(a torn tail is a crash's, and a clean shutdown leaves none): ``check`` and
``Engine.open`` refuse it naming the file. ``encode`` writes version 2 for a record
without a pin (as an older build wrote it).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sentinel.codec.crc import crc32c
from sentinel.errors import CorruptionError, MissingFileError, UnsupportedFormatError
from sentinel.fs import FS
from sentinel.storage.files import (
    CURRENT_NAME,
    TABLE_SUFFIX,
    TEMP_SUFFIX,
    WAL_SUFFIX,
    join,
    manifest_name,
    parse_number,
    table_name,
    wal_name,
)
from sentinel.storage.manifest import read_current
from sentinel.storage.wal_format import replay

CLEAN_NAME = "CLEAN_SHUTDOWN"
MAGIC = b"SCLN"
FORMAT_VERSION = 3
#: The bytes at the end of the manifest whose CRC the record pins: one small read.
TAIL_BYTES = 4096

_HEAD = struct.Struct("<4sHHI")
_PAIR = struct.Struct("<QQ")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_PIN = struct.Struct("<QQI")


@dataclass(frozen=True, slots=True)
class ManifestPin:
    """The live manifest at the clean shutdown."""

    #: Its number: ``CURRENT`` names ``MANIFEST-<number>``.
    number: int
    size: int
    #: crc32c of its last ``TAIL_BYTES`` (the whole file if shorter).
    tail_crc: int


@dataclass(frozen=True, slots=True)
class CleanRecord:
    #: WAL segment number -> size in bytes.
    segments: dict[int, int]
    #: Table number -> size in bytes; None in a version-1 record.
    tables: dict[int, int] | None = None
    #: The first WAL segment replay reads (the manifest's log number); None in version 1.
    log_number: int | None = None
    #: The owner's bytes given to ``Engine.close`` (empty if none).
    payload: bytes = b""
    #: The live manifest; None in a record of version 1 or 2.
    manifest: ManifestPin | None = None


def _pairs(body: bytearray, pairs: dict[int, int]) -> None:
    body += _U32.pack(len(pairs))
    for number in sorted(pairs):
        body += _PAIR.pack(number, pairs[number])


def encode(record: CleanRecord) -> bytes:
    pin = record.manifest
    version = 2 if pin is None else FORMAT_VERSION
    body = bytearray(_HEAD.pack(MAGIC, version, 0, len(record.segments)))
    for number in sorted(record.segments):
        body += _PAIR.pack(number, record.segments[number])
    body += _U64.pack(record.log_number or 0)
    _pairs(body, record.tables or {})
    body += _U32.pack(len(record.payload)) + record.payload
    if pin is not None:
        body += _PIN.pack(pin.number, pin.size, pin.tail_crc)
    return bytes(body) + _U32.pack(crc32c(bytes(body)))


def decode_record(data: bytes, path: str) -> CleanRecord:
    """The record; ``CorruptionError`` if the marker is damaged."""
    if len(data) < _HEAD.size + _U32.size:
        raise CorruptionError(path, "marker", f"only {len(data)} bytes")
    magic, version, _reserved, count = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise CorruptionError(path, "marker", f"bad magic {magic!r}")
    if crc32c(data[:-4]) != _U32.unpack_from(data, len(data) - 4)[0]:
        raise CorruptionError(path, "marker", "checksum mismatch")
    if version not in {1, 2, FORMAT_VERSION}:
        raise UnsupportedFormatError(
            f"{path}: clean-shutdown format version {version}, this build reads "
            f"1 to {FORMAT_VERSION}"
        )
    end = _HEAD.size + count * _PAIR.size
    if len(data) < end + _U32.size or (version == 1 and len(data) != end + _U32.size):
        raise CorruptionError(path, "marker", f"{len(data)} bytes for {count} segments")
    segments = dict(_PAIR.unpack_from(data, _HEAD.size + i * _PAIR.size) for i in range(count))
    if version == 1:
        return CleanRecord(segments)
    try:
        (log_number,) = _U64.unpack_from(data, end)
        (tables,) = _U32.unpack_from(data, end + 8)
        at = end + 12
        table_pairs = dict(_PAIR.unpack_from(data, at + i * _PAIR.size) for i in range(tables))
        at += tables * _PAIR.size
        (length,) = _U32.unpack_from(data, at)
        payload = data[at + 4 : at + 4 + length]
        at += 4 + length
        pin = ManifestPin(*_PIN.unpack_from(data, at)) if version >= 3 else None
        at += _PIN.size if version >= 3 else 0
    except struct.error as exc:
        raise CorruptionError(path, "marker", f"truncated: {exc}") from exc
    if at + _U32.size != len(data):
        raise CorruptionError(path, "marker", f"{len(data)} bytes do not match its counts")
    return CleanRecord(segments, table_pairs, log_number, bytes(payload), pin)


def decode(data: bytes, path: str) -> dict[int, int]:
    """Segment number -> size in bytes; ``CorruptionError`` if the marker is damaged."""
    return decode_record(data, path).segments


def read_record(fs: FS, directory: str) -> CleanRecord | None:
    """The record, or None if the engine did not close cleanly."""
    path = join(directory, CLEAN_NAME)
    if not fs.exists(path):
        return None
    return decode_record(fs.read_all(path), path)


def read(fs: FS, directory: str) -> dict[int, int] | None:
    """The recorded segments, or None if the engine did not close cleanly."""
    record = read_record(fs, directory)
    return None if record is None else record.segments


def _tail_crc(fs: FS, path: str, size: int) -> int:
    """crc32c of the last ``TAIL_BYTES`` of the file ``path`` of ``size`` bytes."""
    handle = fs.open_read(path)
    try:
        return crc32c(handle.pread(max(0, size - TAIL_BYTES), min(size, TAIL_BYTES)))
    finally:
        handle.close()


def pin_manifest(fs: FS, directory: str) -> ManifestPin | None:
    """The pin of the manifest ``CURRENT`` names now; None if there is no CURRENT."""
    number = read_current(fs, directory)
    if number is None:
        return None
    path = join(directory, manifest_name(number))
    size = fs.file_size(path)
    return ManifestPin(number, size, _tail_crc(fs, path, size))


def check_manifest(fs: FS, directory: str, pin: ManifestPin) -> None:
    """``CURRENT`` names the pinned manifest, which has its recorded size and tail:
    else ``CorruptionError`` (``MissingFileError``) naming ``CURRENT`` or the manifest.
    Reads ``CURRENT`` and at most ``TAIL_BYTES`` of the manifest."""
    current = join(directory, CURRENT_NAME)
    number = read_current(fs, directory)
    if number is None:
        raise MissingFileError(current, "the directory holds no engine")
    pinned = manifest_name(pin.number)
    if number != pin.number:
        raise CorruptionError(
            current, "contents", f"names {manifest_name(number)}, but {pinned} at the clean "
            "shutdown: the manifest was replaced after it",
        )  # fmt: skip
    path = join(directory, pinned)
    if not fs.exists(path):
        raise MissingFileError(path, "the manifest the clean-shutdown record lists")
    size = fs.file_size(path)
    if size != pin.size:
        raise CorruptionError(
            path, "end of manifest", f"{size} bytes, but {pin.size} at the clean shutdown: "
            "not a torn tail (a clean shutdown leaves none)",
        )  # fmt: skip
    if _tail_crc(fs, path, size) != pin.tail_crc:
        raise CorruptionError(
            path, f"its last {min(size, TAIL_BYTES)} bytes", "checksum mismatch against "
            "the clean-shutdown record: changed after the clean shutdown",
        )  # fmt: skip


def check(fs: FS, directory: str) -> CleanRecord | None:
    """Check a cleanly closed engine without opening it: reads only, no file is written,
    created or kept open. None if it did not close cleanly (or closed before version 2):
    it must be opened to be recovered. Otherwise the record, once ``CURRENT`` is there,
    names the manifest the record pins (version 3), which has its recorded size and
    tail, every table and WAL segment the record lists is there with its recorded size, and
    the segments replay would read (from the log number) pass their checksums, frame by
    frame (after a flushing close that is one segment of a header). A missing or damaged
    file raises ``MissingFileError`` / ``CorruptionError`` naming it, as ``Engine.open``
    would; what only an open reads (a table's blocks, a value segment's contents) is
    checked when the engine is opened."""
    if not fs.exists(join(directory, CURRENT_NAME)):
        raise MissingFileError(join(directory, CURRENT_NAME), "the directory holds no engine")
    record = read_record(fs, directory)
    if record is None or record.tables is None or record.log_number is None:
        return None
    if record.manifest is not None:
        check_manifest(fs, directory, record.manifest)
    for number, size in sorted(record.tables.items()):
        path = join(directory, table_name(number))
        if not fs.exists(path):
            raise MissingFileError(path, "a table the clean-shutdown record lists")
        if fs.file_size(path) != size:
            raise CorruptionError(
                path, "table", f"{fs.file_size(path)} bytes, but {size} at the clean shutdown"
            )
    for number, size in sorted(record.segments.items()):
        if number < record.log_number:  # value segments: present, whole
            path = join(directory, wal_name(number))
            if not fs.exists(path):
                raise MissingFileError(path, "a WAL segment the clean-shutdown record lists")
            if fs.file_size(path) != size:
                raise CorruptionError(
                    path, "end of segment", f"{fs.file_size(path)} bytes, but {size} at "
                    "the clean shutdown"
                )
    replay(fs, directory, record.log_number, record.segments)  # reads only, when clean
    return record


def write(
    fs: FS, directory: str, *, log_number: int | None = None, payload: bytes = b""
) -> None:
    """Record every WAL segment and table and its size, the live manifest (``pin``), and
    ``log_number``, ``payload``: temp file, fsync, rename, fsync the dir."""
    segments, tables = {}, {}
    for name in fs.listdir(directory):
        number = parse_number(name, WAL_SUFFIX)
        if number is not None:
            segments[number] = fs.file_size(join(directory, name))
        number = parse_number(name, TABLE_SUFFIX)
        if number is not None:
            tables[number] = fs.file_size(join(directory, name))
    record = CleanRecord(segments, tables, log_number, payload, pin_manifest(fs, directory))
    temp = join(directory, CLEAN_NAME + TEMP_SUFFIX)
    handle = fs.create(temp)
    try:
        handle.write(encode(record))
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
