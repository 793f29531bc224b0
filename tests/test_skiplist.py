"""The skip list: unit tests, its shape, a dict model, and iteration under writes."""

from __future__ import annotations

import itertools
import queue
import random
import sys
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from functools import partial
from types import FrameType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from sentinel.errors import InvalidArgumentError
from sentinel.storage.entry import ABSENT, Entry, EntrySource
from sentinel.storage.skiplist import SkipList, _Index, _Leaf

# -- helpers ---------------------------------------------------------------------------


def check_shape(sl: SkipList) -> None:
    """Every structural invariant of the blocked skip list (see its module docstring)."""
    root, uppers = sl._top
    # Walk every level from the top: each level's blocks, first keys and contents.
    level_blocks: list[list[_Index]] = []
    block: _Index | None = root if uppers else None
    while block is not None:
        assert isinstance(block, _Index)
        row = []
        b: _Index | None = block
        while b is not None:
            row.append(b)
            b = b.next
        level_blocks.append(row)
        block = row[0].children[0] if isinstance(row[0].children[0], _Index) else None
    assert len(level_blocks) == len(uppers)
    leaves = []
    leaf: _Leaf | None = sl._head
    while leaf is not None:
        leaves.append(leaf)
        leaf = leaf.next
    assert sl._tail is leaves[-1]
    for level, row in zip(range(len(uppers), 0, -1), level_blocks, strict=True):
        assert sl._index_tails[level - 1] is row[-1]
    keys = [k for lf in leaves for k in lf.keys]
    assert keys == sorted(set(keys)), "leaf keys not strictly ascending"
    assert all(len(lf.keys) == len(lf.values) for lf in leaves)
    assert all(lf.keys for lf in leaves[1:]), "only the head leaf may be empty"
    assert len(sl) == len(keys)
    below: list[_Index] | list[_Leaf] = leaves
    for row in reversed(level_blocks):  # from level 1 up
        upper_keys = [k for b in row for k in b.keys]
        assert upper_keys[0] == b"" and upper_keys == sorted(set(upper_keys))
        children = [c for b in row for c in b.children]
        assert all(len(b.keys) == len(b.children) for b in row)
        # Each key leads to the block of the level below that it starts, in order.
        assert children == below
        for k, child in zip(upper_keys[1:], children[1:], strict=True):
            assert child.keys[0] == k
        # Each block of the level below, but the first, starts at a key of this level.
        assert [c.keys[0] for c in children[1:]] == upper_keys[1:]
        below = row
    if uppers:
        assert len(level_blocks[0]) == 1, "one root block"


def model_floor(model: dict[bytes, bytes | None], key: bytes, strict: bool) -> Entry | None:
    keys = sorted(model)
    i = bisect_left(keys, key) if strict else bisect_right(keys, key)
    return (keys[i - 1], model[keys[i - 1]]) if i else None


def filled(n: int, node_size: int = 4, seed: int = 1) -> tuple[SkipList, dict[bytes, bytes]]:
    rng = random.Random(seed)
    sl = SkipList(random.Random(seed), node_size=node_size)
    model: dict[bytes, bytes] = {}
    for _ in range(n):
        k = rng.randbytes(rng.randint(1, 4))
        v = rng.randbytes(3)
        sl.put(k, v)
        model[k] = v
    return sl, model


# -- unit tests ------------------------------------------------------------------------


def test_is_an_entry_source() -> None:
    source: EntrySource = SkipList()
    assert source.get(b"k") is ABSENT


def test_empty() -> None:
    sl = SkipList()
    assert len(sl) == 0
    assert sl.get(b"") is ABSENT
    assert list(sl.entries()) == []
    assert list(sl.entries(b"a", b"z")) == []
    assert sl.floor(b"z") is None
    assert sl.floor(b"z", strict=True) is None
    assert sl.first_key() is None
    assert sl.last_key() is None
    assert sl.key_bytes == 0
    assert sl.value_bytes == 0
    check_shape(sl)


