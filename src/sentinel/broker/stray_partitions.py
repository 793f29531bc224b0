"""Partition directories a topic's record does not list, judged as a start judges them.

A topic's directory holds one directory per partition, named by its index. One at or
past the record's partition count is *stray*. A crash while the topic grew (Kafka's
CreatePartitions: the directories are made before the record counts them, and the meta
store says the growth is pending, ``GROWING``) leaves such directories with no record
in them: they are removed. An empty one is removed too. Any other may hold
acknowledged records whose definition the meta store lost (its record cut back):
removing it would drop them, and leaving it would let the topic's next growth reopen it
with its old records, so the start is refused naming it (or, with ``--skip-damaged``,
it is kept, unserved, and the topic cannot grow over it). Names that are not a
partition index (digits, no leading zero) are not the broker's and are left alone.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from sentinel.fs import FS


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
        if growing or not fs.listdir(directory):
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
