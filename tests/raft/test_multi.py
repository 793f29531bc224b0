"""Many groups per broker: one tick, heartbeats coalesced into one envelope per broker
pair (``raft.multi``)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from sentinel.raft.core import RaftCore
from sentinel.raft.errors import MalformedMessageError
from sentinel.raft.log import MemoryLog
from sentinel.raft.messages import HeartbeatResponse
from sentinel.raft.multi import Beat, Envelope, GroupSet
from sentinel.raft.state import RaftConfig, Role

BROKERS = (1, 2, 3)
GROUPS = 300


class Cluster:
    """Three brokers, each a ``GroupSet`` of the same ``GROUPS`` groups, envelopes
    delivered in-process (the MemoryLog needs no persist step)."""

    def __init__(self, seed: int = 1) -> None:
        rng = random.Random(seed)
        cfg = RaftConfig(election_ticks=10, heartbeat_ticks=1)
        self.sets = {b: GroupSet(b) for b in BROKERS}
        for g in range(GROUPS):
            for b in BROKERS:
                core = RaftCore(b, frozenset(BROKERS), MemoryLog(),
                                random.Random(rng.getrandbits(32)), config=cfg)
                self.sets[b].add(g, core)
        self.sent: Counter[tuple[int, int]] = Counter()
        self.group_messages = 0

    def tick(self) -> None:
        """One tick of every broker's timer, then deliver until nothing is left."""
        self.sent.clear()
        for s in self.sets.values():
            s.tick()
        while True:
            out: list[Envelope] = []
            for s in self.sets.values():
                if s.has_ready():
                    mr = s.ready()
                    out.extend(mr.envelopes)
                    s.advance(mr)
            if not out:
                return
            for env in out:
                self.sent[(env.src, env.dst)] += 1
                self.group_messages += env.size
                self.sets[env.dst].step(env)

    def leaders(self) -> dict[int, tuple[int, int]]:
        """group -> (leader broker, term), for the groups with one leader."""
        out = {}
        for b, s in self.sets.items():
            for g, core in s.groups.items():
                if core.role is Role.LEADER:
                    out[g] = (b, core.term)
        return out


def test_idle_groups_share_one_heartbeat_envelope_per_broker_pair() -> None:
    """Each broker ticks all its groups from one timer; once leaders are elected an idle
    cluster exchanges, per tick, at most one envelope per broker pair and direction,
    carrying the heartbeats of all the groups the pair shares, and nothing else (no
    elections, no appends): leaders and terms stay as they are."""
    c = Cluster()
    for _ in range(60):
        c.tick()
        if len(c.leaders()) == GROUPS:
            break
    assert len(c.leaders()) == GROUPS
    c.tick()  # the last commits of the elections travel
    before = c.leaders()
    for _ in range(50):
        c.group_messages = 0
        c.tick()
        assert set(c.sent.values()) == {1}
        assert len(c.sent) == 6  # every ordered pair of the three brokers, once
        # one heartbeat per follower per group plus its response: 2 x 2 x GROUPS
        assert c.group_messages == 4 * GROUPS
    assert c.leaders() == before


def test_leaders_spread_and_a_coalesced_heartbeat_carries_only_its_groups() -> None:
    """§5.2: "Leaders send periodic heartbeats ... to all followers in order to maintain
    their authority": a coalesced heartbeat keeps every group's followers from
    starting an election, for hundreds of groups at once."""
    c = Cluster(seed=2)
    for _ in range(60):
        c.tick()
    per_broker = Counter(b for b, _ in c.leaders().values())
    assert sum(per_broker.values()) == GROUPS and len(per_broker) == 3


def test_an_envelope_naming_an_unknown_group_is_refused_and_the_rest_delivered() -> None:
    c = Cluster()
    for _ in range(60):
        c.tick()
    leader, term = c.leaders()[0]
    follower = next(b for b in BROKERS if b != leader)
    core = c.sets[follower].groups[0]
    core.election_elapsed = 5
    env = Envelope(leader, follower, (Beat(10_000, term, 0), Beat(0, term, core.commit)))
    with pytest.raises(MalformedMessageError, match="group 10000"):
        c.sets[follower].step(env)
    assert core.election_elapsed == 0  # group 0's heartbeat was delivered


def test_an_envelope_with_a_misaddressed_message_is_malformed() -> None:
    with pytest.raises(MalformedMessageError):
        Envelope(1, 2, messages=((0, HeartbeatResponse(1, 3, 2)),))
    with pytest.raises(MalformedMessageError):
        Envelope(1, 1)


def test_proposals_replicate_through_the_envelopes() -> None:
    """§5.3: the leader "issues AppendEntries RPCs in parallel to each of the other
    servers"; here they travel inside the envelopes, beside the coalesced heartbeats,
    and the entry commits on every replica of its group only."""
    c = Cluster()
    for _ in range(60):
        c.tick()
    leader, _ = c.leaders()[7]
    other = {b: s.groups[8].log.log_end for b, s in c.sets.items()}
    entry = c.sets[leader].groups[7].propose(b"x")
    for _ in range(3):
        c.tick()
    for s in c.sets.values():
        assert s.groups[7].commit >= entry.end
    assert {b: s.groups[8].log.log_end for b, s in c.sets.items()} == other