def test_put_get_replace_delete() -> None:
    sl = SkipList()
    sl.put(b"b", b"2")
    sl.put(b"a", b"1")
    sl.put(b"c", b"3")
    assert [sl.get(k) for k in (b"a", b"b", b"c", b"d")] == [b"1", b"2", b"3", ABSENT]
    sl.put(b"b", b"22")
    assert sl.get(b"b") == b"22"
    sl.delete(b"a")
    assert sl.get(b"a") is None  # a tombstone, not ABSENT
    sl.delete(b"zz")  # a tombstone for a key never seen is still an entry
    assert sl.get(b"zz") is None
    assert list(sl.entries()) == [(b"a", None), (b"b", b"22"), (b"c", b"3"), (b"zz", None)]
    assert len(sl) == 4
    assert sl.first_key() == b"a"
    assert sl.last_key() == b"zz"


def test_byte_accounting_follows_replacements_and_tombstones() -> None:
    sl = SkipList()
    sl.put(b"key", b"value")
    assert (sl.key_bytes, sl.value_bytes) == (3, 5)
    sl.put(b"key", b"v")
    assert (sl.key_bytes, sl.value_bytes) == (3, 1)
    sl.delete(b"key")
    assert (sl.key_bytes, sl.value_bytes) == (3, 0)
    sl.put(b"key", b"back")
    sl.delete(b"k2")
    assert (sl.key_bytes, sl.value_bytes, len(sl)) == (5, 4, 2)


def test_empty_key_and_empty_value() -> None:
    sl = SkipList(node_size=2)
    for k in (b"b", b"", b"a", b"\x00"):
        sl.put(k, b"")
    assert sl.get(b"") == b""
    assert [k for k, _ in sl.entries()] == [b"", b"\x00", b"a", b"b"]
    assert sl.floor(b"") == (b"", b"")
    assert sl.floor(b"", strict=True) is None
    assert sl.floor(b"\x00", strict=True) == (b"", b"")
    assert sl.first_key() == b""
    check_shape(sl)


def test_entries_ranges() -> None:
    sl = SkipList(node_size=2)
    for i in range(0, 100, 2):
        sl.put(b"%03d" % i, b"v%d" % i)
    keys = [b"%03d" % i for i in range(0, 100, 2)]

    def ks(start: bytes | None, end: bytes | None) -> list[bytes]:
        return [k for k, _ in sl.entries(start, end)]

    assert ks(None, None) == keys
    assert ks(b"010", b"020") == [b"010", b"012", b"014", b"016", b"018"]
    assert ks(b"011", b"021") == [b"012", b"014", b"016", b"018", b"020"]
    assert ks(b"090", None) == [b"090", b"092", b"094", b"096", b"098"]
    assert ks(None, b"005") == [b"000", b"002", b"004"]
    assert ks(b"020", b"020") == []
    assert ks(b"030", b"020") == []
    assert ks(b"999", None) == []
    assert ks(None, b"") == []


def test_floor() -> None:
    sl = SkipList(node_size=2)
    for k in (b"b", b"d", b"f"):
        sl.put(k, k.upper())
    assert sl.floor(b"a") is None
    assert sl.floor(b"b") == (b"b", b"B")
    assert sl.floor(b"b", strict=True) is None
    assert sl.floor(b"c") == (b"b", b"B")
    assert sl.floor(b"d", strict=True) == (b"b", b"B")
    assert sl.floor(b"d") == (b"d", b"D")
    assert sl.floor(b"zzz") == (b"f", b"F")
    assert sl.floor(b"f", strict=True) == (b"d", b"D")
    sl.delete(b"d")
    assert sl.floor(b"e") == (b"d", None)  # tombstones are entries


