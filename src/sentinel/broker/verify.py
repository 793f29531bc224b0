"""``sentinel-server --verify``: scrub a broker's whole data directory, read-only.

The meta store first (``meta/``), then every partition the meta store lists
(``topics/<topic>/<partition>/``): a listed partition whose directory is gone is
damage; then the broker's journal (``journal/``), if a crash left one. The topic list
is read from a copy of the meta store in memory, so that nothing under the data
directory is written (the engine's open would write a new manifest). If the meta store
itself is damaged, every partition directory found is scrubbed instead.
"""

from __future__ import annotations

import posixpath

from sentinel.broker.meta_store import MetaStore
from sentinel.errors import SentinelError
from sentinel.fs import FS, MemFS
from sentinel.storage.files import LOCK_NAME
from sentinel.storage.journal import scrub_journal
from sentinel.storage.scrub import ScrubReport, scrub_engine


def _listed_partitions(fs: FS, meta_dir: str) -> list[tuple[str, int]] | None:
    """(topic, partition) for every partition the meta store lists; None if unreadable."""
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
        return [
            (r.name, i) for r in meta.topics() for i in range(r.partitions) if r.is_hosted(i)
        ]
    finally:
        meta.close()


def verify_data_dir(fs: FS, data_dir: str) -> ScrubReport:
    """Scrub every engine under ``data_dir``; the report lists each damaged file."""
    report = ScrubReport()
    meta_dir = posixpath.join(data_dir, "meta")
    if not fs.is_dir(meta_dir):
        report.damage(meta_dir, "missing: the meta store")
        return report
    before = len(report.damaged)
    scrub_engine(fs, meta_dir, report)
    listed = _listed_partitions(fs, meta_dir) if len(report.damaged) == before else None
    root = posixpath.join(data_dir, "topics")
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
        scrub_engine(fs, directory, report)
    scrub_journal(fs, posixpath.join(data_dir, "journal"), report)
    return report
