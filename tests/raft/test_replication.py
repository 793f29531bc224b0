"""Log replication: log matching, conflicts, fast backup, commit rules (figure 8), the
log start, and the entry index as a record offset (KIP-595)."""

from __future__ import annotations

import random

import pytest

from raft.harness import Cluster, entries, take
from sentinel.raft.core import RaftCore
from sentinel.raft.errors import SafetyViolationError
from sentinel.raft.log import Entry, MemoryLog
from sentinel.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    RequestVoteResponse,
)
from sentinel.raft.state import HardState, RaftConfig, Role

NO_PREVOTE = RaftConfig(pre_vote=False, check_quorum=False)


def batches(core: RaftCore) -> list[tuple[int, int, int]]:
    log = core.log
    return [(e.base, e.last, e.term) for e in log.entries(log.log_start, 1 << 30)]


def test_entries_are_batches_indexed_by_offset() -> None:
    """KIP-595: "the log entry index is the record offset and the term is the leader
    epoch": a proposal of n records takes n offsets, and replicas hold the same batch
    at the same offsets."""
    c = Cluster(3)
    leader = c.elect(1)
    e1 = leader.propose(b"a", count=5)
    e2 = leader.propose(b"b", count=2)
    c.drain()
    assert (e1.base, e1.last, e2.base, e2.last) == (1, 5, 6, 7)
    assert all(batches(n) == batches(leader) for n in c.nodes.values())
    assert all(n.commit == 8 for n in c.nodes.values())
    assert [e.data for e in c.applied[2]] == [b"", b"a", b"b"]


def test_follower_rejects_when_prev_does_not_match() -> None:
    """§5.3: "If the follower does not find an entry in its log with the same index and
    term, then it refuses the new entries" (the consistency check)."""
    log = MemoryLog()
    log.append(entries(1, 1))
    f = RaftCore(2, frozenset({1, 2, 3}), log, random.Random(0), hard_state=HardState(2))
    f.step(AppendEntries(2, 1, 2, prev_offset=4, prev_term=2, entries=(), commit=0))
    f.step(AppendEntries(2, 1, 2, prev_offset=6, prev_term=1, entries=(), commit=0))
    f.step(AppendEntries(2, 1, 2, prev_offset=4, prev_term=1, entries=(), commit=0))
    a, b, ok = take(f).messages
    assert isinstance(a, AppendEntriesResponse) and not a.success
    assert (a.conflict_term, a.conflict_first) == (1, 0)
    assert isinstance(b, AppendEntriesResponse) and not b.success
    assert b.conflict_term is None and b.log_end == 4
    assert isinstance(ok, AppendEntriesResponse) and ok.success and ok.match == 4


def test_conflicting_suffix_is_replaced() -> None:
    """§5.3: "If an existing entry conflicts with a new one (same index but different
    terms), delete the existing entry and all that follow it"; figure 7's followers
    end up with the leader's log."""
    c = Cluster(3, config=NO_PREVOTE,
                logs={1: entries(1, 1, 3, 3), 2: entries(1, 1, 2, 2, 2, 2), 3: entries(1)},
                terms={1: 3, 2: 2, 3: 1})
    leader = c.elect(1)
    c.drain()
    assert batches(c.nodes[2]) == batches(leader) == batches(c.nodes[3])
    assert leader.commit == leader.log.log_end


def test_fast_backup_skips_a_term_per_round_trip() -> None:
    """§5.3: "when rejecting an AppendEntries request, the follower can include the term
    of the conflicting entry and the first index it stores for that term. With this
    information, the leader can decrement nextIndex to bypass all of the conflicting
    entries in that term; one AppendEntries RPC will be required for each term with
    conflicting entries, rather than one RPC per entry"."""
    leader_log = entries(1, 1, 4, 4, 4, 4, 4, 5, 5)
    follower_log = entries(1, 1, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3)
    c = Cluster(3, config=NO_PREVOTE, logs={1: leader_log, 2: follower_log, 3: leader_log},
                terms={1: 5, 2: 3, 3: 5})
    c.cut = {(1, 2)}
    leader = c.elect(1)
    c.heal()
    leader.propose(b"x")
    c.tick([1], 1)  # the probe sent during the cut is answered by the next heartbeat
    rejections = [m for m in c.sent if isinstance(m, AppendEntriesResponse)
                  and m.src == 2 and not m.success]
    assert len(rejections) <= 2  # one per conflicting term (3, then 2), not one per batch
    assert batches(c.nodes[2]) == batches(leader)