@pytest.mark.parametrize("node_size", [2, 3, 16, 128])
def test_random_inserts_keep_the_shape(node_size: int) -> None:
    sl, model = filled(3000, node_size)
    check_shape(sl)
    assert list(sl.entries()) == sorted(model.items())
    assert all(sl.get(k) == v for k, v in model.items())
    if node_size <= 3:
        assert len(sl._top[1]) >= 3, "small blocks should make a tall list"


def test_ascending_appends_then_inserts_between() -> None:
    sl = SkipList(random.Random(3), node_size=4)
    for i in range(0, 4000, 2):
        sl.put(i.to_bytes(4, "big"), b"a")
    check_shape(sl)
    leaves = 0
    leaf: _Leaf | None = sl._head
    while leaf is not None:
        leaves += 1
        leaf = leaf.next
    assert 250 < leaves < 1000  # about one leaf per node_size appends
    for i in range(1, 4000, 2):
        sl.put(i.to_bytes(4, "big"), b"b")
    check_shape(sl)
    assert [int.from_bytes(k, "big") for k, _ in sl.entries()] == list(range(4000))
    assert sl.last_key() == (3999).to_bytes(4, "big")


def test_shape_depends_on_the_seed_not_the_order() -> None:
    rng = random.Random(5)
    keys = [rng.randbytes(4) for _ in range(500)]
    a = SkipList(random.Random(1), node_size=4)
    b = SkipList(random.Random(1), node_size=4)
    for k in keys:
        a.put(k, b"")
        b.put(k, b"")
    assert len(a._top[1]) == len(b._top[1])
    leaves_a, leaves_b = [], []
    la: _Leaf | None = a._head
    lb: _Leaf | None = b._head
    while la is not None and lb is not None:
        leaves_a.append(la.keys)
        leaves_b.append(lb.keys)
        la, lb = la.next, lb.next
    assert leaves_a == leaves_b


def test_randomness_only_from_the_injected_rng() -> None:
    random.seed(42)
    state = random.getstate()
    sl = SkipList(random.Random(9), node_size=2)
    for i in range(200):
        sl.put(random.Random(i).randbytes(3), b"")
    assert random.getstate() == state
    SkipList()  # the default is its own seeded Random too
    assert random.getstate() == state


def test_node_size_must_be_at_least_two() -> None:
    with pytest.raises(InvalidArgumentError):
        SkipList(node_size=1)


# -- a model: the dict, with a sorted list for order ------------------------------------

KEYS = st.binary(min_size=0, max_size=3).map(lambda b: bytes(x % 4 for x in b))
VALUES = st.one_of(st.none(), st.binary(max_size=4))


