"""The broker-wide memtable budget's accounting (``storage/write_buffer.py``), against a
brute-force model of which engines are asked to flush."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.storage.workers import WorkerPool
from sentinel.storage.write_buffer import WriteBufferManager


class _Pool:
    """Records the flush requests instead of running them."""

    def __init__(self) -> None:
        self.submitted: list[Callable[[], None]] = []

    def submit(self, job: Callable[[], None]) -> None:
        self.submitted.append(job)


BUDGET = 10_000

# (owner, size) reports, and (owner, None) for an engine that closes.
steps = st.lists(
    st.tuples(st.integers(0, 7), st.one_of(st.none(), st.integers(0, 6_000))), max_size=80
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_the_asked_engines_are_accounted_as_they_report(
    moves: list[tuple[int, int | None]],
) -> None:
    pool = _Pool()
    manager = WriteBufferManager(BUDGET, cast(WorkerPool, pool))
    sizes: dict[int, int] = {}
    for owner, size in moves:
        if size is None:
            manager.forget(owner)
            sizes.pop(owner, None)
        else:
            manager.report(owner, size, lambda: None)
            if size:
                sizes[owner] = size
            else:
                sizes.pop(owner, None)
        asked = manager._asked
        assert manager.total_bytes == sum(sizes.values())
        assert manager._asked_total == sum(sizes.get(o, 0) for o in asked)
        if size is not None and manager.total_bytes > BUDGET:
            # Past the budget, enough engines are asked that the rest fit in half of it
            # (or every engine with a memtable is asked).
            unasked = sum(v for o, v in sizes.items() if o not in asked)
            assert unasked <= BUDGET // 2 or all(o in asked for o in sizes)
    assert len(pool.submitted) == manager.flushes_requested


def test_an_engine_is_asked_once_until_its_memtable_shrinks() -> None:
    pool = _Pool()
    manager = WriteBufferManager(BUDGET, cast(WorkerPool, pool))
    manager.report(1, 6_000, lambda: None)
    manager.report(2, 5_000, lambda: None)  # past the budget: the largest is asked
    assert manager.flushes_requested == 1 and manager._asked == {1}
    manager.report(1, 6_500, lambda: None)  # still growing: not asked again
    assert manager.flushes_requested == 1
    manager.report(1, 0, lambda: None)  # frozen by its flush
    assert manager._asked == set() and manager._asked_total == 0
    manager.report(2, 11_000, lambda: None)
    assert manager._asked == {2} and manager.flushes_requested == 2
