"""The small pure modules: quorum arithmetic, follower progress, the in-memory log
(against a trivial oracle) and message validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.raft.errors import MalformedMessageError, SafetyViolationError
from sentinel.raft.log import Entry, MemoryLog
from sentinel.raft.messages import AppendEntries, Heartbeat
from sentinel.raft.progress import Progress, ProgressState
from sentinel.raft.quorum import VoteResult, committed, majority, vote_result


@given(st.dictionaries(st.integers(1, 9), st.integers(0, 100), min_size=1))
def test_committed_is_what_a_majority_reached(match: dict[int, int]) -> None:
    """§5.3: an entry is committed once "replicated it on a majority of the servers":
    the result is reached by a majority, and one more is not."""
    voters = set(match)
    c = committed(voters, match)
    assert sum(1 for v in voters if match[v] >= c) >= majority(len(voters))
    assert sum(1 for v in voters if match[v] >= c + 1) < majority(len(voters))


def test_majority_and_votes() -> None:
    """§5.2: "votes from a majority of the servers in the full cluster"."""
    assert [majority(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
    v = {1, 2, 3, 4, 5}
    assert vote_result(v, {1: True, 2: True}) is VoteResult.PENDING
    assert vote_result(v, {1: True, 2: True, 3: True}) is VoteResult.WON
    assert vote_result(v, {1: True, 2: False, 3: False, 4: False}) is VoteResult.LOST
    assert committed({1, 2, 3}, {1: 5}) == 0  # a voter never heard from counts 0


def test_progress_probe_and_replicate() -> None:
    """etcd's progress: one probe in flight at a time; streaming once matched; a stale
    rejection is ignored."""
    pr = Progress(match=0, next=10)
    pr.sent(12)
    assert pr.paused and pr.next == 10
    assert pr.acked(10) and not pr.paused
    pr.become_replicate()
    pr.sent(12)
    pr.sent(15)
    assert pr.next == 15 and pr.state is ProgressState.REPLICATE
    assert pr.is_stale_rejection(10) and not pr.is_stale_rejection(12)
    pr.backed_up(4)
    assert pr.next == 10 and pr.state is ProgressState.PROBE  # never below match


@given(st.lists(st.tuples(st.integers(1, 4), st.integers(0, 3)), max_size=30),
       st.integers(0, 60))
def test_memory_log_against_oracle(ops: list[tuple[int, int]], cut: int) -> None:
    """The log's offset arithmetic against a list of (offset, term) per record."""
    log, oracle, term = MemoryLog(), [], 0
    for count, bump in ops:
        term += bump
        log.append([Entry(log.log_end, term, count)])
        oracle += [term] * count
    assert log.log_end == len(oracle)
    for off in range(-1, len(oracle) + 2):
        want = 0 if off == -1 else (oracle[off] if off < len(oracle) else None)
        assert log.term_at(off) == want
    bases = [e.base for e in log.all_entries()]
    boundary = max([b for b in bases if b <= cut], default=0)
    log.truncate_suffix(boundary)
    assert log.log_end == boundary and log.last_term == (oracle[boundary - 1] if boundary else 0)


def test_memory_log_refuses_out_of_place_calls() -> None:
    log = MemoryLog()
    log.append([Entry(0, 1, 3), Entry(3, 1, 2)])
    with pytest.raises(SafetyViolationError):
        log.append([Entry(9, 1)])
    with pytest.raises(SafetyViolationError):
        log.truncate_suffix(1)  # inside a batch
    with pytest.raises(SafetyViolationError):
        log.entries(2, 1)
    log.trim_prefix(3)
    assert (log.log_start, log.start_term, log.term_at(2), log.term_at(3)) == (3, 1, 1, 1)


def test_messages_validate_on_construction() -> None:
    """Malformed input from a peer is refused before it reaches the core."""
    with pytest.raises(MalformedMessageError):
        Heartbeat(1, 2, 2, 0)  # to itself
    with pytest.raises(MalformedMessageError):
        AppendEntries(1, 1, 2, 5, 1, (Entry(6, 1),), 0)  # entries do not follow prev
    with pytest.raises(MalformedMessageError):
        AppendEntries(1, 1, 2, 5, 1, (Entry(5, 2),), 0)  # entry term above the message's
    with pytest.raises(MalformedMessageError):
        AppendEntries(1, 1, 2, 5, 1, (), -1)
