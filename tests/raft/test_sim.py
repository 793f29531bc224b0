"""The deterministic simulator in ``make test``: 1,000 seeds by default, and 100 more
with every node on the real partition log (``PartitionLog`` on ``MemFS``).

    RAFT_SEEDS=100000 RAFT_LOG_SEEDS=10000 pytest -q -p no:cacheprovider \
        tests/raft/test_sim.py -k seeds            (the long run: both storages)
    RAFT_SEED_START=50000 RAFT_SEEDS=50000 ...   (one shard of a long run per core)
    RAFT_SEED=1234 pytest -q -s tests/raft/test_sim.py::test_replay   (one seed, traced)
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter

import pytest

from raft.sim import (
    PROFILES,
    InvariantViolationError,
    SimParams,
    Simulation,
    params_for,
    run_seed,
)
from raft.sim_partition import PartitionStorage
from sentinel.raft.core import RaftCore
from sentinel.raft.messages import PreVote, RequestVote
from sentinel.raft.partition_log_adapter import entry_of
from sentinel.raft.state import HardState


def test_seeds() -> None:
    """Figure 3's guarantees (Election Safety, Log Matching, Leader Completeness, State
    Machine Safety) after every event, and liveness after healing, for many seeds."""
    start = int(os.environ.get("RAFT_SEED_START", "0"))
    count = int(os.environ.get("RAFT_SEEDS", "1000"))
    t0, c0 = time.perf_counter(), time.process_time()
    for seed in range(start, start + count):
        run_seed(seed)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"\n{count} seeds: {wall:.1f} s wall, {cpu:.1f} s CPU, {count / cpu:.1f} seeds/CPU-s")


def real_log_params(seed: int) -> SimParams:
    """The seed's fault profile on the real log (the retention profile moves log starts
    with ``PartitionRaftLog.advance_start``; laggards restart from a leader's log start
    with ``PartitionLog.restart_at``)."""
    return dataclasses.replace(params_for(seed)[1], real_log=True)


def test_seeds_on_the_partition_log() -> None:
    """The same checks with every node on ``PartitionLog`` + the hard-state file on its
    own ``MemFS`` (a crash is ``MemFS.crash()``; the reopened log must be exactly what
    was synced). Afterwards each node's partition log, read as a consumer reads it (up
    to the high watermark), holds the committed entries byte for byte."""
    start = int(os.environ.get("RAFT_SEED_START", "0"))
    count = int(os.environ.get("RAFT_LOG_SEEDS", "100"))
    t0, c0 = time.perf_counter(), time.process_time()
    for seed in range(start, start + count):
        sim = run_seed(seed, real_log_params(seed))
        for i in sim.ids:
            storage = sim.storage[i]
            assert isinstance(storage, PartitionStorage)
            plog = storage.log.plog
            at = plog.log_start_offset
            while at < plog.high_watermark:
                result = plog.read(at, 1 << 20)
                for b in result.batches:
                    e = entry_of(bytes(b))
                    assert sim.applied[e.base] == (e.term, e.count, e.data)
                at = result.next_offset
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"\n{count} seeds on PartitionLog: {wall:.1f} s wall, {cpu:.1f} s CPU")


def test_replay() -> None:
    """Replays one seed (``RAFT_SEED``, default 0) and prints its last events."""
    seed = int(os.environ.get("RAFT_SEED", "0"))
    sim = Simulation(seed, real_log_params(seed) if os.environ.get("RAFT_REAL_LOG") else None)
    try:
        sim.run()
    finally:
        print(f"\nseed {seed} ({sim.profile}): terms {sorted(sim.leaders.items())}, "
              f"commit {sim.commit_end}, {dict(sim.stats)}")
        print("\n".join(sim.trace))


def test_simulation_exercises_the_faults() -> None:
    """The checker is not vacuous: over a few seeds there are crashes at both points
    of the Ready, many terms, membership changes, retention with followers brought up
    from a leader's log start, every fault profile, and a growing committed log."""
    totals: Counter[str] = Counter()
    for seed in range(40):
        sim = run_seed(seed)
        totals.update(sim.stats)
        totals["terms"] += len(sim.leaders)
        totals["membership"] += sim.membership_changed
        totals["committed"] += sim.commit_end
        totals[sim.profile] += 1
    assert totals["crash before persist"] > 20 and totals["crash after persist, before send"] > 20
    assert totals["terms"] > 100 and totals["membership"] > 5 and totals["committed"] > 2000
    assert totals["retention"] > 20 and totals["log reset"] > 5
    assert all(totals[p] > 0 for p in PROFILES)


def test_same_seed_same_history() -> None:
    """Determinism: a seed is a history (so a failing seed can be replayed)."""
    a, b = run_seed(7), run_seed(7)
    assert list(a.trace) == list(b.trace) and a.applied == b.applied


def test_checker_catches_double_voting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker finds a broken core: a node that votes for anyone (§5.2's one vote
    per term broken) elects two leaders in a term, and the failure names its seed and
    the command that replays it."""
    original = RaftCore._on_vote_request

    def promiscuous(self: RaftCore, m: PreVote | RequestVote) -> None:
        self.vote = None
        self.leader = None
        original(self, m)

    monkeypatch.setattr(RaftCore, "_on_vote_request", promiscuous)
    with pytest.raises(InvariantViolationError) as err:
        for seed in range(200):
            run_seed(seed, SimParams(membership=False))
    assert "RAFT_SEED=" in str(err.value)
    assert "pytest tests/raft/test_sim.py::test_replay" in str(err.value)


def test_checker_catches_a_vote_lost_in_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """§5.2 / figure 2 ("votedFor ... updated on stable storage before responding to
    RPCs"): a core whose hard state leaves the vote out forgets it in a crash and
    votes twice in a term; the simulator sees it."""
    monkeypatch.setattr(RaftCore, "hard_state",
                        property(lambda self: HardState(self.term, None, self.commit)))
    with pytest.raises(InvariantViolationError, match="voted for"):
        for seed in range(300):
            run_seed(seed)
