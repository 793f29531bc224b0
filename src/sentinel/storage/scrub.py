"""A full, read-only scrub of one engine directory (``sentinel-server --verify``).

Where ``Engine.open`` checks what is cheap (every table's footer, index and meta block;
every needed WAL segment's presence and header), the scrub reads everything: every block
of every table the manifest lists, every frame of every WAL segment from the manifest's
log number on, and every frame of the older segments live tables' value pointers need.
It reports each damaged or missing file once, and changes nothing on disk (a torn tail
that the next start would cut is not damage: it is reported as a note).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sentinel.errors import DiskError
from sentinel.fs import FS
from sentinel.storage import clean_marker
from sentinel.storage import manifest as manifest_mod
from sentinel.storage.files import CURRENT_NAME, join, table_name, wal_name
from sentinel.storage.table_reader import TableReader
from sentinel.storage.wal_format import (
    changed_frame,
    check_header,
    check_segment_size,
    is_torn_create,
    judge_prepared,
    later_frame,
    list_prepared,
    list_segments,
    prepared_name,
    scan_entries,
)


@dataclass(frozen=True, slots=True)
class Damage:
    path: str
    detail: str


@dataclass
class ScrubReport:
    files: int = 0
    damaged: list[Damage] = field(default_factory=list)
    notes: list[Damage] = field(default_factory=list)

    def damage(self, path: str, detail: str) -> None:
        self.damaged.append(Damage(path, detail))

    def note(self, path: str, detail: str) -> None:
        self.notes.append(Damage(path, detail))


def _path_of(exc: BaseException, default: str) -> str:
    path = getattr(exc, "path", None)
    return path if isinstance(path, str) else default


def scrub_engine(fs: FS, directory: str, report: ScrubReport) -> None:
    """Read every file of the engine in ``directory``; add what is damaged to ``report``."""
    if not fs.exists(join(directory, CURRENT_NAME)):
        report.damage(join(directory, CURRENT_NAME), "missing: the directory holds no engine")
        return
    report.files += 1
    try:
        recovered = manifest_mod.recover(fs, directory)
        clean = clean_marker.read(fs, directory)
    except (DiskError, OSError) as exc:
        report.damage(_path_of(exc, join(directory, CURRENT_NAME)), str(exc))
        return
    pointed: set[int] = set()
    for number in sorted(recovered.version.all_file_numbers()):
        report.files += 1
        path = join(directory, table_name(number))
        if not fs.exists(path):
            report.damage(path, "missing: a table the manifest lists")
            continue
        try:
            reader = TableReader.open(fs, path, number)
        except (DiskError, OSError) as exc:
            report.damage(path, str(exc))
            continue
        try:
            reader.verify()
            pointed |= reader.pointer_segment_numbers
        except (DiskError, OSError) as exc:
            report.damage(path, str(exc))
        finally:
            reader.close()
    scrub_wal(fs, directory, recovered.log_number, clean, pointed, report)


def scrub_wal(  # noqa: PLR0917
    fs: FS,
    directory: str,
    log_number: int,
    clean: dict[int, int] | None,
    pointed: set[int],
    report: ScrubReport,
) -> None:
    """Every WAL segment from ``log_number`` on and those value pointers point into
    (``pointed``). After a crash, a prepared segment is judged as the replay judges it
    (``wal_format.judge_prepared``): damage is reported, a removal noted, and one the
    start would adopt is read as the newest segment."""
    present = {n: join(directory, wal_name(n)) for n in list_segments(fs, directory)}
    judged = len(report.damaged)
    for number in list_prepared(fs, directory):
        path = join(directory, prepared_name(number))
        if clean is not None:
            report.files += 1
            report.note(path, "a prepared segment after a clean shutdown (removed at start)")
            continue
        try:
            settlement = judge_prepared(fs, directory, number)
        except (DiskError, OSError) as exc:
            report.files += 1
            report.damage(_path_of(exc, path), str(exc))
            continue
        if settlement.adopt:
            present[number] = path  # read below as the newest segment
        else:
            report.files += 1
            if not settlement.unused:  # (one is left by every kill before a roll)
                report.note(path, f"{settlement.why} (removed at start)")
    reported = {d.path for d in report.damaged[judged:]}
    replayed = [n for n in sorted(present) if n >= log_number]
    last = max(clean) if clean else (replayed[-1] if replayed else None)
    needed = set(range(log_number, last + 1)) if last is not None and last >= log_number else set()
    needed |= pointed
    for number in sorted(needed):
        path = present.get(number, join(directory, wal_name(number)))
        report.files += 1
        if path in reported:
            continue  # the judgement of a prepared segment reported it
        if number not in present:
            report.damage(path, "missing: a WAL segment the data needs")
            continue
        size = clean.get(number) if clean is not None else None
        scrub_segment(fs, path, number, report, torn_ok=clean is None and number == last, size=size)


def scrub_segment(
    fs: FS, path: str, number: int, report: ScrubReport, *, torn_ok: bool, size: int | None = None
) -> list[bytes] | None:
    """Read every frame of the WAL-format segment ``path`` (an engine's WAL, the
    broker's journal); a damaged frame is reported, and with ``torn_ok`` (the newest
    segment of a log that did not close cleanly) a torn tail the next start would cut
    is a note. The payloads read (up to a torn tail), or None if damaged."""
    try:
        data = fs.read_all(path)
        if torn_ok and is_torn_create(data):  # as the replay at start judges it
            report.note(path, f"torn create of {len(data)} bytes (removed at start)")
            return []
        if size is not None:
            check_segment_size(path, len(data), size)
        check_header(path, data, number)
    except (DiskError, OSError) as exc:
        report.damage(path, str(exc))
        return None
    payloads, good_end, problem = scan_entries(data)
    if problem is None:
        return payloads
    where = f"entry {len(payloads)} at offset {good_end}: {problem}"
    changed = changed_frame(data, good_end) if torn_ok else None
    if torn_ok and later_frame(data, good_end + 1) is None and changed is None:
        report.note(path, f"torn tail of {len(data) - good_end} bytes (cut at start)")
        return payloads
    report.damage(path, where if changed is None else f"{where}: {changed}")
    return None