class SkipListModel(RuleBasedStateMachine):
    """Every operation against a dict; shape checked after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.sl = SkipList()
        self.model: dict[bytes, bytes | None] = {}

    @initialize(seed=st.integers(0, 2**32), node_size=st.sampled_from([2, 3, 4, 8]))
    def start(self, seed: int, node_size: int) -> None:
        self.sl = SkipList(random.Random(seed), node_size=node_size)

    @rule(key=KEYS, value=VALUES)
    def put(self, key: bytes, value: bytes | None) -> None:
        self.sl.put(key, value)
        self.model[key] = value

    @rule(key=KEYS)
    def delete(self, key: bytes) -> None:
        self.sl.delete(key)
        self.model[key] = None

    @rule(key=KEYS)
    def get(self, key: bytes) -> None:
        assert self.sl.get(key) == self.model.get(key, ABSENT)

    @rule(start=st.none() | KEYS, end=st.none() | KEYS)
    def entries(self, start: bytes | None, end: bytes | None) -> None:
        expected = [
            (k, v)
            for k, v in sorted(self.model.items())
            if (start is None or k >= start) and (end is None or k < end)
        ]
        assert list(self.sl.entries(start, end)) == expected

    @rule(key=KEYS, strict=st.booleans())
    def floor(self, key: bytes, strict: bool) -> None:
        assert self.sl.floor(key, strict=strict) == model_floor(self.model, key, strict)

    @invariant()
    def summary(self) -> None:
        keys = sorted(self.model)
        assert len(self.sl) == len(keys)
        assert self.sl.first_key() == (keys[0] if keys else None)
        assert self.sl.last_key() == (keys[-1] if keys else None)
        assert self.sl.key_bytes == sum(map(len, keys))
        assert self.sl.value_bytes == sum(len(v) for v in self.model.values() if v is not None)
        check_shape(self.sl)


TestSkipListModel = SkipListModel.TestCase
TestSkipListModel.settings = settings(max_examples=100, stateful_step_count=60, deadline=None)


@settings(max_examples=100, deadline=None)
@given(
    items=st.lists(st.tuples(KEYS, VALUES), max_size=200),
    queries=st.lists(KEYS, max_size=20),
    node_size=st.sampled_from([2, 3, 5, 128]),
)
def test_bulk_against_sorted_list(
    items: list[tuple[bytes, bytes | None]], queries: list[bytes], node_size: int
) -> None:
    sl = SkipList(random.Random(len(items)), node_size=node_size)
    model: dict[bytes, bytes | None] = {}
    for k, v in items:
        sl.put(k, v)
        model[k] = v
    keys = sorted(model)
    assert list(sl.entries()) == [(k, model[k]) for k in keys]
    for q in queries:
        assert sl.get(q) == model.get(q, ABSENT)
        assert sl.floor(q) == model_floor(model, q, False)
        assert sl.floor(q, strict=True) == model_floor(model, q, True)
        assert [k for k, _ in sl.entries(q)] == keys[bisect_left(keys, q) :]
        assert [k for k, _ in sl.entries(None, q)] == keys[: bisect_left(keys, q)]


# -- iteration while inserting ---------------------------------------------------------


def check_weakly_consistent(
    seen: list[Entry], before: set[bytes], ever: set[bytes], start: bytes | None, end: bytes | None
) -> None:
    """What ``entries`` promises when keys are inserted during the walk."""
    keys = [k for k, _ in seen]
    assert all(a < b for a, b in itertools.pairwise(keys)), "not strictly ascending"
    assert set(keys) <= ever, "a key that was never inserted"
    in_range = {k for k in before if (start is None or k >= start) and (end is None or k < end)}
    assert in_range <= set(keys), "a key that existed at the start was skipped"
    assert all((start is None or k >= start) and (end is None or k < end) for k in keys)


@pytest.mark.parametrize("node_size", [2, 4, 64])
@pytest.mark.parametrize("bounds", [(None, None), (b"\x40", b"\xc0")])
def test_iterate_while_inserting_in_the_same_thread(
    node_size: int, bounds: tuple[bytes | None, bytes | None]
) -> None:
    start, end = bounds
    rng = random.Random(node_size)
    sl = SkipList(random.Random(1), node_size=node_size)
    for _ in range(500):
        sl.put(rng.randbytes(2), b"old")
    before = {k for k, _ in sl.entries()}
    ever = set(before)
    existing = sorted(before)
    seen: list[Entry] = []
    for entry in sl.entries(start, end):
        seen.append(entry)
        for _ in range(rng.randint(0, 6)):  # behind, ahead, replacements, appends
            k = rng.choice([rng.randbytes(2), rng.choice(existing), b"\xff" + rng.randbytes(3)])
            sl.put(k, b"new")
            ever.add(k)
    check_weakly_consistent(seen, before, ever, start, end)
    check_shape(sl)


def test_iterator_sees_keys_inserted_ahead_of_it() -> None:
    sl = SkipList(node_size=2)
    for k in (b"a", b"c"):
        sl.put(k, b"")
    it = sl.entries()
    assert next(it) == (b"a", b"")
    sl.put(b"b", b"")  # ahead of the walk, but in the leaf already copied: may be missed
    sl.put(b"z", b"")  # a new leaf ahead: found
    rest = [k for k, _ in it]
    assert rest[-1] == b"z"
    assert b"c" in rest


def test_reads_retry_under_the_lock_when_the_writer_is_mid_change() -> None:
    """An odd sequence number means a writer is inside a structural change: every read
    takes the locked retry, and still answers right."""
    sl, model = filled(300, 2)
    sl._seq += 1
    for k, v in list(model.items())[:50]:
        assert sl.get(k) == v
        assert sl.floor(k) == (k, v)
        assert sl.get(k + b"\xff\xff\xff\xff") is ABSENT
    assert list(sl.entries()) == sorted(model.items())
    assert [k for k, _ in sl.entries(b"\x80")] == sorted(k for k in model if k >= b"\x80")
    assert sl.first_key() == min(model)


# -- deterministic interleavings --------------------------------------------------------
#
# Threads switch only now and then, so a random test rarely lands a read inside a
# write. These tests place it there on purpose: ``sys.settrace`` stops one side at
# every line of ``skiplist.py`` it executes, and runs the other side right there.

SKIPLIST_FILE = sys.modules[SkipList.__module__].__file__


def trace_skiplist_lines(hook: Callable[[], None]) -> Callable[..., Any]:
    """A ``sys.settrace`` function calling ``hook`` before each line of skiplist.py."""

    def local(frame: FrameType, event: str, arg: object) -> Any:
        if event == "line":
            hook()
        return local

    def global_(frame: FrameType, event: str, arg: object) -> Any:
        return local if frame.f_code.co_filename == SKIPLIST_FILE else None

    return global_


class _Readers:
    """Reader threads that the writer hands one read each, and waits for.

    Stands in for the skip list's lock, so that it knows when a reader is about to
    wait for the writer; the writer then goes on, as it would after a thread switch.
    """

    def __init__(self, sl: SkipList, n: int) -> None:
        self._real = sl._lock
        sl._lock = self  # type: ignore[assignment]
        self._cv = threading.Condition()
        self._state = ["idle"] * n  # idle | busy | waiting (for the lock)
        self._tasks: list[queue.Queue[Callable[[], None] | None]] = [
            queue.Queue() for _ in range(n)
        ]
        self.failures: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._run, args=(slot,), daemon=True) for slot in range(n)
        ]
        self._slots = {t: slot for slot, t in enumerate(self._threads)}
        for t in self._threads:
            t.start()

    def acquire(self) -> bool:
        slot = self._slots.get(threading.current_thread())
        if slot is not None:
            with self._cv:
                self._state[slot] = "waiting"
                self._cv.notify_all()
        return self._real.acquire()

    def release(self) -> None:
        self._real.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _run(self, slot: int) -> None:
        while (task := self._tasks[slot].get()) is not None:
            try:
                task()
            except BaseException as exc:  # handed to the test thread
                self.failures.append(exc)
            with self._cv:
                self._state[slot] = "idle"
                self._cv.notify_all()

    def run(self, reads: list[Callable[[], None]]) -> None:
        """Start ``reads[i]`` on reader ``i`` if it is idle, and wait until each one
        started has ended or waits for the writer's lock."""
        with self._cv:
            started = [slot for slot in range(len(reads)) if self._state[slot] == "idle"]
            for slot in started:
                self._state[slot] = "busy"
                self._tasks[slot].put(reads[slot])
            self._cv.wait_for(lambda: all(self._state[s] != "busy" for s in started))

    def wait_idle(self) -> None:
        with self._cv:
            self._cv.wait_for(lambda: all(state == "idle" for state in self._state))

    def finish(self) -> None:
        self.wait_idle()
        for q in self._tasks:
            q.put(None)
        for t in self._threads:
            t.join(timeout=10)


