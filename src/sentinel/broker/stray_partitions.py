"""Partition directories a topic's record does not list, judged as a start judges them.

A topic's directory holds one directory per partition, named by its index. One at or
past the record's partition count is *stray*. A crash while the topic grew (Kafka's
CreatePartitions: the directories are made before the record counts them, and the meta
store says the growth is pending, ``GROWING``) leaves such directories with no record
in them: they are removed. An empty one is removed too. Any other may hold
acknowledged records whose definition the meta store lost (its record cut back; or the
write that ended the growth, so that it still looks pending: records prove it ended,
``holds_records``):
removing it would drop them, and leaving it would let the topic's next growth reopen it
with its old records, so the start is refused naming it (or, with ``--skip-damaged``,
it is kept, unserved, and the topic cannot grow over it). Names that are not a
partition index (digits, no leading zero) are not the broker's and are left alone.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from sentinel.broker.meta_store import DELETING
from sentinel.fs import FS
from sentinel.storage.wal_format import HEADER_SIZE


@dataclass(frozen=True, slots=True)
class StrayPartitions:
    """What a start does with one topic's stray partition directories."""

    remove: tuple[str, ...] = ()
    """Directories to remove: left by a crashed growth, or empty."""
    damaged: tuple[tuple[int, str], ...] = ()
    """(index, directory) of those that hold files the topic's record does not count."""


def partition_index(name: str) -> int | None:
    """The partition index a directory name spells, or None if it is not one."""
    if not name.isdigit() or (len(name) > 1 and name[0] == "0"):
        return None
    return int(name)


def judge(fs: FS, topic_dir: str, partitions: int, *, growing: bool) -> StrayPartitions:
    """Judge the directories under ``topic_dir`` whose index is ``partitions`` or more;
    ``growing``: the meta store records the topic's growth as pending."""
    if not fs.is_dir(topic_dir):
        return StrayPartitions()
    remove: list[str] = []
    damaged: list[tuple[int, str]] = []
    for name in sorted(fs.listdir(topic_dir)):
        index = partition_index(name)
        if index is None or index < partitions:
            continue
        directory = posixpath.join(topic_dir, name)
        if not fs.is_dir(directory):
            continue
        if not fs.listdir(directory) or (growing and not holds_records(fs, directory)):
            remove.append(directory)
        else:
            damaged.append((index, directory))
    return StrayPartitions(tuple(remove), tuple(damaged))


def damage_detail(topic: str, partitions: int) -> str:
    """Why a stray directory holding files is damage (its path goes before this)."""
    return (
        f"holds partition data but the meta store's record of topic {topic!r} lists "
        f"{partitions} partition{'' if partitions == 1 else 's'} (its growth was lost)"
    )


def holds_records(fs: FS, directory: str) -> bool:
    """Whether a partition directory holds records: a table, or a WAL segment with an
    entry (longer than its header). A create or a growth makes each engine empty, and
    no record is acknowledged before the topic's record counting it is durable: records
    under a creation or growth that looks pending mean that the meta store lost the
    write that ended it (a cut WAL tail), not a crash in the middle of it."""
    for name in fs.listdir(directory):
        if name.endswith(".sst"):
            return True
        if ".wal" in name and fs.file_size(posixpath.join(directory, name)) > HEADER_SIZE:
            return True
    return False


def removable_orphan(fs: FS, topic_dir: str, pending: str | None) -> bool:
    """Whether a topic directory that no definition names is what a crash left, which a
    start removes: empty, mid-delete (``DELETING``), or mid-create with no partition
    holding records. Otherwise it holds data whose definition the meta store lost."""
    entries = fs.listdir(topic_dir)
    if not entries or pending == DELETING:
        return True
    if pending is None:
        return False
    return not any(
        holds_records(fs, path)
        for path in (posixpath.join(topic_dir, name) for name in entries)
        if fs.is_dir(path)
    )