def test_fast_backup_when_follower_log_is_short() -> None:
    """§5.3 (fast backup): a follower whose log ends before prevLogIndex answers with
    its log end, and the leader continues from there in one step."""
    c = Cluster(3, config=NO_PREVOTE, logs={1: entries(1, 1, 1, 1, 1, 1), 3: entries(1)},
                terms={1: 1, 3: 1})
    leader = c.elect(1)
    c.drain()
    rejections = [m for m in c.sent if isinstance(m, AppendEntriesResponse)
                  and m.src == 2 and not m.success]
    assert len(rejections) == 1 and rejections[0].log_end == 0
    assert batches(c.nodes[2]) == batches(leader)


def test_figure8_only_current_term_entries_commit_by_counting() -> None:
    """§5.4.2: "Raft never commits log entries from previous terms by counting replicas.
    Only log entries from the leader's current term are committed by counting replicas;
    once an entry from the current term has been committed in this way, then all prior
    entries are committed indirectly because of the Log Matching Property" (figure 8)."""
    log = MemoryLog()
    log.append([Entry(0, 1), Entry(1, 2)])  # S1 of figure 8 (c): term 2 entry at index 2
    s1 = RaftCore(1, frozenset({1, 2, 3, 4, 5}), log, random.Random(0),
                  hard_state=HardState(3), config=NO_PREVOTE)
    s1.campaign(pre=False)
    for v in (2, 3):
        s1.step(RequestVoteResponse(4, v, 1, True))
    assert s1.role is Role.LEADER and s1.term == 4
    assert s1.log.term_at(2) == 4  # its no-op at offset 2
    # S2 and S3 now hold the term-2 entry: a majority, but of an old term.
    for v in (2, 3):
        s1.step(AppendEntriesResponse(4, v, 1, True, match=2))
    assert s1.commit == 0
    for v in (2, 3):
        s1.step(AppendEntriesResponse(4, v, 1, True, match=3))
    assert s1.commit == 3


def test_leader_commits_on_majority_and_followers_learn_commit() -> None:
    """§5.3: "A log entry is committed once the leader that created the entry has
    replicated it on a majority of the servers"; "the leader keeps track of the highest
    index it knows to be committed, and it includes that index in future AppendEntries
    RPCs (including heartbeats) so that the other servers eventually find out"."""
    c = Cluster(5)
    leader = c.elect(1)
    c.isolate(4)
    c.isolate(5)
    e = leader.propose(b"x")
    c.drain()
    assert leader.commit == e.end
    c.cut = {(1, 5), (5, 1)}
    e2 = leader.propose(b"y")
    c.drain()
    assert leader.commit == e2.end and c.nodes[4].commit == e2.end
    assert c.nodes[5].commit == 0


def test_follower_below_log_start_restarts_from_it() -> None:
    """A follower whose next entry is below the leader's log start (retention removed
    it) is brought up from the log start; what retention removed was committed."""
    c = Cluster(3)
    c.isolate(3)
    leader = c.elect(1)
    for k in range(10):
        leader.propose(b"%d" % k, count=3)
    c.drain()
    commit = leader.commit
    for i in (1, 2):
        c.logs[i].trim_prefix(c.logs[i].batch_base(commit - 5))
    start = c.logs[1].log_start
    assert 0 < start < commit
    c.heal()
    leader.propose(b"z")
    c.tick([1], 2)
    f = c.nodes[3]
    assert f.log.log_start == start and f.log.log_end == leader.log.log_end
    assert f.commit == leader.commit
    assert c.applied[3][0].base == start and c.applied[3][-1].data == b"z"


