"""The leveled compaction policy: unit cases, and a simulated LSM (tables with real
entries) checked against a dict after every flush and every task."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.errors import InvalidArgumentError
from sentinel.storage.compaction import (
    CompactionOptions,
    MergeTask,
    OutputSplitter,
    TrivialMove,
    apply_task,
    family_of,
    level_scores,
    level_target_bytes,
    pick_compaction,
)
from sentinel.storage.entry import Entry
from sentinel.storage.files import TableMeta
from sentinel.storage.iterators import concat_entries, merge_entries
from sentinel.storage.version import InvariantError, Version, VersionEdit, key_range


def meta(number: int, low: bytes, high: bytes, size: int = 100) -> TableMeta:
    return TableMeta(file_number=number, size=size, entry_count=1, min_key=low, max_key=high)


def build(*tables: tuple[int, TableMeta], levels: int = 7) -> Version:
    return Version.empty(levels).apply(VersionEdit(added=tables))


OPTS = CompactionOptions(l0_compaction_trigger=2, l1_target_bytes=1000, level_size_ratio=10)


# ---------------------------------------------------------------- options/scores


def test_options_validate() -> None:
    for bad in (
        {"l0_compaction_trigger": 0},
        {"l1_target_bytes": 0},
        {"level_size_ratio": 1},
        {"target_file_bytes": 0},
        {"max_grandparent_overlap_bytes": 0},
    ):
        with pytest.raises(InvalidArgumentError):
            CompactionOptions(**bad)  # type: ignore[arg-type]


def test_level_targets_and_scores() -> None:
    assert level_target_bytes(1, OPTS) == 1000
    assert level_target_bytes(3, OPTS) == 100_000
    with pytest.raises(InvalidArgumentError):
        level_target_bytes(0, OPTS)
    version = build(
        (0, meta(9, b"a", b"b")),
        (1, meta(1, b"a", b"b", size=1500)),
        (2, meta(2, b"a", b"b", size=5000)),
        (6, meta(3, b"a", b"b", size=10**12)),
    )
    assert level_scores(version, OPTS) == (0.5, 1.5, 0.5, 0.0, 0.0, 0.0, 0.0)


def test_nothing_to_do() -> None:
    assert pick_compaction(Version.empty(), OPTS) is None
    assert pick_compaction(build((0, meta(1, b"a", b"z"))), OPTS) is None
    # The bottom level is never compacted, however large.
    assert pick_compaction(build((6, meta(1, b"a", b"z", size=10**15))), OPTS) is None


# ------------------------------------------------------------------ trivial moves


def test_l0_table_over_empty_levels_moves_to_the_bottom() -> None:
    version = build((0, meta(1, b"a", b"c")), (0, meta(2, b"d", b"f")))
    task = pick_compaction(version, OPTS)
    assert task == TrivialMove(0, meta(1, b"a", b"c"), 6)  # the oldest first


def test_move_stops_above_the_first_overlapping_level() -> None:
    version = build(
        (0, meta(1, b"a", b"c")),
        (0, meta(2, b"x", b"z")),
        (4, meta(3, b"b", b"b")),
    )
    assert pick_compaction(version, OPTS) == TrivialMove(0, meta(1, b"a", b"c"), 3)


def test_l0_table_overlapped_by_an_older_one_does_not_move() -> None:
    older = meta(1, b"a", b"m")
    newer = meta(2, b"k", b"z")
    version = build((0, older), (0, newer), (1, meta(3, b"a", b"c")))
    task = pick_compaction(version, OPTS)
    # The older one overlaps L1: it must merge, and takes the newer one with it.
    assert isinstance(task, MergeTask)
    assert task.inputs == (newer, older)  # newest first
    assert task.next_level_inputs == (meta(3, b"a", b"c"),)


def test_a_newer_overlapping_l0_table_does_not_block_a_move() -> None:
    older = meta(1, b"k", b"m")
    newer = meta(2, b"a", b"z")
    version = build((0, older), (0, newer), (6, meta(3, b"a", b"b")))
    assert pick_compaction(version, OPTS) == TrivialMove(0, older, 6)


def test_lower_level_table_without_overlap_below_moves() -> None:
    version = build(
        (1, meta(1, b"a", b"c", size=600)),
        (1, meta(2, b"d", b"f", size=600)),
        (2, meta(3, b"a", b"b")),
    )
    assert pick_compaction(version, OPTS) == TrivialMove(1, meta(2, b"d", b"f", size=600), 6)


def test_apply_trivial_move() -> None:
    version = build((0, meta(1, b"a", b"c")), (0, meta(2, b"d", b"f")))
    task = TrivialMove(0, meta(1, b"a", b"c"), 6)
    edit = apply_task(version, task, (), next_file_number=10)
    assert edit == VersionEdit(
        added=((6, meta(1, b"a", b"c")),), removed=((0, 1),), next_file_number=10
    )
    assert version.apply(edit).levels[6] == (meta(1, b"a", b"c"),)
    with pytest.raises(InvariantError):
        apply_task(version, task, (meta(5, b"a", b"b"),))
    with pytest.raises(InvariantError):
        TrivialMove(2, meta(1, b"a", b"b"), 2)


# ------------------------------------------------------------------------ merges


def test_overlapping_l0_merges_with_every_overlapping_l1_table() -> None:
    l1 = [meta(10 + i, bytes([97 + 2 * i]), bytes([98 + 2 * i])) for i in range(10)]  # a-b .. s-t
    version = build(
        (0, meta(30, b"c", b"e")),
        (0, meta(31, b"d", b"h")),
        (0, meta(32, b"x", b"z")),  # does not overlap c..h: not taken
        *((1, t) for t in l1),
        (1, meta(50, b"w", b"z")),  # (so that table 32 cannot simply move)
        (2, meta(40, b"q", b"r")),
    )
    task = pick_compaction(version, OPTS)
    assert isinstance(task, MergeTask)
    assert [t.file_number for t in task.inputs] == [31, 30]
    assert [t.file_number for t in task.next_level_inputs] == [11, 12, 13]  # c-d, e-f, g-h
    assert task.target_level == 1
    assert task.drop_tombstones  # nothing below L1 in c..h
    assert task.key_range == (b"c", b"h")
    assert task.input_bytes == 500


def test_tombstones_are_kept_when_a_deeper_level_overlaps() -> None:
    version = build(
        (0, meta(30, b"c", b"e")),
        (0, meta(31, b"d", b"h")),
        (1, meta(10, b"a", b"d")),
        (5, meta(40, b"h", b"k")),  # touches the range through the inputs
    )
    task = pick_compaction(version, OPTS)
    assert isinstance(task, MergeTask)
    assert not task.drop_tombstones


def test_lower_level_merge_picks_the_smallest_overlap() -> None:
    version = build(
        (1, meta(1, b"a", b"c", size=800)),
        (1, meta(2, b"d", b"f", size=800)),
        (2, meta(3, b"a", b"c", size=5000)),
        (2, meta(4, b"d", b"d", size=100)),
        (2, meta(5, b"e", b"f", size=100)),
    )
    task = pick_compaction(version, OPTS)
    assert task == MergeTask(
        level=1,
        inputs=(meta(2, b"d", b"f", size=800),),
        target_level=2,
        next_level_inputs=(meta(4, b"d", b"d", size=100), meta(5, b"e", b"f", size=100)),
        drop_tombstones=True,
    )
    outputs = (meta(9, b"d", b"e"), meta(10, b"f", b"f"))
    edit = apply_task(version, task, outputs, next_file_number=11)
    after = version.apply(edit)
    assert after.levels[1] == (meta(1, b"a", b"c", size=800),)
    assert [t.file_number for t in after.levels[2]] == [3, 9, 10]
    with pytest.raises(InvariantError):  # an output that overlaps a table left in L2
        apply_task(version, task, (meta(9, b"b", b"e"),))


def test_highest_score_wins() -> None:
    version = build(
        (0, meta(20, b"a", b"z")),
        (0, meta(21, b"a", b"z")),  # L0 score 1.0
        (1, meta(1, b"a", b"z", size=3000)),  # L1 score 3.0
        (2, meta(2, b"a", b"z")),
    )
    task = pick_compaction(version, OPTS)
    assert isinstance(task, MergeTask)
    assert task.level == 1


def test_merge_task_validates() -> None:
    with pytest.raises(InvariantError):
        MergeTask(0, (), 1, (), False)
    with pytest.raises(InvariantError):
        MergeTask(0, (meta(1, b"a", b"b"),), 2, (), False)


# ------------------------------------------------------------------ output cuts


def test_output_splitter_cuts_by_size_and_grandparent_overlap() -> None:
    version = build(
        (1, meta(1, b"\x00", b"\xff")),
        *((3, meta(10 + i, bytes([i * 10]), bytes([i * 10 + 5]), size=100)) for i in range(20)),
    )
    task = MergeTask(1, (meta(1, b"\x00", b"\xff"),), 2, (), False)
    options = CompactionOptions(target_file_bytes=1000, max_grandparent_overlap_bytes=250)
    splitter = OutputSplitter(version, task, options)
    cuts = []
    size = 0
    for key in range(0, 200, 2):
        if splitter.should_cut(bytes([key]), size):
            cuts.append(key)
            size = 0
        size += 10
    # Each output may overlap at most 250 bytes (2 tables) of L3 before being cut.
    assert cuts and all(b - a <= 40 for a, b in itertools.pairwise([0, *cuts]))
    big = OutputSplitter(version, task, CompactionOptions(target_file_bytes=100))
    assert not big.should_cut(b"\x00", 0)
    assert not big.should_cut(b"\x01", 99)
    assert big.should_cut(b"\x02", 100)


# ------------------------------------------------------- random versions: invariants


@st.composite
def versions(draw: st.DrawFn) -> Version:
    numbers = itertools.count(1)
    key = st.binary(min_size=1, max_size=2)
    levels: list[tuple[TableMeta, ...]] = []
    l0 = []
    for _ in range(draw(st.integers(0, 6))):
        a, b = sorted((draw(key), draw(key)))
        l0.append(meta(next(numbers), a, b, size=draw(st.integers(1, 800))))
    levels.append(tuple(reversed(l0)))
    for _ in range(1, draw(st.integers(2, 6))):
        bounds = sorted(set(draw(st.lists(key, max_size=12))))
        tables = []
        for i in range(0, len(bounds) - 1, 2):
            size = draw(st.integers(1, 800))
            tables.append(meta(next(numbers), bounds[i], bounds[i + 1], size=size))
        levels.append(tuple(tables))
    return Version(levels=tuple(levels))


@given(versions(), st.integers(1, 4), st.integers(100, 3000))
def test_any_picked_task_applies_and_keeps_the_invariants(
    version: Version, trigger: int, l1_target: int
) -> None:
    options = CompactionOptions(l0_compaction_trigger=trigger, l1_target_bytes=l1_target)
    numbers = itertools.count(10_000)
    for _ in range(20):
        task = pick_compaction(version, options)
        if task is None:
            break
        if isinstance(task, TrivialMove):
            low, high = task.table.min_key, task.table.max_key
            for level in range(task.level + 1, task.target_level + 1):
                assert not version.overlapping(level, low, high)
            outputs: tuple[TableMeta, ...] = ()
        else:
            low, high = task.key_range
            below = version.overlapping(task.target_level, *key_range(task.inputs))
            assert set(task.next_level_inputs) == set(below)
            deeper = any(
                version.overlapping(level, low, high)
                for level in range(task.target_level + 1, version.num_levels)
            )
            assert task.drop_tombstones == (not deeper)
            outputs = (meta(next(numbers), low, high, size=task.input_bytes),)
        version = version.apply(apply_task(version, task, outputs))  # validates every level
    else:
        pytest.fail("the policy never settles")


# ------------------------------------------- a simulated LSM against a dict model


class Lsm:
    """Tables with real entries, compacted by the policy, read like the engine reads."""

    def __init__(self, options: CompactionOptions, levels: int, cut: int) -> None:
        self.options = options
        self.version = Version.empty(levels)
        self.data: dict[int, dict[bytes, bytes | None]] = {}
        self.numbers = itertools.count(1)
        self.cut = cut
        self.tasks: list[TrivialMove | MergeTask] = []

    def _table(self, entries: dict[bytes, bytes | None]) -> TableMeta:
        number = next(self.numbers)
        self.data[number] = entries
        return meta(number, min(entries), max(entries), size=10 * len(entries))

    def flush(self, entries: dict[bytes, bytes | None]) -> None:
        if entries:
            self.version = self.version.apply(VersionEdit(added=((0, self._table(entries)),)))

    def _entries(self, table: TableMeta) -> Iterator[Entry]:
        return iter(sorted(self.data[table.file_number].items()))

    def step(self) -> bool:
        task = pick_compaction(self.version, self.options)
        if task is None:
            return False
        self.tasks.append(task)
        outputs: list[TableMeta] = []
        if isinstance(task, MergeTask):
            sources = [self._entries(t) for t in task.inputs]
            lower = [(lambda s, e, t=t: self._entries(t)) for t in task.next_level_inputs]
            sources.append(concat_entries(lower))
            merged = [
                e for e in merge_entries(sources) if e[1] is not None or not task.drop_tombstones
            ]
            for i in range(0, len(merged), self.cut):
                outputs.append(self._table(dict(merged[i : i + self.cut])))
        self.version = self.version.apply(apply_task(self.version, task, outputs))
        return True

    def get(self, key: bytes) -> bytes | None:
        for table in self.version.tables_for_key(key):
            entries = self.data[table.file_number]
            if key in entries:
                return entries[key]
        return None


flushes = st.lists(
    st.dictionaries(
        st.binary(min_size=1, max_size=1), st.one_of(st.none(), st.binary(max_size=2)), max_size=12
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(
    flushes,
    st.integers(1, 4),
    st.integers(20, 400),
    st.integers(2, 4),
    st.integers(2, 7),
    st.integers(1, 8),
)
def test_reads_match_a_dict_through_flushes_and_compactions(
    batches: list[dict[bytes, bytes | None]],
    trigger: int,
    l1_target: int,
    ratio: int,
    levels: int,
    cut: int,
) -> None:
    options = CompactionOptions(
        l0_compaction_trigger=trigger, l1_target_bytes=l1_target, level_size_ratio=ratio
    )
    lsm = Lsm(options, levels, cut)
    model: dict[bytes, bytes | None] = {}
    universe = [bytes([i]) for i in range(256)]
    for batch in batches:
        lsm.flush(batch)
        model.update(batch)
        for _ in range(200):
            if not lsm.step():
                break
            assert [lsm.get(k) for k in universe] == [model.get(k) for k in universe]
        else:
            pytest.fail("the policy never settles")
    scores = level_scores(lsm.version, options)
    assert all(score < 1 for score in scores)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=40), st.integers(1, 4), st.integers(2, 7))
def test_ascending_flushes_are_only_ever_moved(sizes: list[int], trigger: int, levels: int) -> None:
    options = CompactionOptions(l0_compaction_trigger=trigger, l1_target_bytes=50)
    lsm = Lsm(options, levels, cut=1000)
    offset = 0
    for size in sizes:
        keys = [offset + i for i in range(size)]
        offset += size
        lsm.flush({k.to_bytes(4, "big"): b"batch" for k in keys})
        while lsm.step():
            pass
        assert len(lsm.version.levels[0]) < trigger
    assert len(lsm.tasks) >= len(sizes) - trigger + 1
    assert all(isinstance(task, TrivialMove) for task in lsm.tasks)
    assert sum(len(t) for t in lsm.version.levels[1:]) + len(lsm.version.levels[0]) == len(sizes)


def test_a_key_belongs_to_the_first_family_it_starts_with() -> None:
    families = (b"D", b"MC", b"MT")
    assert family_of(b"D\x00\x01", families) == b"D"
    assert family_of(b"MC\x00", families) == b"MC"
    assert family_of(b"MX\x00", families) == b""  # under none: a family of its own
    assert family_of(b"", families) == b""
    with pytest.raises(InvalidArgumentError):
        CompactionOptions(table_families=(b"D", b""))
