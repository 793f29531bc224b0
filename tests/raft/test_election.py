"""Elections, terms, pre-vote, check-quorum and vote persistence; each test cites the
sentence of the Raft paper (extended version), or of Ongaro's dissertation, it checks."""

from __future__ import annotations

import random

import pytest

from raft.harness import Cluster, entries, take
from sentinel.raft.core import RaftCore
from sentinel.raft.errors import IllegalTransitionError, MalformedMessageError
from sentinel.raft.log import MemoryLog
from sentinel.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    PreVote,
    RequestVote,
    RequestVoteResponse,
)
from sentinel.raft.state import HardState, RaftConfig, Role, check_transition

NO_PREVOTE = RaftConfig(pre_vote=False, check_quorum=False)


def test_follower_times_out_into_candidate() -> None:
    """§5.2: "If a follower receives no communication over a period of time called the
    election timeout, then it assumes there is no viable leader and begins an election
    to choose a new leader. To begin an election, a follower increments its current
    term and transitions to candidate state."""
    c = Cluster(3, config=NO_PREVOTE)
    c.cut = {(1, 2), (1, 3)}
    n = c.nodes[1]
    for _ in range(2 * NO_PREVOTE.election_ticks):
        n.tick()
    assert n.role is Role.CANDIDATE and n.term == 1 and n.vote == 1
    rd = take(n)
    assert {type(m) for m in rd.messages} == {RequestVote}
    assert rd.hard_state == HardState(1, 1, 0)


def test_election_timeout_is_randomized_in_range() -> None:
    """§5.2: "Raft uses randomized election timeouts ... election timeouts are chosen
    randomly from a fixed interval (e.g., 150-300ms)"; here [E, 2E) ticks, drawn from
    the injected random source, so one seed gives one schedule."""
    seen = set()
    for seed in range(200):
        core = RaftCore(1, frozenset({1, 2, 3}), MemoryLog(), random.Random(seed))
        assert 10 <= core.timeout < 20
        seen.add(core.timeout)
    assert len(seen) > 5
    a = RaftCore(1, frozenset({1, 2}), MemoryLog(), random.Random(7))
    b = RaftCore(1, frozenset({1, 2}), MemoryLog(), random.Random(7))
    assert a.timeout == b.timeout


def test_candidate_with_majority_becomes_leader_and_appends_noop() -> None:
    """§5.2: "A candidate wins an election if it receives votes from a majority of the
    servers in the full cluster for the same term"; §8: "each leader commit a blank
    no-op entry into the log at the start of its term"."""
    c = Cluster(5, config=NO_PREVOTE)
    leader = c.elect(3)
    assert leader.term == 1
    assert all(n.leader == 3 for n in c.nodes.values())
    assert leader.commit == 1 and c.logs[1].log_end == 1


def test_one_vote_per_term() -> None:
    """§5.2: "Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis"."""
    core = RaftCore(1, frozenset({1, 2, 3}), MemoryLog(), random.Random(0))
    core.step(RequestVote(1, 2, 1, 0, 0))
    core.step(RequestVote(1, 3, 1, 0, 0))
    core.step(RequestVote(1, 2, 1, 0, 0))  # a retry of the same candidate: granted again
    grants = [m.granted for m in take(core).messages if isinstance(m, RequestVoteResponse)]
    assert grants == [True, False, True]
    assert core.vote == 2


def test_vote_refused_to_less_up_to_date_log() -> None:
    """§5.4.1: "If the logs have last entries with different terms, then the log with
    the later term is more up-to-date. If the logs end with the same term, then
    whichever log is longer is more up-to-date"; the voter denies its vote otherwise."""
    log = MemoryLog()
    log.append(entries(1, 2))  # end 4, last term 2
    core = RaftCore(1, frozenset({1, 2, 3}), log, random.Random(0), hard_state=HardState(2))
    core.step(RequestVote(3, 2, 1, last_end=10, last_term=1))  # longer, older term
    core.step(RequestVote(4, 3, 1, last_end=2, last_term=2))  # same term, shorter
    core.step(RequestVote(5, 2, 1, last_end=4, last_term=2))  # equal: up-to-date
    grants = [m.granted for m in take(core).messages if isinstance(m, RequestVoteResponse)]
    assert grants == [False, False, True]


def test_stale_term_rejected_and_newer_term_adopted() -> None:
    """§5.1: "If a server receives a request with a stale term number, it rejects the
    request"; "If a candidate or leader discovers that its term is out of date, it
    immediately reverts to follower state"."""
    c = Cluster(3)
    leader = c.elect(1)
    term = leader.term
    leader.step(AppendEntriesResponse(term + 5, 2, 1, success=False))
    assert leader.role is Role.FOLLOWER and leader.term == term + 5 and leader.vote is None
    f = c.nodes[3]
    take(f)
    f.step(AppendEntries(term - 1 if term > 1 else 0, 2, 3, 0, 0, (), 0))
    out = take(f).messages
    assert len(out) == 1 and isinstance(out[0], AppendEntriesResponse)
    assert out[0].term == f.term and not out[0].success


