"""Merge, concat, live and floor over entry sources, against a dict model."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator

from hypothesis import given
from hypothesis import strategies as st

from sentinel.storage.entry import ABSENT, Absent, Entry
from sentinel.storage.iterators import (
    concat_entries,
    live_entries,
    live_floor,
    merge_entries,
    merged_floor,
    merged_get,
)


class ListSource:
    """A trivial EntrySource over a dict, the oracle's shape: a sorted list and bisect."""

    def __init__(self, entries: dict[bytes, bytes | None]) -> None:
        self.keys = sorted(entries)
        self.data = entries
        self.opened = 0

    def get(self, key: bytes) -> bytes | None | Absent:
        return self.data.get(key, ABSENT)

    def entries(self, start: bytes | None = None, end: bytes | None = None) -> Iterator[Entry]:
        self.opened += 1
        lo = 0 if start is None else bisect.bisect_left(self.keys, start)
        hi = len(self.keys) if end is None else bisect.bisect_left(self.keys, end)
        for key in self.keys[lo:hi]:
            yield key, self.data[key]

    def floor(self, key: bytes, *, strict: bool = False) -> Entry | None:
        index = (bisect.bisect_left if strict else bisect.bisect_right)(self.keys, key) - 1
        if index < 0:
            return None
        found = self.keys[index]
        return found, self.data[found]


keys = st.binary(min_size=0, max_size=3)
values = st.one_of(st.none(), st.binary(max_size=4))
tables = st.dictionaries(keys, values, max_size=30)
stacks = st.lists(tables, max_size=6)


def newest_wins(stack: list[dict[bytes, bytes | None]]) -> dict[bytes, bytes | None]:
    model: dict[bytes, bytes | None] = {}
    for table in reversed(stack):  # oldest first, so newer ones overwrite
        model.update(table)
    return model


# ------------------------------------------------------------------- merge


@given(stacks)
def test_merge_yields_each_key_once_newest_first(stack: list[dict[bytes, bytes | None]]) -> None:
    merged = list(merge_entries([ListSource(t).entries() for t in stack]))
    assert merged == sorted(newest_wins(stack).items())


@given(stacks)
def test_merge_accepts_lists(stack: list[dict[bytes, bytes | None]]) -> None:
    sources = [sorted(t.items()) for t in stack]
    assert list(merge_entries(sources)) == sorted(newest_wins(stack).items())


def test_merge_ties_go_to_the_newest_source() -> None:
    newest = [(b"a", b"new"), (b"b", None)]
    middle = [(b"a", b"mid"), (b"b", b"mid"), (b"c", b"mid")]
    oldest = [(b"a", b"old"), (b"c", b"old"), (b"d", b"old")]
    assert list(merge_entries([newest, middle, oldest])) == [
        (b"a", b"new"),
        (b"b", None),
        (b"c", b"mid"),
        (b"d", b"old"),
    ]


def test_merge_of_nothing_and_of_empty_sources() -> None:
    assert list(merge_entries([])) == []
    assert list(merge_entries([[], [], []])) == []
    assert list(merge_entries([[], [(b"", b"x")], []])) == [(b"", b"x")]


def test_merge_of_disjoint_runs_keeps_order() -> None:
    runs = [[(bytes([i, j]), b"v") for j in range(50)] for i in range(5)]
    merged = list(merge_entries(list(reversed(runs))))
    assert merged == [entry for run in runs for entry in run]


def test_merge_is_lazy() -> None:
    def counting(start: int) -> Iterator[Entry]:
        for i in itertools.count(start, 2):
            yield i.to_bytes(8, "big"), b"v"

    merged = merge_entries([counting(0), counting(1)])
    first = list(itertools.islice(merged, 10))
    assert [int.from_bytes(k, "big") for k, _ in first] == list(range(10))


# ------------------------------------------------------------------ concat


def disjoint_tables(n: int, per: int) -> list[ListSource]:
    return [ListSource({bytes([i, j]): bytes([j]) for j in range(0, per * 2, 2)}) for i in range(n)]


def test_concat_of_sources_and_of_openers() -> None:
    sources = disjoint_tables(4, 5)
    expected = [entry for source in sources for entry in source.entries()]
    assert list(concat_entries(sources)) == expected
    assert list(concat_entries([s.entries for s in sources])) == expected


def test_concat_passes_bounds_to_each_table() -> None:
    sources = disjoint_tables(4, 5)
    got = list(concat_entries(sources, bytes([1, 4]), bytes([2, 4])))
    assert [k for k, _ in got] == [
        bytes([1, 4]),
        bytes([1, 6]),
        bytes([1, 8]),
        b"\x02\x00",
        b"\x02\x02",
    ]


def test_concat_opens_tables_only_when_reached() -> None:
    sources = disjoint_tables(4, 5)
    it = concat_entries(sources)
    assert [s.opened for s in sources] == [0, 0, 0, 0]
    list(itertools.islice(it, 6))
    assert [s.opened for s in sources] == [1, 1, 0, 0]


def test_concat_composes_with_merge() -> None:
    level = disjoint_tables(3, 4)
    newer = ListSource({bytes([1, 2]): None, bytes([1, 3]): b"new"})
    merged = dict(merge_entries([newer.entries(), concat_entries(level)]))
    assert merged[bytes([1, 2])] is None
    assert merged[bytes([1, 3])] == b"new"
    assert merged[bytes([2, 6])] == bytes([6])


# -------------------------------------------------------------------- live


@given(stacks)
def test_live_entries_drop_tombstones(stack: list[dict[bytes, bytes | None]]) -> None:
    live = list(live_entries(merge_entries([ListSource(t).entries() for t in stack])))
    model = newest_wins(stack)
    assert live == sorted((k, v) for k, v in model.items() if v is not None)


# -------------------------------------------------------------- point reads


@given(stacks, keys)
def test_merged_get(stack: list[dict[bytes, bytes | None]], key: bytes) -> None:
    sources = [ListSource(t) for t in stack]
    assert merged_get(sources, key) == newest_wins(stack).get(key)


def model_floor(
    model: dict[bytes, bytes | None], key: bytes, strict: bool, live: bool
) -> Entry | None:
    candidates = [
        k
        for k, v in model.items()
        if (k < key if strict else k <= key) and (v is not None or not live)
    ]
    if not candidates:
        return None
    best = max(candidates)
    return best, model[best]


@given(stacks, keys, st.booleans())
def test_merged_floor(stack: list[dict[bytes, bytes | None]], key: bytes, strict: bool) -> None:
    sources = [ListSource(t) for t in stack]
    expected = model_floor(newest_wins(stack), key, strict, live=False)
    assert merged_floor(sources, key, strict=strict) == expected


@given(stacks, keys, st.booleans())
def test_live_floor(stack: list[dict[bytes, bytes | None]], key: bytes, strict: bool) -> None:
    sources = [ListSource(t) for t in stack]
    expected = model_floor(newest_wins(stack), key, strict, live=True)
    assert live_floor(sources, key, strict=strict) == expected


def test_live_floor_skips_a_run_of_tombstones_over_older_values() -> None:
    old = ListSource({bytes([i]): b"old" for i in range(10)})
    deletes = ListSource({bytes([i]): None for i in range(3, 10)})
    assert live_floor([deletes, old], b"\x09") == (b"\x02", b"old")
    assert live_floor([deletes, old], b"\x02", strict=True) == (b"\x01", b"old")
    assert live_floor([old, deletes], b"\x09") == (b"\x09", b"old")
    assert live_floor([ListSource({b"a": None})], b"z") is None
