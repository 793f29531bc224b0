"""Leveled compaction policy: a pure function from a ``Version`` to the next task.

No IO here: ``pick_compaction`` looks at a version and returns what to do,
``apply_task`` turns the finished work into the ``VersionEdit`` the engine records, and
``OutputSplitter`` tells the engine where to cut a merge's output into tables.

Shape (``CompactionOptions``): L0 holds flushed tables, which may overlap; L1..Ln hold
non-overlapping tables. L1's target size is ``l1_target_bytes`` and each next level's is
``level_size_ratio`` times larger. Each level gets a score: L0 its table count over
``l0_compaction_trigger``, L1..Ln-1 their bytes over their target (the bottom level has
nowhere to go). The level with the highest score of at least 1 is compacted:

- A table whose range overlaps nothing in the next level is *moved* (``TrivialMove``),
  a manifest edit that rewrites no data, down to the deepest level it can reach without
  crossing a table that overlaps it. An L0 table may move only if no OLDER L0 table
  overlaps it (a newer one may: it stays above and still wins). The log's ascending
  keys make every flushed table such a table, so the log is never rewritten.
- Otherwise tables are merged into the next level (``MergeTask``). From L0: the oldest
  table, grown to every L0 table that overlaps the range of those taken so far (so no L0
  table left behind shares a key with the output), plus every L1 table overlapping that
  range. From Ln: the table whose overlap with Ln+1 is smallest for its size, plus
  those Ln+1 tables. ``drop_tombstones`` is set when no level below the target has a
  table overlapping the inputs' range: there is nothing older left for a tombstone to
  hide.

Concurrency: the engine runs one task at a time and applies its edit to the version it
was picked from, or to a later one that differs only by flushed L0 tables (which are
newer than everything a task touches, so they stay correctly above its output).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sentinel.errors import InvalidArgumentError
from sentinel.storage.files import TableMeta
from sentinel.storage.version import InvariantError, Version, VersionEdit, key_range

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class CompactionOptions:
    #: Compact L0 when it holds this many tables.
    l0_compaction_trigger: int = 4
    #: Target size of L1; L(n+1)'s is ``level_size_ratio`` times L(n)'s.
    l1_target_bytes: int = 64 * MiB
    level_size_ratio: int = 10
    #: Merge outputs are cut into tables of about this size.
    target_file_bytes: int = 64 * MiB
    #: An output is also cut before it overlaps more than this many bytes of the level
    #: below its target, so that compacting it later stays bounded.
    max_grandparent_overlap_bytes: int = 10 * 64 * MiB
    #: Key prefixes of families that a merge never writes into one table (RocksDB's SST
    #: partitioner): a table of one family that only grows at its end (a log's data
    #: keys) then overlaps nothing older and is moved down, where a table spanning two
    #: families (data, and the checkpoints beside it) would overlap every other and be
    #: rewritten by every merge below it. Keys under none of them form one more family.
    table_families: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if self.l0_compaction_trigger < 1:
            raise InvalidArgumentError("l0_compaction_trigger must be at least 1")
        if self.l1_target_bytes < 1 or self.target_file_bytes < 1:
            raise InvalidArgumentError("l1_target_bytes and target_file_bytes must be positive")
        if self.level_size_ratio < 2:
            raise InvalidArgumentError("level_size_ratio must be at least 2")
        if self.max_grandparent_overlap_bytes < 1:
            raise InvalidArgumentError("max_grandparent_overlap_bytes must be positive")
        if not all(isinstance(p, bytes) and p for p in self.table_families):
            raise InvalidArgumentError("table_families are non-empty byte prefixes")


def family_of(key: bytes, families: tuple[bytes, ...]) -> bytes:
    """The prefix of ``families`` that ``key`` starts with (the first that does), or
    ``b""`` for a key under none."""
    for prefix in families:
        if key.startswith(prefix):
            return prefix
    return b""


@dataclass(frozen=True, slots=True)
class TrivialMove:
    """Move ``table`` from ``level`` to ``target_level`` without rewriting it."""

    level: int
    table: TableMeta
    target_level: int

    def __post_init__(self) -> None:
        if not 0 <= self.level < self.target_level:
            raise InvariantError(f"a move goes down: L{self.level} -> L{self.target_level}")


@dataclass(frozen=True, slots=True)
class MergeTask:
    """Merge ``inputs`` (of ``level``) with ``next_level_inputs`` (of ``target_level``)
    into new tables of ``target_level``.

    ``inputs`` are in read order: for L0, NEWEST FIRST, which is the order to hand their
    entries to ``merge_entries``, followed by the next level's tables (concatenated: they
    do not overlap). If ``drop_tombstones``, the output keeps no tombstones.
    """

    level: int
    inputs: tuple[TableMeta, ...]
    target_level: int
    next_level_inputs: tuple[TableMeta, ...]
    drop_tombstones: bool

    def __post_init__(self) -> None:
        if not self.inputs:
            raise InvariantError("a merge needs at least one input table")
        if self.level < 0 or self.target_level != self.level + 1:
            raise InvariantError(
                f"a merge goes one level down: L{self.level} -> L{self.target_level}"
            )

    @property
    def input_bytes(self) -> int:
        return sum(t.size for t in self.inputs) + sum(t.size for t in self.next_level_inputs)

    @property
    def key_range(self) -> tuple[bytes, bytes]:
        """The smallest and largest key any input may hold."""
        return key_range((*self.inputs, *self.next_level_inputs))


CompactionTask = TrivialMove | MergeTask


# ------------------------------------------------------------------- scoring


def level_target_bytes(level: int, options: CompactionOptions) -> int:
    """The target size of ``level`` (1 and up)."""
    if level < 1:
        raise InvalidArgumentError("L0 is sized by table count, not bytes")
    return options.l1_target_bytes * int(options.level_size_ratio ** (level - 1))


def level_scores(version: Version, options: CompactionOptions) -> tuple[float, ...]:
    """Per level, how urgently it needs compacting (>= 1: it does). The bottom level
    scores 0: there is nowhere to compact it to."""
    scores = [len(version.levels[0]) / options.l0_compaction_trigger]
    for level in range(1, version.num_levels):
        scores.append(version.level_bytes(level) / level_target_bytes(level, options))
    scores[-1] = 0.0
    return tuple(scores)


# ------------------------------------------------------------------- picking


def pick_compaction(version: Version, options: CompactionOptions) -> CompactionTask | None:
    """The task for the level with the highest score >= 1, or None if none needs one."""
    scores = level_scores(version, options)
    urgent = sorted(
        (level for level, score in enumerate(scores) if score >= 1.0),
        key=lambda level: (-scores[level], level),
    )
    for level in urgent:
        task = _pick_l0(version) if level == 0 else _pick_level(version, level)
        if task is not None:
            return task
    return None


def _overlaps_any(version: Version, level: int, low: bytes, high: bytes) -> bool:
    return bool(version.overlapping(level, low, high))


def _move_target(version: Version, table: TableMeta, first: int) -> int:
    """The deepest level from ``first`` on that ``table`` reaches without passing a level
    holding a table that overlaps it (``first`` itself must hold none)."""
    target = first
    for level in range(first + 1, version.num_levels):
        if _overlaps_any(version, level, table.min_key, table.max_key):
            break
        target = level
    return target


def _bottom_for(version: Version, target: int, tables: Iterable[TableMeta]) -> bool:
    """True if no level below ``target`` holds a table overlapping ``tables``' range."""
    low, high = key_range(tables)
    return not any(
        _overlaps_any(version, level, low, high) for level in range(target + 1, version.num_levels)
    )


