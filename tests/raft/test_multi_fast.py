"""The idle path of ``GroupSet`` (``fast=True``: heartbeats from ticks straight into
``Beat``s, quiet heartbeats and acks without messages) is the message path
(``fast=False``) made cheaper, not another protocol: the same inputs leave every core
in the same state and send the same things.

Two worlds of three brokers x a few groups, built from the same seeds, take the same
operations drawn by hypothesis (ticks of one broker, Ready rounds, deliveries in any
order, drops, duplicates, proposals, leadership transfers); after each one every
core's state, and what each round sent, must be equal. A group's heartbeats, being
coalesced, are compared as multisets per envelope, its other messages in order.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.raft.core import RaftCore
from sentinel.raft.errors import ProposalRefusedError
from sentinel.raft.log import MemoryLog
from sentinel.raft.messages import Heartbeat, HeartbeatResponse
from sentinel.raft.multi import Beat, Envelope, GroupSet, MultiReady
from sentinel.raft.state import RaftConfig, Ready

BROKERS = (1, 2, 3)
GROUPS = 3


class World:
    def __init__(self, fast: bool, seed: int) -> None:
        rng = random.Random(seed)
        cfg = RaftConfig(election_ticks=4, heartbeat_ticks=2)
        self.sets = {b: GroupSet(b, fast=fast) for b in BROKERS}
        for g in range(GROUPS):
            for b in BROKERS:
                core = RaftCore(b, frozenset(BROKERS), MemoryLog(),
                                random.Random(rng.getrandbits(32)), config=cfg)
                self.sets[b].add(g, core)
        self.net: list[Envelope] = []

    def apply(self, op: tuple[str, int, int]) -> object:
        kind, a, b = op
        if kind == "tick":
            self.sets[BROKERS[a % 3]].tick()
            return None
        if kind == "ready":
            s = self.sets[BROKERS[a % 3]]
            if not s.has_ready():
                return [], {}  # as a round that only holds acks for the next tick
            mr = s.ready()
            self.net.extend(mr.envelopes)
            s.advance(mr)
            return _outputs(mr)
        if kind in ("deliver", "dup", "drop"):
            if not self.net:
                return None
            i = a % len(self.net)
            env = self.net[i] if kind == "dup" else self.net.pop(i)
            if kind != "drop":
                self.sets[env.dst].step(env)
            return None
        s = self.sets[BROKERS[a % 3]]
        core = s.groups[b % GROUPS]
        if core.lead is None:
            return None
        try:
            if kind == "propose":
                core.propose(b"x")
            else:
                core.transfer_leadership(BROKERS[(a + 1) % 3])
        except ProposalRefusedError as e:
            return str(e)
        s.touch(b % GROUPS)
        return None

    def state(self) -> list[Any]:
        out: list[Any] = []
        for b, s in self.sets.items():
            for g, c in sorted(s.groups.items()):
                lead = c.lead
                progress = None if lead is None else (
                    lead.heartbeat_elapsed, lead.transfer_target,
                    sorted((v, p.match, p.next, p.state, p.paused, p.recent_active)
                           for v, p in lead.progress.items()),
                )
                log = [(e.base, e.term, e.count) for e in c.log.entries(0, 1 << 20)]
                out.append((b, g, c.term, c.vote, c.commit, c.applied, c.role, c.leader,
                            c.election_elapsed, c.timeout, c.hard_state, log, progress))
        return out


def _outputs(mr: MultiReady) -> object:
    """What a round hands the driver, with coalesced heartbeats as multisets and the
    Readys that only carried heartbeat messages left out."""
    envs = []
    for env in mr.envelopes:
        msgs = sorted(env.messages, key=lambda gm: gm[0])  # stable: per group in order
        envs.append((env.src, env.dst, Counter(env.beats), Counter(env.acks), msgs))
    readys = {}
    for g, rd in mr.groups:
        key = _ready_key(rd)
        if key is not None:
            readys[g] = key
    return envs, readys


def _ready_key(rd: Ready) -> object:
    msgs = tuple(m for m in rd.messages if not isinstance(m, Heartbeat | HeartbeatResponse))
    if not (rd.hard_state or rd.entries or rd.must_sync or msgs or rd.committed
            or rd.log_reset is not None):
        return None
    return rd.hard_state, rd.entries, rd.must_sync, msgs, rd.committed, rd.log_reset, rd.applied


KINDS = ["tick"] * 4 + ["ready"] * 4 + ["deliver"] * 6 + ["dup", "drop", "propose", "transfer"]


def schedule(seed: int, n: int) -> list[tuple[str, int, int]]:
    """``n`` operations drawn from ``seed`` (long schedules reach elections, commits
    and transfers far more often than lists drawn op by op)."""
    rng = random.Random(seed)
    return [(rng.choice(KINDS), rng.randrange(51), rng.randrange(51)) for _ in range(n)]


def run_both(seed: int, ops: list[tuple[str, int, int]]) -> None:
    fast, slow = World(True, seed), World(False, seed)
    for i, op in enumerate(ops):
        assert fast.apply(op) == slow.apply(op), (i, op)
        assert fast.state() == slow.state(), (i, op)
        assert len(fast.net) == len(slow.net), (i, op)


@given(seed=st.integers(0, 2**32), n=st.integers(50, 400))
@settings(max_examples=100, deadline=None)
def test_fast_path_is_the_message_path(seed: int, n: int) -> None:
    run_both(seed, schedule(seed, n))


def test_fast_path_is_the_message_path_fixed_seeds() -> None:
    for seed in range(60):
        run_both(seed, schedule(seed, 250))


def test_idle_steady_state_builds_no_message_or_ready() -> None:
    """Once leaders are settled, a whole heartbeat round trip takes the idle path: no
    group has a Ready (nothing but envelopes of Beats and BeatAcks)."""
    w = World(True, 7)
    for _ in range(300):
        for op in (("tick", 0, 0), ("tick", 1, 0), ("tick", 2, 0)):
            w.apply(op)
        for _ in range(4):
            for b in range(3):
                w.apply(("ready", b, 0))
            while w.net:
                w.apply(("deliver", 0, 0))
    assert all(any(c.lead for s in w.sets.values() for c in [s.groups[g]])
               for g in range(GROUPS))
    for b in range(3):
        w.apply(("tick", b, 0))
    rounds: list[MultiReady] = []
    for _ in range(6):
        for s in w.sets.values():
            if s.has_ready():
                mr = s.ready()
                rounds.append(mr)
                w.net.extend(mr.envelopes)
                s.advance(mr)
        while w.net:
            w.apply(("deliver", 0, 0))
    assert rounds
    assert all(mr.groups == () for mr in rounds)
    assert any(isinstance(b, Beat) for mr in rounds for e in mr.envelopes for b in e.beats)
