"""The manifest: an append-only log of ``VersionEdit`` records, and ``CURRENT``, which names
the live manifest.

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

``CURRENT`` holds ``MANIFEST-<20 digits>\\n``.

Durability order. ``Manifest.create`` writes the header and the snapshot, fsyncs the file
and the directory, writes ``CURRENT.tmp``, fsyncs it, renames it over ``CURRENT`` and
fsyncs the directory; only then does it remove older manifests. So ``CURRENT`` only ever
names a manifest whose snapshot is durable. ``append`` writes one record and fsyncs:
the edit is durable when it returns. When the file has grown past ``rotate_bytes`` (and
past twice its snapshot, so that a large version does not rotate at every edit),
``append`` first starts a new manifest with a snapshot of the version so far.

Recovery (``recover``) reads only; it never repairs. The length has its own CRC so a
record's extent is trusted before its payload is. A torn last record (the file ends
inside it, its payload CRC fails and it ends exactly at the end of the file, or its
header and everything after it are zeros) is an edit whose ``append`` never returned:
it is skipped and reported in ``RecoveredState.torn_bytes``. Any other bad record, a
bad header, a missing snapshot, or edits that do not apply raise ``CorruptionError``; a
newer format version raises ``UnsupportedFormatError``. Because the torn tail stays on
disk, the engine never appends to a recovered manifest: it ``create``s a new one.

``Manifest`` is not thread-safe: one caller at a time (the engine's maintenance job).
Manifest numbers come from the engine's file-number counter. A rotation inside
``append`` takes ``max(manifest_number + 1, next_file_number)`` and records a
``next_file_number`` above it, so the engine never hands the same number to a later
manifest.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sentinel.codec.crc import crc32c
from sentinel.errors import (
    ClosedError,
    CorruptionError,
    NotAnEngineDirectoryError,
    StateError,
    UnsupportedFormatError,
)
from sentinel.fs import FS, File
from sentinel.storage.files import (
    CURRENT_NAME,
    MANIFEST_PREFIX,
    TABLE_SUFFIX,
    TEMP_SUFFIX,
    TableMeta,
    join,
    manifest_name,
    parse_number,
)
from sentinel.storage.version import InvariantError, Version, VersionEdit

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
#: ``append`` starts a new manifest once the file has grown past this.
DEFAULT_ROTATE_BYTES = 4 * 1024 * 1024

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


# -------------------------------------------------------------------- writer


@dataclass(frozen=True, slots=True)
class _State:
    version: Version
    log_number: int
    next_file_number: int

    def advance(self, edit: VersionEdit) -> _State:
        """The state after ``edit``; ``InvariantError`` if the edit does not fit."""
        version = self.version.apply(edit)
        log_number = self.log_number
        if edit.log_number is not None:
            if edit.log_number < log_number:
                raise InvariantError(
                    f"log_number would go back from {log_number} to {edit.log_number}"
                )
            log_number = edit.log_number
        next_file_number = max(self.next_file_number, edit.next_file_number or 0)
        for _level, meta in edit.added:
            if meta.file_number >= next_file_number:
                raise InvariantError(
                    f"table {meta.file_number} added, but next_file_number is "
                    f"{next_file_number}: the edit must advance it past the table"
                )
        return _State(version, log_number, next_file_number)


def _manifest_path(directory: str, number: int) -> str:
    return join(directory, manifest_name(number))


def _write_current(fs: FS, directory: str, number: int) -> None:
    """Point CURRENT at manifest ``number``: temp file, fsync, rename, fsync the dir."""
    temp = join(directory, CURRENT_NAME + TEMP_SUFFIX)
    handle = fs.create(temp)
    try:
        handle.write((manifest_name(number) + "\n").encode())
        handle.sync()
    finally:
        handle.close()
    fs.rename(temp, join(directory, CURRENT_NAME))
    fs.sync_dir(directory)


def read_current(fs: FS, directory: str) -> int | None:
    """The manifest number CURRENT names; None if there is no CURRENT."""
    path = join(directory, CURRENT_NAME)
    if not fs.exists(path):
        return None
    text = fs.read_all(path)
    name = text.decode("ascii", "replace").removesuffix("\n")
    number = None
    if text.endswith(b"\n") and name.startswith(MANIFEST_PREFIX):
        number = parse_number(name.removeprefix(MANIFEST_PREFIX), "")
    if number is None:
        raise CorruptionError(path, "contents", f"does not name a manifest: {text[:64]!r}")
    return number


class Manifest:
    """The writer of the live manifest. One caller at a time (not thread-safe)."""

    def __init__(
        self, fs: FS, directory: str, rotate_bytes: int, number: int, state: _State
    ) -> None:
        """Use ``create``."""
        self._fs = fs
        self._dir = directory
        self._rotate_bytes = rotate_bytes
        self._number = number
        self._state = state
        self._file: File | None = None
        self._size = 0
        self._snapshot_size = 0
        self._broken: BaseException | None = None
        self._closed = False

    @classmethod
    def create(  # noqa: PLR0917 - the engine passes these positionally
        cls,
        fs: FS,
        directory: str,
        manifest_number: int,
        base: Version,
        log_number: int,
        next_file_number: int,
        *,
        rotate_bytes: int = DEFAULT_ROTATE_BYTES,
    ) -> Manifest:
        """Write a new manifest holding ``base``, make CURRENT name it (durably), remove
        older manifests, and return its writer.

        ``manifest_number`` must not be the manifest CURRENT names now (``StateError``);
        every table of ``base`` must be numbered below ``next_file_number``
        (``InvariantError``). ``append`` rotates past ``rotate_bytes``.
        """
        if read_current(fs, directory) == manifest_number:
            raise StateError(f"manifest {manifest_number} is live; create needs a new number")
        for _level, meta in base:
            if meta.file_number >= next_file_number:
                raise InvariantError(
                    f"table {meta.file_number} is not below next_file_number {next_file_number}"
                )
        state = _State(base, log_number, next_file_number)
        manifest = cls(fs, directory, rotate_bytes, manifest_number, state)
        manifest._start(manifest_number)
        return manifest

    def _start(self, number: int) -> None:
        """Write manifest ``number`` with a snapshot of the state, switch CURRENT to it,
        and remove every other manifest."""
        fs, directory, state = self._fs, self._dir, self._state
        snapshot = state.version.snapshot_edit(state.log_number, state.next_file_number)
        data = encode_header() + encode_record(
            encode_edit(snapshot, snapshot_levels=state.version.num_levels)
        )
        handle = fs.create(_manifest_path(directory, number))
        try:
            handle.write(data)
            handle.sync()
            fs.sync_dir(directory)
            _write_current(fs, directory, number)
        except BaseException:
            handle.close()
            raise
        if self._file is not None:
            self._file.close()
        self._file, self._number = handle, number
        self._size = self._snapshot_size = len(data)
        for name in fs.listdir(directory):
            if name.startswith(MANIFEST_PREFIX) and name != manifest_name(number):
                fs.remove(join(directory, name))

    def append(self, edit: VersionEdit) -> Version:
        """Record ``edit`` durably (fsynced on return) and return the version after it.

        An edit that does not apply raises ``InvariantError`` and writes nothing. If a
        write or fsync fails, the writer refuses further appends (``StateError``): the
        edit may or may not be on disk, and only recovery can tell.
        """
        self._check_usable()
        state = self._state.advance(edit)  # validate before writing anything
        try:
            if self._size >= max(self._rotate_bytes, 2 * self._snapshot_size):
                self._rotate()
                state = self._state.advance(edit)  # over the rotated state
            record = encode_record(encode_edit(edit))
            assert self._file is not None
            self._file.write(record)
            self._file.sync()
        except BaseException as exc:
            self._broken = exc
            raise
        self._size += len(record)
        self._state = state
        return state.version

    def _rotate(self) -> None:
        state = self._state
        number = max(self._number + 1, state.next_file_number)
        # Above the new manifest, so that the engine never creates one with its number.
        self._state = _State(
            state.version, state.log_number, max(state.next_file_number, number + 1)
        )
        self._start(number)

    def _check_usable(self) -> None:
        if self._closed:
            raise ClosedError("the manifest is closed")
        if self._broken is not None:
            raise StateError(
                f"the manifest failed ({self._broken!r}); reopen to recover"
            ) from self._broken

    @property
    def manifest_number(self) -> int:
        return self._number

    @property
    def path(self) -> str:
        return _manifest_path(self._dir, self._number)

    @property
    def version(self) -> Version:
        return self._state.version

    @property
    def log_number(self) -> int:
        return self._state.log_number

    @property
    def next_file_number(self) -> int:
        return self._state.next_file_number

    @property
    def size(self) -> int:
        """Bytes in the current manifest file."""
        return self._size

    def close(self) -> None:
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None


ManifestWriter = Manifest


# ------------------------------------------------------------------ recovery


@dataclass(frozen=True, slots=True)
class RecoveredState:
    """What the live manifest says."""

    version: Version
    log_number: int
    next_file_number: int
    manifest_number: int
    #: Records read, the snapshot included.
    records: int
    #: Bytes of a torn last record that were skipped (0: the manifest ended cleanly).
    torn_bytes: int

    @property
    def torn(self) -> bool:
        return self.torn_bytes > 0


def is_engine_dir(fs: FS, directory: str) -> bool:
    """True if ``directory`` holds an engine (it has CURRENT); False if it is missing or
    has neither CURRENT nor tables (fresh, or its first manifest never became durable).

    Tables without CURRENT raise ``CorruptionError``: CURRENT was lost, and starting
    afresh would drop them.
    """
    if not fs.is_dir(directory):
        return False
    names = fs.listdir(directory)
    if CURRENT_NAME in names:
        return True
    tables = [n for n in names if parse_number(n, TABLE_SUFFIX) is not None]
    if tables:
        raise CorruptionError(
            join(directory, CURRENT_NAME), "file", f"missing, but {len(tables)} tables exist"
        )
    return False


def recover(fs: FS, directory: str) -> RecoveredState:
    """Replay the manifest CURRENT names. Reads only; see the module docstring for what
    is skipped (a torn last record) and what raises."""
    if not is_engine_dir(fs, directory):
        raise NotAnEngineDirectoryError(f"{directory} has no {CURRENT_NAME}")
    number = read_current(fs, directory)
    assert number is not None
    path = _manifest_path(directory, number)
    if not fs.exists(path):
        raise CorruptionError(path, "file", f"{CURRENT_NAME} names it but it does not exist")
    data = fs.read_all(path)
    _check_header(path, data)
    state, records, clean_end = _replay(path, data)
    tables = [meta.file_number for _level, meta in state.version]
    next_file_number = max([state.next_file_number, number + 1, *(n + 1 for n in tables)])
    return RecoveredState(
        version=state.version,
        log_number=state.log_number,
        next_file_number=next_file_number,
        manifest_number=number,
        records=records,
        torn_bytes=len(data) - clean_end,
    )


def _replay(path: str, data: bytes) -> tuple[_State, int, int]:
    """The state after every intact record, how many records, and where they end."""
    state: _State | None = None
    records = 0
    pos = HEADER.size
    while pos < len(data):
        step = _record_at(path, data, pos)
        if step is None:
            break  # a torn last record
        payload, next_pos = step
        try:
            state = _apply_record(state, decode_edit(payload))
        except (ValueError, InvariantError) as exc:
            raise CorruptionError(path, f"record at offset {pos}", str(exc)) from exc
        records += 1
        pos = next_pos
    if state is None:
        raise CorruptionError(path, f"record at offset {HEADER.size}", "no snapshot record")
    return state, records, pos


def _apply_record(state: _State | None, decoded: DecodedRecord) -> _State:
    edit = decoded.edit
    if state is not None:
        if decoded.snapshot_levels is not None:
            raise ValueError("a snapshot after the first record")
        return state.advance(edit)
    if decoded.snapshot_levels is None or edit.log_number is None:
        raise ValueError("the first record is not a snapshot")
    return _State(Version.empty(decoded.snapshot_levels), edit.log_number, 0).advance(edit)


def _check_header(path: str, data: bytes) -> None:
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


def _record_at(path: str, data: bytes, pos: int) -> tuple[bytes, int] | None:
    """The payload at ``pos`` and the next offset; None if a torn tail starts here."""
    size = len(data)
    if size - pos < RECORD_HEADER.size:
        return None  # the file ends inside a record header
    length, length_crc, payload_crc = RECORD_HEADER.unpack_from(data, pos)
    where = f"record at offset {pos}"
    if crc32c(data[pos : pos + 4]) != length_crc:
        if not any(data[pos:]):
            return None  # zeros to the end: space allocated, never written
        raise CorruptionError(path, where, "length checksum mismatch")
    if length > MAX_RECORD_BYTES:
        raise CorruptionError(path, where, f"length {length} exceeds {MAX_RECORD_BYTES}")
    end = pos + RECORD_HEADER.size + length
    if end > size:
        return None  # the file ends inside the payload
    payload = data[pos + RECORD_HEADER.size : end]
    if crc32c(payload) != payload_crc:
        if end == size:
            return None  # the last record, partly written
        raise CorruptionError(path, where, "payload checksum mismatch, and records follow")
    return payload, end
