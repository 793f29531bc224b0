"""Version and VersionEdit: invariants, apply, and lookups against a brute-force oracle."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.errors import SentinelError
from sentinel.storage.files import TableMeta
from sentinel.storage.version import NUM_LEVELS, InvariantError, Version, VersionEdit, key_range

_numbers = itertools.count(1)


def table(low: bytes, high: bytes, number: int | None = None, size: int = 100) -> TableMeta:
    return TableMeta(
        file_number=next(_numbers) if number is None else number,
        size=size,
        entry_count=1,
        min_key=low,
        max_key=high,
    )


def test_empty_version() -> None:
    version = Version.empty()
    assert version.num_levels == NUM_LEVELS
    assert version.all_tables() == []
    assert version.tables_for_key(b"x") == []
    assert version.all_file_numbers() == frozenset()
    assert version.level_bytes(3) == 0


def test_l0_is_kept_newest_first_whatever_the_edit_order() -> None:
    version = Version.empty().apply(
        VersionEdit(added=((0, table(b"a", b"z", 5)), (0, table(b"a", b"z", 9))))
    )
    version = version.apply(VersionEdit(added=((0, table(b"c", b"d", 7)),)))
    assert [t.file_number for t in version.levels[0]] == [9, 7, 5]
    assert [t.file_number for t in version.tables_for_key(b"c")] == [9, 7, 5]
    assert [t.file_number for t in version.tables_for_key(b"b")] == [9, 5]


def test_lower_levels_are_sorted_by_key() -> None:
    version = Version.empty().apply(
        VersionEdit(
            added=((1, table(b"m", b"p", 1)), (1, table(b"a", b"c", 2)), (1, table(b"d", b"d", 3)))
        )
    )
    assert [t.min_key for t in version.levels[1]] == [b"a", b"d", b"m"]
    assert version.level_bytes(1) == 300


@pytest.mark.parametrize(
    ("low", "high"),
    [(b"b", b"e"), (b"c", b"c"), (b"a", b"z"), (b"n", b"n"), (b"l", b"m")],
)
def test_overlap_in_a_lower_level_is_refused(low: bytes, high: bytes) -> None:
    version = Version.empty().apply(
        VersionEdit(added=((2, table(b"a", b"c", 1)), (2, table(b"m", b"p", 2))))
    )
    with pytest.raises(InvariantError):
        version.apply(VersionEdit(added=((2, table(low, high, 3)),)))
    # The same table is fine in L0, or in a level of its own.
    version.apply(VersionEdit(added=((0, table(low, high, 3)),)))
    version.apply(VersionEdit(added=((3, table(low, high, 3)),)))


def test_bad_edits_are_refused_and_leave_the_version_unchanged() -> None:
    version = Version.empty().apply(VersionEdit(added=((1, table(b"a", b"c", 1)),)))
    bad = [
        VersionEdit(removed=((1, 99),)),  # unknown table
        VersionEdit(removed=((2, 1),)),  # wrong level
        VersionEdit(removed=((NUM_LEVELS, 1),)),  # missing level
        VersionEdit(added=((NUM_LEVELS, table(b"x", b"y", 2)),)),
        VersionEdit(added=((0, table(b"x", b"y", 1)),)),  # number already live
        VersionEdit(added=((0, table(b"x", b"y", 2)), (3, table(b"x", b"y", 2)))),
    ]
    for edit in bad:
        with pytest.raises(InvariantError):
            version.apply(edit)
    assert [t.file_number for t in version.all_tables()] == [1]


def test_edit_validates_on_construction() -> None:
    with pytest.raises(InvariantError):
        VersionEdit(added=((-1, table(b"a", b"b")),))
    with pytest.raises(InvariantError):
        VersionEdit(added=((0, table(b"b", b"a")),))
    with pytest.raises(InvariantError):
        VersionEdit(removed=((0, -1),))
    with pytest.raises(InvariantError):
        VersionEdit(log_number=-1)
    assert issubclass(InvariantError, SentinelError)


def test_versions_are_immutable_values() -> None:
    version = Version.empty()
    with pytest.raises(dataclasses.FrozenInstanceError):
        version.levels = ()  # type: ignore[misc]
    same = Version.empty()
    assert version == same
    assert hash(version) == hash(same)


def test_a_move_is_a_removal_and_an_addition() -> None:
    t = table(b"a", b"c", 4)
    version = Version.empty().apply(VersionEdit(added=((0, t),)))
    moved = version.apply(VersionEdit(removed=((0, 4),), added=((5, t),)))
    assert moved.levels[0] == ()
    assert moved.levels[5] == (t,)
    assert moved.find(4) == (5, t)
    assert version.find(4) == (0, t)
    assert moved.find(5) is None


def test_constructing_a_bad_version_directly_raises() -> None:
    with pytest.raises(InvariantError):
        Version(levels=((table(b"a", b"b", 1), table(b"a", b"b", 2)),))  # L0 oldest first
    with pytest.raises(InvariantError):
        Version(levels=((), (table(b"a", b"b", 1), table(b"b", b"c", 2))))
    with pytest.raises(InvariantError):
        Version(levels=((table(b"a", b"b", 1),), (table(b"c", b"d", 1),)))
    with pytest.raises(InvariantError):
        Version(levels=())


def test_key_range() -> None:
    assert key_range([table(b"c", b"d"), table(b"a", b"b"), table(b"b", b"z")]) == (b"a", b"z")
    with pytest.raises(InvariantError):
        key_range([])


# ------------------------------------------------------- random versions vs an oracle


@st.composite
def versions(draw: st.DrawFn) -> Version:
    numbers = iter(range(1, 10_000))
    small_keys = st.binary(min_size=1, max_size=2)
    levels: list[tuple[TableMeta, ...]] = []
    l0 = []
    for _ in range(draw(st.integers(0, 5))):
        a, b = sorted((draw(small_keys), draw(small_keys)))
        l0.append(table(a, b, next(numbers), size=draw(st.integers(1, 1000))))
    levels.append(tuple(reversed(l0)))
    for _ in range(1, NUM_LEVELS):
        bounds = sorted(set(draw(st.lists(small_keys, max_size=12))))
        tables: list[TableMeta] = []
        i = 0
        while i < len(bounds):
            width = draw(st.integers(1, 2))
            low, high = bounds[i], bounds[min(i + width, len(bounds)) - 1]
            tables.append(table(low, high, next(numbers), size=draw(st.integers(1, 1000))))
            i += width
        levels.append(tuple(tables))
    return Version(levels=tuple(levels))


probe_keys = st.binary(min_size=0, max_size=3)


@given(versions(), probe_keys)
def test_tables_for_key_matches_a_scan(version: Version, key: bytes) -> None:
    expected = [t for tables in version.levels for t in tables if t.min_key <= key <= t.max_key]
    assert version.tables_for_key(key) == expected


@given(versions(), st.one_of(st.none(), probe_keys), st.one_of(st.none(), probe_keys))
def test_overlapping_matches_a_scan(
    version: Version, start: bytes | None, end: bytes | None
) -> None:
    for level in range(version.num_levels):
        expected = tuple(
            t
            for t in version.levels[level]
            if (start is None or t.max_key >= start) and (end is None or t.min_key <= end)
        )
        assert version.overlapping(level, start, end) == expected


@given(versions())
def test_snapshot_edit_rebuilds_the_version(version: Version) -> None:
    edit = version.snapshot_edit(log_number=3, next_file_number=10_000)
    assert edit.log_number == 3
    assert edit.next_file_number == 10_000
    assert Version.empty(version.num_levels).apply(edit) == version


@given(versions())
def test_removing_every_table_empties_the_version(version: Version) -> None:
    edit = VersionEdit(removed=tuple((level, t.file_number) for level, t in version))
    emptied = version.apply(edit)
    assert emptied == Version.empty(version.num_levels)
    assert emptied.all_file_numbers() == frozenset()
    assert version.all_file_numbers() == frozenset(t.file_number for t in version.all_tables())
    assert version.table_count() == len(version.all_tables())