def reads_between(
    sl: SkipList,
    pre: dict[bytes, bytes | None],
    post: dict[bytes, bytes | None],
    probes: list[bytes],
) -> list[Callable[[], None]]:
    """Reads, each of which must answer as of the state before the write or after it."""

    def get(k: bytes) -> None:
        assert sl.get(k) in (pre.get(k, ABSENT), post.get(k, ABSENT)), k

    def floor(k: bytes, strict: bool) -> None:
        answers = (model_floor(pre, k, strict), model_floor(post, k, strict))
        assert sl.floor(k, strict=strict) in answers, (k, strict)

    def walk(start: bytes | None) -> None:
        seen = list(sl.entries(start))
        keys = [k for k, _ in seen]
        assert all(a < b for a, b in itertools.pairwise(keys))
        lower = start or b""
        assert {k for k in pre if k >= lower} <= set(keys) <= set(post)
        assert all(k >= lower and v in (pre.get(k), post.get(k)) for k, v in seen)

    def first() -> None:
        assert sl.first_key() in (min(pre, default=None), min(post, default=None))

    reads: list[Callable[[], None]] = [first, partial(walk, None), partial(walk, probes[1])]
    for k in probes:
        reads += [partial(get, k), partial(floor, k, False), partial(floor, k, True)]
    return reads


