"""The manifest: an append-only log of ``VersionEdit`` records, and ``CURRENT``, which names
the live manifest.

The file format (header, records, edit payloads) is drawn in ``manifest_format``; this
module writes manifests, points ``CURRENT`` at them and recovers the live one.

``CURRENT`` holds ``MANIFEST-<20 digits>\\n``.

Durability order. ``Manifest.create`` writes the header and the snapshot, fsyncs the file
and the directory, writes ``CURRENT.tmp``, fsyncs it, renames it over ``CURRENT`` and
fsyncs the directory; only then does it remove older manifests. So ``CURRENT`` only ever
names a manifest whose snapshot is durable. ``append`` opens the file, writes one
record, fsyncs and closes it: the edit is durable when it returns. Edits are rare
(flushes, compactions, retention), so the writer holds no file open between them: an
engine's open files are its WAL segment and tables (many idle partitions of a broker).
When the file has grown past ``rotate_bytes`` (and past twice its snapshot, so that a
large version does not rotate at every edit), ``append`` first starts a new manifest
with a snapshot of the version so far.

Recovery (``recover``) reads only; it never repairs. A torn last record (see
``manifest_format.record_at``) is an edit whose ``append`` never returned: it is skipped
and reported in ``RecoveredState.torn_bytes``. Any other bad record, a bad header, a
missing snapshot, or edits that do not apply raise ``CorruptionError``; a newer format
version raises ``UnsupportedFormatError``. Because the torn tail stays on disk, the
engine never appends to a recovered manifest that has one: it ``create``s a new one. A
manifest that ended cleanly and is below ``rotate_bytes`` is appended to again
(``resume``): rewriting it at every open cost four fsyncs, for each partition a broker
recovers after a crash and each it opens on first use after a clean stop.

``Manifest`` is not thread-safe: one caller at a time (the engine's maintenance job).
Manifest numbers come from the engine's file-number counter. A rotation inside
``append`` takes ``max(manifest_number + 1, next_file_number)`` and records a
``next_file_number`` above it, so the engine never hands the same number to a later
manifest.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from sentinel.errors import (
    ClosedError,
    CorruptionError,
    NotAnEngineDirectoryError,
    StateError,
)
from sentinel.fs import FS
from sentinel.storage.files import (
    CURRENT_NAME,
    MANIFEST_PREFIX,
    TABLE_SUFFIX,
    TEMP_SUFFIX,
    join,
    manifest_name,
    parse_number,
)
from sentinel.storage.manifest_format import (
    HEADER,
    MAGIC,
    DecodedRecord,
    check_header,
    decode_edit,
    encode_edit,
    encode_header,
    encode_record,
    record_at,
)
from sentinel.storage.version import InvariantError, Version, VersionEdit

# The format names are re-exported: ``from sentinel.storage.manifest import MAGIC`` still
# works.
__all__ = [
    "DEFAULT_ROTATE_BYTES",
    "MAGIC",
    "Manifest",
    "ManifestWriter",
    "RecoveredState",
    "decode_edit",
    "encode_edit",
    "encode_header",
    "encode_record",
    "is_engine_dir",
    "read_current",
    "recover",
]

#: ``append`` starts a new manifest once the file has grown past this.
DEFAULT_ROTATE_BYTES = 4 * 1024 * 1024


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


def _append_synced(fs: FS, path: str, record: bytes) -> None:
    """Append ``record`` to the file ``path`` and fsync it; the file is closed after."""
    handle = fs.open_append(path)
    try:
        handle.write(record)
        handle.sync()
    finally:
        handle.close()


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
        """Use ``create`` or ``resume``."""
        self._fs = fs
        self._dir = directory
        self._rotate_bytes = rotate_bytes
        self._number = number
        self._state = state
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

    @classmethod
    def resume(
        cls,
        fs: FS,
        directory: str,
        recovered: RecoveredState,
        next_file_number: int,
        *,
        rotate_bytes: int = DEFAULT_ROTATE_BYTES,
        broken: BaseException | None = None,
    ) -> Manifest | None:
        """A writer that goes on appending to the live manifest ``recovered`` was read
        from, writing nothing now; None (``create`` a new one) when that manifest has a
        torn tail or has grown to ``rotate_bytes``. ``next_file_number`` (at least
        ``recovered``'s) is recorded by the next edit. Manifests CURRENT does not name
        (a crash in ``create`` before it removed them) are removed.

        ``broken``: that ``create`` failed with it (a full disk): a writer anyway, whose
        first ``append`` writes a new manifest whole first, as after a failed append.
        Until then the manifest stays as it is (a torn tail is ignored at every open)."""
        size = fs.file_size(_manifest_path(directory, recovered.manifest_number))
        if broken is None and (recovered.torn or size >= rotate_bytes):
            return None
        state = _State(
            recovered.version,
            recovered.log_number,
            max(next_file_number, recovered.next_file_number),
        )
        manifest = cls(fs, directory, rotate_bytes, recovered.manifest_number, state)
        manifest._size = manifest._snapshot_size = size
        manifest._broken = broken
        live = manifest_name(recovered.manifest_number)
        for name in fs.listdir(directory):
            if name.startswith(MANIFEST_PREFIX) and name != live:
                fs.remove(join(directory, name))
        return manifest

    def _start(self, number: int) -> None:
        """Write manifest ``number`` with a snapshot of the state, switch CURRENT to it,
        and remove every other manifest."""
        fs, directory, state = self._fs, self._dir, self._state
        snapshot = state.version.snapshot_edit(state.log_number, state.next_file_number)
        data = encode_header() + encode_record(
            encode_edit(snapshot, snapshot_levels=state.version.num_levels)
        )
        path = _manifest_path(directory, number)
        handle = fs.create(path)
        try:
            handle.write(data)
            handle.sync()
            fs.sync_dir(directory)
        except BaseException:
            handle.close()
            with contextlib.suppress(OSError):  # CURRENT never named it: free the space
                fs.remove(path)
            raise
        handle.close()
        _write_current(fs, directory, number)
        self._number = number
        self._size = self._snapshot_size = len(data)
        for name in fs.listdir(directory):
            if name.startswith(MANIFEST_PREFIX) and name != manifest_name(number):
                fs.remove(join(directory, name))

    def append(self, edit: VersionEdit) -> Version:
        """Record ``edit`` durably (fsynced on return) and return the version after it.

        An edit that does not apply raises ``InvariantError`` and writes nothing. If a
        write or fsync fails, the edit may or may not be on disk (only recovery could
        tell) and nothing more is appended to that file: the next ``append`` first
        rotates to a new manifest holding a snapshot of the state without the failed
        edit (a full disk: the caller retries once there is space), which also drops
        the old file and whatever the failed edit left in it.
        """
        if self._closed:
            raise ClosedError("the manifest is closed")
        state = self._state.advance(edit)  # validate before writing anything
        try:
            big = self._size >= max(self._rotate_bytes, 2 * self._snapshot_size)
            if big or self._broken is not None:
                self._rotate()
                self._broken = None
                state = self._state.advance(edit)  # over the rotated state
            record = encode_record(encode_edit(edit))
            _append_synced(self._fs, self.path, record)
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
    check_header(path, data)
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
        step = record_at(path, data, pos)
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
