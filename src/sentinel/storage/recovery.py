"""What ``Engine.open`` reads before it writes anything, and what it then cleans up.

Order matters (see the engine's docstring): ``inspect_directory`` only reads, so a
directory that is not an engine's, or whose manifest is of a newer format, is refused
with nothing on disk changed. ``recover_files`` runs once the LOCK is held: it checks
that every file the data needs is there (every table the version lists, every WAL
segment from the manifest's log number on; after a clean shutdown, every segment with
its recorded size, see ``clean_marker``), replays the WAL (a torn tail is cut and
reported) and deletes what no version references (tables of a flush or compaction that
crashed before its manifest edit, and temporary files). ``check_pointer_segments`` then
checks the segments that live tables' value pointers need. A missing or damaged file
raises ``MissingFileError`` or ``CorruptionError`` naming it: nothing acknowledged is
dropped silently.

The manifest is checked first. After a clean shutdown the record pins it
(``clean_marker.check_manifest``): any change is damage. After a crash its cut last
edit is a torn tail, but only if the state before that edit is whole: an edit is durable
before the files it supersedes are deleted, so a crash never leaves a cut edit *and* a
file the older state needs gone. That combination is the manifest's damage, and
``blame_torn_manifest`` names the manifest as its cause rather than the file.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentinel.errors import CorruptionError, MissingFileError, NotAnEngineDirectoryError
from sentinel.fs import FS
from sentinel.storage import clean_marker
from sentinel.storage import manifest as manifest_mod
from sentinel.storage.files import (
    CURRENT_NAME,
    LOCK_NAME,
    MANIFEST_PREFIX,
    TABLE_SUFFIX,
    TEMP_SUFFIX,
    WAL_SUFFIX,
    join,
    manifest_name,
    parse_number,
    table_name,
    wal_name,
)
from sentinel.storage.memtable import Memtable
from sentinel.storage.version import Version
from sentinel.storage.wal_format import (
    HEADER_SIZE,
    ReplayReport,
    check_header,
    check_segment_size,
    replay,
)
from sentinel.storage.write_batch import decode_ops


def inspect_directory(fs: FS, directory: str) -> manifest_mod.RecoveredState | None:
    """The recovered manifest state, None for a new engine; refuses a foreign directory.
    Reads only."""
    if fs.exists(directory) and not fs.is_dir(directory):
        raise NotAnEngineDirectoryError(f"{directory} is a file, not an engine directory")
    if not fs.exists(directory):
        return None
    names = fs.listdir(directory)
    if CURRENT_NAME in names:
        return manifest_mod.recover(fs, directory)
    foreign = [n for n in names if not _is_uninitialized_leftover(n)]
    if foreign:
        raise NotAnEngineDirectoryError(
            f"{directory} is not a Sentinel engine directory "
            f"(it has no {CURRENT_NAME} and holds {foreign[0]!r})"
        )
    return None


def _is_uninitialized_leftover(name: str) -> bool:
    """Files an engine may leave if it crashed while creating its directory."""
    return name == LOCK_NAME or name.startswith(MANIFEST_PREFIX) or name.endswith(TEMP_SUFFIX)


@dataclass(frozen=True, slots=True)
class RecoveredFiles:
    version: Version
    log_number: int
    #: Above every table number found on disk, live or not.
    next_file_number: int
    #: The number the new WAL segment takes: above every segment on disk.
    first_segment: int
    #: What the WAL held beyond the last flush.
    replayed: Memtable
    replay_report: ReplayReport | None
    #: The clean-shutdown record (segment -> size), None after a crash.
    clean: dict[int, int] | None


def blame_torn_manifest(
    directory: str, recovered: manifest_mod.RecoveredState, missing: str
) -> CorruptionError:
    """The error for a manifest whose last edit is cut while the state before it needs
    ``missing``, which is gone: the manifest's damage, not a crash (see above)."""
    return CorruptionError(
        join(directory, manifest_name(recovered.manifest_number)),
        "its last edit",
        f"cut as a torn tail ({recovered.torn_bytes} bytes), and the state before it needs "
        f"{missing}, which is gone: a crash deletes no file before the edit that replaces "
        "it is durable, so the manifest is damaged",
    )


def recover_files(
    fs: FS, directory: str, recovered: manifest_mod.RecoveredState | None
) -> RecoveredFiles:
    """Replay the WAL and remove unreferenced tables and temporary files (LOCK held)."""
    if recovered is None:
        version, log_number, next_file = Version.empty(), 1, 1
    else:
        version = recovered.version
        log_number = recovered.log_number
        next_file = recovered.next_file_number
    names = fs.listdir(directory)
    record = clean_marker.read_record(fs, directory) if recovered is not None else None
    if record is not None and record.manifest is not None:
        clean_marker.check_manifest(fs, directory, record.manifest)
    clean = None if record is None else record.segments
    replayed = Memtable()
    report: ReplayReport | None = None
    payloads: list[bytes] = []
    try:
        for live_table in sorted(version.all_file_numbers()):
            if table_name(live_table) not in names:
                raise MissingFileError(
                    join(directory, table_name(live_table)), "a table the manifest lists"
                )
        if recovered is not None:
            payloads, report = replay(fs, directory, log_number, clean)
    except MissingFileError as exc:
        if recovered is not None and recovered.torn:
            raise blame_torn_manifest(directory, recovered, exc.path) from exc
        raise
    table_numbers = [
        n for n in (parse_number(name, TABLE_SUFFIX) for name in names) if n is not None
    ]
    next_file = max([next_file, *(n + 1 for n in table_numbers)])
    if recovered is not None:
        for index, payload in enumerate(payloads):
            for key, value in decode_ops(payload, f"{directory} WAL entry {index}"):
                replayed.put(key, value)
    live = version.all_file_numbers()
    for name in names:
        number = parse_number(name, TABLE_SUFFIX)
        orphan_table = number is not None and number not in live
        if orphan_table or name.endswith(TEMP_SUFFIX):
            fs.remove(join(directory, name))
    # Listed after the replay: a torn create it removed is numbered again, no gap.
    wal_numbers = [
        n for n in (parse_number(name, WAL_SUFFIX) for name in fs.listdir(directory))
        if n is not None
    ]
    first_segment = max([log_number, *(n + 1 for n in wal_numbers)])
    return RecoveredFiles(
        version, log_number, next_file, first_segment, replayed, report, clean
    )


def check_pointer_segments(
    fs: FS, directory: str, needed: set[int], clean: dict[int, int] | None
) -> None:
    """Every WAL segment a live table's value pointers need is there with a valid
    header (and, after a clean shutdown, its recorded size). Reads 20 bytes a segment."""
    for number in sorted(needed):
        path = join(directory, wal_name(number))
        if not fs.exists(path):
            raise MissingFileError(path, "a WAL segment that live tables' values are in")
        file = fs.open_read(path)
        try:
            check_header(path, file.pread(0, HEADER_SIZE), number)
            if clean is not None and number in clean:
                check_segment_size(path, file.size(), clean[number])
        finally:
            file.close()