@pytest.mark.parametrize("node_size", [2, 3])
def test_reads_stopped_inside_every_line_of_a_write(node_size: int) -> None:
    """The writer stops before each of its lines while a reader thread reads."""
    rng = random.Random(node_size)
    sl = SkipList(random.Random(4), node_size=node_size)
    model: dict[bytes, bytes | None] = {}
    for _ in range(60):
        k = rng.randbytes(2)
        sl.put(k, k)
        model[k] = k
    readers = _Readers(sl, 3 + 3 * 7)  # one per read of reads_between, 7 probes
    try:
        for i in range(80):
            k = rng.choice([rng.randbytes(2), rng.choice(sorted(model)), b"\xff" + bytes([i])])
            v = None if i % 7 == 0 else k + b"%d" % i
            pre, post = dict(model), {**model, k: v}
            known = sorted(pre)
            at = bisect_left(known, k)  # k's neighbours share its leaf: they move with it
            probes = [k, *known[max(0, at - 1) : at + 3], rng.choice(known), b"\xff\xff"]
            reads = reads_between(sl, pre, post, probes)
            assert len(reads) <= len(readers._threads)
            sys.settrace(trace_skiplist_lines(partial(readers.run, reads)))
            try:
                sl.put(k, v)
            finally:
                sys.settrace(None)
            readers.wait_idle()  # reads that waited for this write end before the next
            model[k] = v
            if readers.failures:
                break
    finally:
        readers.finish()
    assert not readers.failures, repr(readers.failures[0])
    check_shape(sl)
    assert list(sl.entries()) == sorted(model.items())


@pytest.mark.parametrize("node_size", [2])
def test_writes_inside_every_line_of_a_read(node_size: int) -> None:
    """A read stops before each of its lines while a whole write happens."""
    rng = random.Random(node_size)
    sl = SkipList(random.Random(5), node_size=node_size)
    history: list[dict[bytes, bytes | None]] = [{}]
    for _ in range(60):
        k = rng.randbytes(2)
        sl.put(k, k)
        history[-1][k] = k

    budget = [0]  # writes left in the current read: a walk must be able to end

    def write() -> None:
        if sl._lock.locked() or not budget[0]:  # the read holds the lock: a writer waits
            return
        budget[0] -= 1
        k = rng.choice([rng.randbytes(2), b"\xff" + rng.randbytes(2)])
        v = None if rng.random() < 0.1 else k + b"!"
        sl.put(k, v)
        history.append({**history[-1], k: v})

    def during(read: Callable[[], Any]) -> tuple[Any, list[dict[bytes, bytes | None]]]:
        first = len(history) - 1
        budget[0] = 40
        sys.settrace(trace_skiplist_lines(write))
        try:
            answer = read()
        finally:
            sys.settrace(None)
        return answer, history[first:]

    def walk(start: bytes | None) -> list[Entry]:
        return list(sl.entries(start))

    for _ in range(50):
        known = sorted(history[-1])
        k = rng.choice([*rng.sample(known, 1), rng.randbytes(2), rng.randbytes(3)])
        answer, states = during(partial(sl.get, k))
        assert answer in [s.get(k, ABSENT) for s in states], k
        strict = rng.random() < 0.5
        answer, states = during(partial(sl.floor, k, strict=strict))
        assert answer in [model_floor(s, k, strict) for s in states], (k, strict)
        answer, states = during(sl.first_key)
        assert answer in [min(s, default=None) for s in states]
        start = rng.choice([None, k])
        seen, states = during(partial(walk, start))
        ever = {key for s in states for key in s}
        check_weakly_consistent(seen, set(states[0]), ever, start, None)
        assert all(any(s.get(key, ABSENT) == v for s in states) for key, v in seen)
    check_shape(sl)


