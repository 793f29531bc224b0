"""``long_lived``: a slow full collection freezes what survived it; ``thaw`` gives the
frozen objects back, so the cycles of a deleted topic's partitions are freed; a broker
deleting a topic thaws. Each test leaves the collector as it found it."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from sentinel import long_lived
from sentinel.broker.service import BrokerService
from sentinel.clock import SystemClock
from sentinel.config import BrokerConfig
from sentinel.fs import MemFS


class _Node:
    """A member of a reference cycle (as an engine and its maintenance are)."""

    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> _Node:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return a


@pytest.fixture
def policy(monkeypatch: pytest.MonkeyPatch) -> Iterator[long_lived.LongLived]:
    gc.collect()
    was_frozen = gc.get_freeze_count()
    under_test = long_lived.LongLived()
    monkeypatch.setattr(long_lived, "LONG_LIVED", under_test)
    try:
        yield under_test
    finally:
        under_test.uninstall()
        gc.unfreeze()
        if was_frozen:
            gc.freeze()


def test_a_slow_full_collection_freezes_its_survivors(
    policy: long_lived.LongLived, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy.install()
    frozen_at_start = gc.get_freeze_count()
    kept = [[i] for i in range(20_000)]  # tracked objects created after the start
    gc.collect(1)
    assert policy.freezes == 0  # a young collection is not watched
    monkeypatch.setattr(long_lived, "FREEZE_AFTER_S", 0.0)
    gc.collect()
    assert policy.freezes == 1
    assert gc.get_freeze_count() >= frozen_at_start + len(kept)
    monkeypatch.setattr(long_lived, "FREEZE_AFTER_S", 3600.0)
    gc.collect()
    assert policy.freezes == 1  # a quick one does not


def test_thaw_lets_frozen_cycles_be_freed(
    policy: long_lived.LongLived, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy.install()
    node = _cycle()
    watched = [node]
    monkeypatch.setattr(long_lived, "FREEZE_AFTER_S", 0.0)
    gc.collect()  # the cycle, alive, is frozen
    monkeypatch.setattr(long_lived, "FREEZE_AFTER_S", 3600.0)
    gone = weakref.ref(node)
    watched.clear()
    del node
    gc.collect()
    assert gone() is not None  # frozen garbage: the collector does not see it
    long_lived.thaw()
    assert policy.thaws == 1 and gc.get_freeze_count() == 0
    gc.collect()
    assert gone() is None


def test_thaw_is_a_no_op_unless_installed(policy: long_lived.LongLived) -> None:
    gc.freeze()
    frozen = gc.get_freeze_count()
    long_lived.thaw()
    assert gc.get_freeze_count() == frozen and policy.thaws == 0


async def test_deleting_a_topic_thaws(policy: long_lived.LongLived) -> None:
    config = BrokerConfig(data_dir="/data", node_id=1, port=9555, sync_mode="none")
    service = BrokerService(config, MemFS(), SystemClock())
    await service.start()
    try:
        policy.install()
        await service.create_topic("a", 3)
        await service.delete_topic("a")
        assert policy.thaws == 1
    finally:
        await service.stop()