def _pick_l0(version: Version) -> CompactionTask | None:
    if version.num_levels < 2:
        return None
    l0 = version.levels[0]  # newest first
    for index in range(len(l0) - 1, -1, -1):  # oldest first
        table = l0[index]
        older = l0[index + 1 :]
        if any(t.overlaps(table.min_key, table.max_key) for t in older):
            continue
        if not _overlaps_any(version, 1, table.min_key, table.max_key):
            return TrivialMove(0, table, _move_target(version, table, 1))
    if not l0:
        return None
    # Merge: start from the oldest table and take in every L0 table overlapping the
    # range taken so far, until the range stops growing.
    taken = {l0[-1].file_number}
    low, high = l0[-1].min_key, l0[-1].max_key
    grown = True
    while grown:
        grown = False
        for table in l0:
            if table.file_number not in taken and table.overlaps(low, high):
                taken.add(table.file_number)
                low, high = min(low, table.min_key), max(high, table.max_key)
                grown = True
    inputs = tuple(t for t in l0 if t.file_number in taken)
    below = version.overlapping(1, low, high)
    return MergeTask(
        level=0,
        inputs=inputs,
        target_level=1,
        next_level_inputs=below,
        drop_tombstones=_bottom_for(version, 1, (*inputs, *below)),
    )