class _Reader(threading.Thread):
    """Reads while the writer writes; records the first failure instead of raising."""

    def __init__(self, sl: SkipList, before: set[bytes], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.sl, self.before, self.stop = sl, before, stop
        self.failure: BaseException | None = None
        self.walks = 0
        self.seen: list[list[Entry]] = []

    def run(self) -> None:
        try:
            rng = random.Random(7)
            before = sorted(self.before)
            while not self.stop.is_set():
                walk = list(self.sl.entries())
                if len(self.seen) < 100:
                    self.seen.append(walk)
                self.walks += 1
                for k in rng.sample(before, 50):
                    value = self.sl.get(k)
                    assert isinstance(value, bytes) and value.startswith(k), (k, value)
                    found = self.sl.floor(k)
                    assert found is not None and found[0] == k, (k, found)
                    below = self.sl.floor(k, strict=True)
                    assert below is None or below[0] < k
                    # 5-byte keys are never written (4 and 6 are).
                    assert self.sl.get(k + b"\x00") is ABSENT
        except BaseException as exc:  # handed to the test thread
            self.failure = exc


@pytest.fixture
def tiny_switch_interval() -> Iterator[None]:
    """Switch threads every microsecond, so reads are interrupted mid-way often."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


@pytest.mark.usefixtures("tiny_switch_interval")
@pytest.mark.parametrize("node_size", [2, 8])
def test_readers_in_other_threads_while_one_writer_inserts(node_size: int) -> None:
    rng = random.Random(11)
    sl = SkipList(random.Random(2), node_size=node_size)

    def value(k: bytes, version: int) -> bytes:
        return k + b"|%d" % version  # a value names its key: catches misaligned pairs

    for _ in range(2000):
        k = rng.randbytes(4)
        sl.put(k, value(k, 0))
    before = {k for k, _ in sl.entries()}
    ever = set(before)
    stop = threading.Event()
    readers = [_Reader(sl, before, stop) for _ in range(2)]
    for r in readers:
        r.start()
    try:
        existing = sorted(before)
        i = 0
        # At least 20000 writes, and on until every reader walked a few times.
        while i < 20000 or (min(r.walks for r in readers) < 5 and i < 400000):
            i += 1
            choice = i % 4
            if choice == 0:  # append past the end
                k = b"\xff\xff" + i.to_bytes(4, "big")
            elif choice == 1:  # replace
                k = rng.choice(existing)
            else:  # insert anywhere
                k = rng.randbytes(4)
            sl.put(k, value(k, i))
            ever.add(k)
            if i % 1000 == 0 and any(r.failure for r in readers):
                break
    finally:
        stop.set()
        for r in readers:
            r.join(timeout=30)
    for r in readers:
        assert r.failure is None, repr(r.failure)
        assert r.walks > 0
        for seen in r.seen:
            check_weakly_consistent(seen, before, ever, None, None)
            assert all(v is not None and v.startswith(k) for k, v in seen)
    check_shape(sl)
    assert len(sl) == len(ever)
