"""Every group's hard state in one engine: one write, one fsync per round, atomic."""

from __future__ import annotations

import random

import pytest

from raft.sim_partition import ENGINE, OPTIONS, payload
from sentinel.clock import ManualClock
from sentinel.errors import CorruptionError, DiskError
from sentinel.fs import MemFS, SimulatedCrash
from sentinel.log.config import TopicConfig
from sentinel.log.partition_log import PartitionLog
from sentinel.raft.hard_state_file import DurableState
from sentinel.raft.hard_state_store import HardStateStore
from sentinel.raft.log import Entry
from sentinel.raft.partition_log_adapter import PartitionRaftLog
from sentinel.raft.state import HardState
from sentinel.storage.options import EngineOptions
from sentinel.storage.write_batch import WriteBatch

NO_THREADS = EngineOptions(background=False)


def rounds() -> list[dict[int, DurableState]]:
    """Eight rounds, each changing an overlapping set of groups (term = round + 1)."""
    rng = random.Random(7)
    out = []
    for i in range(8):
        groups = rng.sample(range(12), 5)
        out.append({g: DurableState(HardState(i + 1, g % 3, 10 * i + g)) for g in groups})
    return out


def merged(upto: int) -> dict[int, DurableState]:
    out: dict[int, DurableState] = {}
    for states in rounds()[:upto]:
        out.update(states)
    return out


@pytest.mark.parametrize("torn", [False, True])
def test_a_crash_at_every_step_keeps_whole_rounds_and_every_returned_one(torn: bool) -> None:
    """A crash anywhere in a sequence of store_many calls leaves exactly the rounds that
    returned, plus possibly the whole round in flight: never a part of one."""
    step = 0
    while True:
        fs = MemFS()
        store = HardStateStore.open(fs, "/raft-state", options=NO_THREADS)
        returned = 0
        fs.fail_after(step)
        try:
            for states in rounds():
                store.store_many(states)
                returned += 1
        except (SimulatedCrash, DiskError):  # the WAL names the crash as its failure
            pass
        finished = returned == len(rounds())
        fs.crash(random.Random(step) if torn else None)
        reopened = HardStateStore.open(fs, "/raft-state", options=NO_THREADS)
        found = reopened.load_all()
        allowed = [merged(returned)] + ([] if finished else [merged(returned + 1)])
        assert found in allowed, f"crash at step {step}: {returned} rounds returned"
        for g, state in found.items():
            assert reopened.view(g).load() == state
        reopened.close()
        if finished:
            break
        step += 1
    assert step > 8  # the crash points really covered the writes


def test_view_is_a_state_file_for_the_partition_raft_log() -> None:
    fs, clock = MemFS(), ManualClock()
    store = HardStateStore.open(fs, "/raft-state", options=NO_THREADS)

    def open_log(group: int) -> PartitionRaftLog:
        plog = PartitionLog.open(
            fs, f"/p{group}", TopicConfig(), clock, ENGINE, options=OPTIONS
        )
        return PartitionRaftLog(plog, store.view(group), clock)

    a, b = open_log(1), open_log(2)
    for log in (a, b):
        log.append([Entry(0, 1), Entry(1, 1, 2, payload(1, 2))])
        log.sync()
    # The driver's way: the states of both groups in one write, then the watermarks.
    states = {1: a.durable_state(HardState(1, 1, 3)), 2: b.durable_state(HardState(1, 2, 1))}
    store.store_many(states)
    for g, log in ((1, a), (2, b)):
        log.stored(states[g])
        log.follow_commit(states[g].hard.commit)
    assert (a.plog.high_watermark, b.plog.high_watermark) == (3, 1)
    a.store_hard_state(HardState(2, None, 3))  # the single-group way still works
    fs.crash()
    store = HardStateStore.open(fs, "/raft-state", options=NO_THREADS)
    a, b = open_log(1), open_log(2)
    assert (a.hard_state, b.hard_state) == (HardState(2, None, 3), HardState(1, 2, 1))
    assert (a.plog.high_watermark, b.plog.high_watermark) == (3, 1)
    store.delete(2)
    fs.crash()
    store = HardStateStore.open(fs, "/raft-state", options=NO_THREADS)
    assert set(store.load_all()) == {1}
    assert store.view(2).load() is None


def test_a_damaged_record_is_refused_naming_the_group() -> None:
    fs = MemFS()
    store = HardStateStore.open(fs, "/raft-state", options=NO_THREADS)
    store.store_many({5: DurableState(HardState(3, 1, 0))})
    raw = store._engine.get(b"g" + (5).to_bytes(8, "big"))
    assert raw is not None
    bad = bytearray(raw)
    bad[7] ^= 1
    store._engine.write(WriteBatch().put(b"g" + (5).to_bytes(8, "big"), bytes(bad)))
    with pytest.raises(CorruptionError, match="group 5"):
        store.view(5).load()


def test_unsynced_store_many_is_durable_after_sync() -> None:
    fs = MemFS()
    store = HardStateStore.open(fs, "/raft-state", options=NO_THREADS)
    store.store_many({1: DurableState(HardState(1, None, 0))}, sync=False)
    store.sync()
    fs.crash()
    store = HardStateStore.open(fs, "/raft-state", options=NO_THREADS)
    assert store.load_all() == {1: DurableState(HardState(1, None, 0))}
