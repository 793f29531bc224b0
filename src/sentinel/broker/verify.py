"""``sentinel-server --verify``: scrub a broker's whole data directory, read-only.

The meta store first (``meta/``), then every partition the meta store lists
(``topics/<topic>/<partition>/``): a listed partition whose directory is gone is
damage, and so is a topic directory holding data that the meta store neither defines
nor records as being created or deleted, and a partition directory past its topic's
partition count holding data (``stray_partitions``; the start refuses both); then the broker's
journal (``journal/``), if a crash left one. The topic list is read from a copy of the
meta store in memory, so that nothing under the data directory is written (the
engine's open would write a new manifest). If the meta store itself is damaged, every
partition directory found is scrubbed instead.

Each engine's manifest is judged as its open would judge it: after a clean shutdown
the record pins it (a manifest changed since is the one damage reported); after a crash
a cut last edit whose older state needs a file that is gone blames the manifest, not
the file (``recovery.blame_torn_manifest``).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from sentinel.broker import stray_partitions
from sentinel.broker.meta_store import GROWING, MetaStore
from sentinel.errors import CorruptionError, DiskError, MissingFileError, SentinelError
from sentinel.fs import FS, MemFS
from sentinel.storage import clean_marker
from sentinel.storage import manifest as manifest_mod
from sentinel.storage.files import LOCK_NAME
from sentinel.storage.journal import scrub_journal
from sentinel.storage.recovery import blame_torn_manifest
from sentinel.storage.scrub import Damage, ScrubReport, scrub_engine


@dataclass(frozen=True, slots=True)
class _Listed:
    """What the meta store accounts for under ``topics/``."""

    partitions: list[tuple[str, int]]
    """(topic, partition) of every partition it lists (and this broker hosts)."""
    names: set[str]
    """The topics it defines."""
    pending: dict[str, str]
    """The topics being created, deleted or grown (``MetaStore.pending``)."""
    counts: dict[str, tuple[int, bool]]
    """Per defined topic: its partition count, and whether its growth is pending."""


def _listed_partitions(fs: FS, meta_dir: str) -> _Listed | None:
    """What the meta store lists (``_Listed``); None if unreadable."""
    copy = MemFS()
    copy.makedirs("/meta")
    for name in fs.listdir(meta_dir):
        if name == LOCK_NAME:
            continue
        handle = copy.create(f"/meta/{name}")
        handle.write(fs.read_all(posixpath.join(meta_dir, name)))
        handle.sync()
        handle.close()
    copy.sync_dir("/meta")
    try:
        meta = MetaStore.open(copy, "/meta")
    except SentinelError:
        return None
    try:
        records = list(meta.topics())
        pending = meta.pending()
        return _Listed(
            [(r.name, i) for r in records for i in range(r.partitions) if r.is_hosted(i)],
            {r.name for r in records},
            pending,
            {r.name: (r.partitions, pending.get(r.name) == GROWING) for r in records},
        )
    finally:
        meta.close()


def _scrub(fs: FS, directory: str, report: ScrubReport) -> None:
    """``scrub_engine``, with the manifest judged first (see the module docstring)."""
    try:
        record = clean_marker.read_record(fs, directory)
        if record is not None and record.manifest is not None:
            clean_marker.check_manifest(fs, directory, record.manifest)
    except (CorruptionError, MissingFileError) as exc:
        report.files += 1
        report.damage(exc.path, str(exc))
        return
    except (DiskError, OSError):
        pass  # a record of a newer format, an unreadable file: the scrub reports it
    found = ScrubReport()
    scrub_engine(fs, directory, found)
    missing = [d for d in found.damaged if d.detail.startswith("missing")]
    if missing:
        try:
            recovered = manifest_mod.recover(fs, directory)
        except (DiskError, OSError):
            recovered = None  # the scrub reported why
        if recovered is not None and recovered.torn:
            blame = blame_torn_manifest(directory, recovered, missing[0].path)
            kept = [d for d in found.damaged if d not in missing]
            found.damaged = [*kept, Damage(blame.path, str(blame))]
    report.files += found.files
    report.damaged.extend(found.damaged)
    report.notes.extend(found.notes)


def verify_data_dir(fs: FS, data_dir: str) -> ScrubReport:
    """Scrub every engine under ``data_dir``; the report lists each damaged file."""
    report = ScrubReport()
    meta_dir = posixpath.join(data_dir, "meta")
    if not fs.is_dir(meta_dir):
        report.damage(meta_dir, "missing: the meta store")
        return report
    before = len(report.damaged)
    _scrub(fs, meta_dir, report)
    found = _listed_partitions(fs, meta_dir) if len(report.damaged) == before else None
    root = posixpath.join(data_dir, "topics")
    listed = None if found is None else found.partitions
    if found is not None and fs.is_dir(root):
        for topic in sorted(set(fs.listdir(root)) - found.names):
            directory = posixpath.join(root, topic)
            if fs.is_dir(directory) and not stray_partitions.removable_orphan(
                fs, directory, found.pending.get(topic)
            ):  # as the start judges it
                report.damage(directory, f"holds partition data but the meta store "
                              f"defines no topic {topic!r} (its records were lost)")
        for topic, (count, growing) in sorted(found.counts.items()):
            stray = stray_partitions.judge(
                fs, posixpath.join(root, topic), count, growing=growing
            )
            for _index, directory in stray.damaged:
                report.damage(directory, stray_partitions.damage_detail(topic, count))
    if listed is None:  # the meta store is damaged: scrub whatever is there
        topics = fs.listdir(root) if fs.is_dir(root) else []
        listed = [
            (topic, int(part))
            for topic in sorted(topics)
            for part in sorted(fs.listdir(posixpath.join(root, topic)))
            if part.isdigit()
        ]
    for topic, index in listed:
        directory = posixpath.join(root, topic, str(index))
        if not fs.is_dir(directory):
            report.damage(directory, f"missing: partition {topic}-{index}'s directory")
            continue
        _scrub(fs, directory, report)
    scrub_journal(fs, posixpath.join(data_dir, "journal"), report)
    return report