def _pick_level(version: Version, level: int) -> CompactionTask | None:
    if level >= version.num_levels - 1:
        return None
    best: tuple[float, TableMeta, tuple[TableMeta, ...]] | None = None
    for table in version.levels[level]:
        below = version.overlapping(level + 1, table.min_key, table.max_key)
        if not below:
            return TrivialMove(level, table, _move_target(version, table, level + 1))
        ratio = sum(t.size for t in below) / max(table.size, 1)
        if best is None or ratio < best[0]:
            best = (ratio, table, below)
    if best is None:
        return None
    _ratio, table, below = best
    return MergeTask(
        level=level,
        inputs=(table,),
        target_level=level + 1,
        next_level_inputs=below,
        drop_tombstones=_bottom_for(version, level + 1, (table, *below)),
    )


# ------------------------------------------------------------------ applying


def apply_task(
    version: Version,
    task: CompactionTask,
    outputs: Sequence[TableMeta] = (),
    *,
    next_file_number: int | None = None,
) -> VersionEdit:
    """The edit that records ``task`` done: a move, or the inputs replaced by
    ``outputs`` (sorted, non-overlapping tables of the target level; none if every
    entry was a dropped tombstone). Raises ``InvariantError`` if the edit does not apply
    to ``version``."""
    if isinstance(task, TrivialMove):
        if outputs:
            raise InvariantError("a trivial move writes no tables")
        edit = VersionEdit(
            added=((task.target_level, task.table),),
            removed=((task.level, task.table.file_number),),
            next_file_number=next_file_number,
        )
    else:
        removed = [(task.level, t.file_number) for t in task.inputs]
        removed.extend((task.target_level, t.file_number) for t in task.next_level_inputs)
        edit = VersionEdit(
            added=tuple((task.target_level, t) for t in outputs),
            removed=tuple(removed),
            next_file_number=next_file_number,
        )
    version.apply(edit)  # validate now: the caller learns before it writes the manifest
    return edit


class OutputSplitter:
    """Where a merge cuts its output into tables.

    For each key, in order, before adding it to the current output, call
    ``should_cut(key, output_bytes)``; True means: finish the current output and start
    a new one with this key. An output is cut once it holds ``target_file_bytes``, or
    before it would overlap more than ``max_grandparent_overlap_bytes`` of the level
    below the target (so the next compaction of that output stays bounded).
    """

    def __init__(self, version: Version, task: MergeTask, options: CompactionOptions) -> None:
        grand = task.target_level + 1
        self._grandparents = version.levels[grand] if grand < version.num_levels else ()
        self._options = options
        self._index = 0
        self._overlap = 0
        self._seen_key = False

    def should_cut(self, key: bytes, output_bytes: int) -> bool:
        grandparents = self._grandparents
        while self._index < len(grandparents) and key > grandparents[self._index].max_key:
            if self._seen_key:
                self._overlap += grandparents[self._index].size
            self._index += 1
        self._seen_key = True
        if output_bytes <= 0:
            self._overlap = 0
            return False
        too_big = output_bytes >= self._options.target_file_bytes
        if too_big or self._overlap > self._options.max_grandparent_overlap_bytes:
            self._overlap = 0
            return True
        return False