def test_truncating_a_committed_entry_is_refused() -> None:
    """Figure 3, State Machine Safety: a committed entry is never removed; the core
    refuses (a leader claiming otherwise would have broken Leader Completeness)."""
    log = MemoryLog()
    log.append(entries(1, 1))
    f = RaftCore(2, frozenset({1, 2, 3}), log, random.Random(0), hard_state=HardState(1, None, 4))
    with pytest.raises(SafetyViolationError):
        f.truncate(2)


def test_figure8_scenario_old_entry_on_majority_is_overwritten_safely() -> None:
    """Figure 8, played out: "(c) S1 is restarted, elected leader, and continues
    replication. At this point, the log entry from term 2 has been replicated on a
    majority of the servers, but it is not committed. If S1 crashes as in (d), S5 could
    be elected leader ... and overwrite the entry with its own entry from term 3."
    (Our leaders start with a no-op, so the terms are shifted by one; entries go out
    one per message so the old entry can reach a majority before the new one.)"""
    c = Cluster(5, config=RaftConfig(pre_vote=False, check_quorum=False,
                                     max_entries_per_message=1))

    def elect(i: int) -> RaftCore:
        for _ in range(3):
            c.nodes[i].campaign(pre=False)
            c.drain()
            if c.nodes[i].role is Role.LEADER:
                return c.nodes[i]
        raise AssertionError(f"{i} was not elected")

    s1 = elect(1)  # (a) S1 leads; X reaches S2 only
    c.cut = {(1, 3), (1, 4), (1, 5)}
    x = s1.propose(b"X")
    c.drain()
    assert c.logs[2].term_at(x.base) == s1.term
    c.crash(1)  # (b) S5 is elected by S3, S4, S5; its entry at X's offset reaches no one
    c.heal()
    c.drop = lambda m: isinstance(m, AppendEntries) and m.src == 5
    s5 = elect(5)
    assert c.logs[5].term_at(x.base) == s5.term
    c.crash(5)  # (c) S1 restarts, is elected, gets X on S3 (a majority with S1, S2),
    # and its new entry on S2 only...
    c.start(1)
    c.drop = lambda m: isinstance(m, AppendEntries) and (
        m.dst == 4 or (m.dst == 3 and any(e.term > 1 for e in m.entries)
                       and c.logs[3].log_end > x.base))
    s1 = elect(1)
    assert c.logs[3].term_at(x.base) == 1 and c.logs[2].term_at(x.base) == 1
    assert s1.commit == x.base  # ...but X is not committed: it is of an older term
    c.crash(1)  # (d) S5 restarts, wins with S3, S4 and overwrites X everywhere
    c.start(5)
    c.drop = lambda m: False
    s5 = elect(5)
    c.drain()
    for i in (2, 3, 4, 5):
        assert batches(c.nodes[i]) == batches(s5)
        assert c.logs[i].term_at(x.base) != 1
    assert all(b"X" not in [e.data for e in c.applied[i]] for i in c.ids)


@pytest.mark.parametrize("from_log_start", [False, True])
def test_append_overlapping_the_commit_is_checked_at_the_commit(from_log_start: bool) -> None:
    """§5.3's consistency check, for a request whose prev lies inside our committed
    prefix (a late or duplicated request): the committed prefix is the leader's, so
    the check moves to the commit, with our term there (found by the simulator, seed
    3306: the request's prev term was compared at the commit and a follower started
    its log over with the wrong term)."""
    log = MemoryLog()
    log.append(entries(1, 2))  # offsets 0-1 term 1, 2-3 term 2
    f = RaftCore(2, frozenset({1, 2, 3}), log, random.Random(0),
                 hard_state=HardState(2, None, 4))
    f.step(AppendEntries(2, 1, 2, prev_offset=2, prev_term=1,
                         entries=(Entry(2, 2, 2, b"1"), Entry(4, 2, 2, b"x")),
                         commit=6, from_log_start=from_log_start))
    (resp,) = take(f).messages
    assert isinstance(resp, AppendEntriesResponse) and resp.success and resp.match == 6
    assert (log.log_start, log.log_end, f.commit) == (0, 6, 6)