def test_vote_persisted_before_response_and_kept_across_crash() -> None:
    """§5.2 / figure 2: "currentTerm, votedFor: persistent state on all servers (updated
    on stable storage before responding to RPCs)"; a node restarted from what it
    persisted must not vote twice in a term."""
    c = Cluster(3, config=NO_PREVOTE)
    voter = c.nodes[1]
    voter.step(RequestVote(1, 2, 1, 0, 0))
    rd = take(voter)
    assert rd.hard_state == HardState(1, 2, 0)
    assert any(isinstance(m, RequestVoteResponse) and m.granted for m in rd.messages)
    c.hard[1] = rd.hard_state  # the driver persists, then sends
    c.crash(1)
    c.start(1)
    again = c.nodes[1]
    again.step(RequestVote(1, 3, 1, 0, 0))
    (resp,) = take(again).messages
    assert isinstance(resp, RequestVoteResponse) and not resp.granted


def test_prevote_does_not_disturb_a_healthy_leader() -> None:
    """Dissertation §9.6: "in the PreVote algorithm, a candidate only increments its
    term if it first learns from a majority of the cluster that they would be willing
    to grant the candidate their votes"; a server that rejoins after a partition does
    not disrupt the leader."""
    c = Cluster(3)
    leader = c.elect(1)
    term = leader.term
    c.isolate(3)
    c.tick([3], 100)
    assert c.nodes[3].term == term and c.nodes[3].role is Role.PRE_CANDIDATE
    c.heal()
    c.tick([3], 30)
    assert leader.role is Role.LEADER and leader.term == term


def test_without_prevote_a_rejoining_node_disrupts() -> None:
    """The control for the test above (§9.6's motivation): without pre-vote the
    isolated node's term grows and deposes the leader when it returns."""
    c = Cluster(3, config=NO_PREVOTE)
    leader = c.elect(1)
    c.isolate(3)
    c.tick([3], 50)
    assert c.nodes[3].term > leader.term
    c.heal()
    c.tick([3], 1)
    leader.tick()
    c.drain()
    assert leader.role is Role.FOLLOWER


def test_check_quorum_leader_steps_down_when_isolated() -> None:
    """Dissertation §6.2: "a leader steps down if an election timeout elapses without a
    successful round of heartbeats to a majority of its cluster"."""
    c = Cluster(3)
    leader = c.elect(1)
    c.isolate(1)
    c.tick([1], 2 * c.config.election_ticks)
    assert leader.role is Role.FOLLOWER and leader.leader is None
    assert leader.term == 1


def test_check_quorum_lease_ignores_votes_while_leader_is_heard() -> None:
    """Dissertation §4.2.3: "if a server receives a RequestVote request within the
    minimum election timeout of hearing from a current leader, it does not update its
    term or grant its vote"."""
    c = Cluster(3, config=RaftConfig(pre_vote=False))
    c.elect(1)
    f = c.nodes[2]
    term = f.term
    f.step(RequestVote(term + 1, 3, 2, 100, 100))
    assert f.term == term and not take(f).messages
    f.step(PreVote(term + 1, 3, 2, 100, 100))
    assert not take(f).messages


def test_illegal_transitions_raise() -> None:
    """The transition table in ``state``: a leader only steps down, only a candidate
    wins."""
    check_transition(1, Role.CANDIDATE, Role.LEADER)
    with pytest.raises(IllegalTransitionError):
        check_transition(1, Role.FOLLOWER, Role.LEADER)
    with pytest.raises(IllegalTransitionError):
        check_transition(1, Role.LEADER, Role.CANDIDATE)
    c = Cluster(3)
    leader = c.elect(1)
    with pytest.raises(IllegalTransitionError):
        leader.campaign(pre=True)


def test_bad_messages_refused_without_state_change() -> None:
    """Bad input: a malformed message or one from an unknown node is refused with an
    error naming the peer, and the node's state does not change."""
    with pytest.raises(MalformedMessageError):
        RequestVote(-1, 2, 1, 0, 0)
    core = RaftCore(1, frozenset({1, 2, 3}), MemoryLog(), random.Random(0))
    with pytest.raises(MalformedMessageError, match="unknown node 9"):
        core.step(RequestVote(5, 9, 1, 0, 0))
    with pytest.raises(MalformedMessageError):
        core.step(RequestVote(5, 2, 4, 0, 0))
    assert core.term == 0 and core.vote is None and not core.has_ready()
