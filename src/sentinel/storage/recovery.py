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
"""

from __future__ import annotations

from dataclasses import dataclass

from sentinel.errors import MissingFileError, NotAnEngineDirectoryError
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
    clean = clean_marker.read(fs, directory) if recovered is not None else None
    for live_table in sorted(version.all_file_numbers()):
        if table_name(live_table) not in names:
            raise MissingFileError(
                join(directory, table_name(live_table)), "a table the manifest lists"
            )
    table_numbers = [
        n for n in (parse_number(name, TABLE_SUFFIX) for name in names) if n is not None
    ]
    next_file = max([next_file, *(n + 1 for n in table_numbers)])
    replayed = Memtable()
    report: ReplayReport | None = None
    if recovered is not None:
        payloads, report = replay(fs, directory, log_number, clean)
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
    fs: FS, directory: str, ranges: list[tuple[int, int]], clean: dict[int, int] | None
) -> None:
    """Every WAL segment a live table's value pointers need is there with a valid
    header (and, after a clean shutdown, its recorded size). Reads 20 bytes a segment."""
    needed = sorted({n for lo, hi in ranges for n in range(lo, hi + 1)})
    for number in needed:
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
