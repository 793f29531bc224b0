"""Leadership transfer (TimeoutNow) and membership change one server at a time."""

from __future__ import annotations

import pytest

from raft.harness import Cluster
from sentinel.raft.errors import NotLeaderError, ProposalRefusedError
from sentinel.raft.messages import TimeoutNow
from sentinel.raft.state import Role


def test_transfer_hands_over_to_an_up_to_date_target() -> None:
    """Dissertation §3.10: "the prior leader sends its log entries to the target server
    ... the prior leader sends a TimeoutNow request to the target server. This request
    has the same effect as the target server's election timer firing: the target
    server starts a new election"."""
    c = Cluster(3)
    leader = c.elect(1)
    c.cut = {(1, 3)}
    leader.propose(b"a")
    c.drain()
    c.heal()
    leader.transfer_leadership(3)
    with pytest.raises(ProposalRefusedError):
        leader.propose(b"during transfer")
    c.tick([1], 1)
    assert c.nodes[3].role is Role.LEADER and c.nodes[3].term == 2
    assert leader.role is Role.FOLLOWER and leader.leader == 3
    assert any(isinstance(m, TimeoutNow) for m in c.sent)
    assert c.nodes[3].log.log_end == 3  # it kept the old entry and added its no-op


def test_transfer_is_aborted_after_an_election_timeout() -> None:
    """Dissertation §3.10: "if the transfer does not complete within an election
    timeout, the prior leader aborts the transfer and resumes accepting client
    requests"."""
    c = Cluster(3)
    leader = c.elect(1)
    c.isolate(3)
    leader.transfer_leadership(3)
    c.cut = {(1, 3), (3, 1)}
    c.tick([1, 2], c.config.election_ticks)
    assert leader.role is Role.LEADER
    leader.propose(b"again")


def test_remove_then_add_one_server_at_a_time() -> None:
    """Dissertation §4.1: "the new configuration takes effect on each server as soon as
    it is added to that server's log"; changes add or remove a single server, so any
    majority of the old and of the new configuration overlap."""
    c = Cluster(3)
    leader = c.elect(1)
    leader.propose_config(frozenset({1, 2}))
    assert leader.voters == frozenset({1, 2})
    c.drain()
    c.isolate(3)
    e = leader.propose(b"two of two")
    c.drain()
    assert leader.commit == e.end
    with pytest.raises(ProposalRefusedError, match="one server at a time"):
        leader.propose_config(frozenset({1}) | {3, 4})
    c.heal()
    leader.propose_config(frozenset({1, 2, 3}))
    with pytest.raises(ProposalRefusedError, match="not committed"):
        leader.propose_config(frozenset({1, 2}))
    c.tick([1], 2)
    assert c.nodes[3].voters == frozenset({1, 2, 3})
    assert c.nodes[3].log.log_end == leader.log.log_end == leader.commit


def test_removed_leader_steps_down_after_commit() -> None:
    """Dissertation §4.2.2: "the leader steps down ... once the Cnew entry is
    committed"; it does not count itself in the new majority."""
    c = Cluster(3)
    leader = c.elect(1)
    e = leader.propose_config(frozenset({2, 3}))
    c.drain()
    assert leader.commit >= e.end and leader.role is Role.FOLLOWER
    c.tick(n=3 * c.config.election_ticks)
    new = c.leader()
    assert new in (2, 3)
    with pytest.raises(NotLeaderError):
        leader.propose(b"no")
