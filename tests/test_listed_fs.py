"""``ListedFS`` answers about its directory exactly as the FS it wraps would, after any
sequence of changes made through it (or failing in it), and from ``settle()`` on sees
changes made behind its back."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.fs import MemFS
from sentinel.storage.listed_fs import ListedFS

NAMES = ("a.wal", "b.sst", "CURRENT", "LOCK", "sub")
# Paths as the engine spells them, and as it might not: every answer must be right.
SPELLINGS = ("/db/{}", "/db//{}", "/db/./{}", "/other/{}", "/db/sub/{}")
PROBES = (
    "/db",
    "/db/",
    "/db/.",
    *(s.format(n) for s in SPELLINGS for n in NAMES),
)


def _paths(names: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda s, n: s.format(n), st.sampled_from(SPELLINGS), st.sampled_from(names)
    )


# Files where files go and directories where directories go: the in-memory FS lets a
# name be both, which no real one does.
file_path, dir_path = _paths(NAMES[:-1]), _paths(NAMES[-1:])
operation = st.one_of(
    st.tuples(st.just("create"), file_path),
    st.tuples(st.just("open_append"), file_path),
    st.tuples(st.just("remove"), file_path),
    st.tuples(st.just("rename"), file_path, file_path),
    st.tuples(st.just("makedirs"), st.one_of(dir_path, st.just("/db"))),
    st.tuples(st.just("remove_tree"), st.one_of(dir_path, st.just("/db"))),
    st.tuples(st.just("lock"), file_path),
)


def _apply(fs: ListedFS | MemFS, op: tuple[str, ...]) -> None:
    name, *args = op
    try:
        result = getattr(fs, name)(*args)
    except OSError:
        return  # refused as the wrapped FS refuses it (missing file, missing parent)
    if name in ("create", "open_append"):
        result.close()
    elif name == "lock":
        result.release()


def _answers(fs: ListedFS | MemFS) -> list[object]:
    out: list[object] = []
    for probe in PROBES:
        out.append((probe, fs.exists(probe), fs.is_dir(probe)))
    for directory in ("/db", "/db/", "/db/sub"):
        try:
            out.append((directory, fs.listdir(directory)))
        except OSError as exc:
            out.append((directory, type(exc)))
    return out


def _fresh(with_db: bool) -> MemFS:
    fs = MemFS()
    fs.makedirs("/other")
    if with_db:
        fs.makedirs("/db")
        for name in ("a.wal", "CURRENT"):
            fs.create(f"/db/{name}").close()
    return fs


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.lists(operation, max_size=25))
def test_answers_equal_the_wrapped_fs_after_any_changes(
    with_db: bool, ops: list[tuple[str, ...]]
) -> None:
    plain, wrapped_inner = _fresh(with_db), _fresh(with_db)
    listed = ListedFS(wrapped_inner, "/db")
    assert _answers(listed) == _answers(plain)
    for op in ops:
        _apply(plain, op)
        _apply(listed, op)
        assert _answers(listed) == _answers(plain), op


def test_a_listing_is_read_once_while_listing() -> None:
    inner = _fresh(True)
    calls: list[str] = []
    original = inner.listdir

    def counting(path: str) -> list[str]:
        calls.append(path)
        return original(path)

    inner.listdir = counting  # type: ignore[method-assign]
    listed = ListedFS(inner, "/db")
    for _ in range(3):
        assert listed.exists("/db/a.wal")
        assert not listed.exists("/db/gone")
        assert listed.listdir("/db") == ["CURRENT", "a.wal"]
    listed.create("/db/new.wal").close()
    assert listed.listdir("/db") == ["CURRENT", "a.wal", "new.wal"]
    assert calls == ["/db"]


def test_after_settle_changes_behind_its_back_are_seen() -> None:
    inner = _fresh(True)
    listed = ListedFS(inner, "/db")
    assert listed.exists("/db/a.wal")
    listed.settle()
    inner.remove("/db/a.wal")
    inner.create("/db/c.sst").close()
    assert not listed.exists("/db/a.wal")
    assert listed.listdir("/db") == ["CURRENT", "c.sst"]


def test_a_change_that_fails_half_way_drops_the_listing() -> None:
    inner = _fresh(True)
    listed = ListedFS(inner, "/db")
    assert listed.listdir("/db") == ["CURRENT", "a.wal"]
    inner.fail_after(0)
    with pytest.raises(Exception, match="simulated crash"):
        listed.create("/db/x.wal")
    inner.fail_after(None)
    assert listed.listdir("/db") == inner.listdir("/db")
