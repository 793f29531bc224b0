"""Roles and their transition table, the hard state, the tunables and ``Ready``.

The transition table (an arrow not in it raises ``IllegalTransitionError``):

    from \\ to       FOLLOWER  PRE_CANDIDATE  CANDIDATE  LEADER
    FOLLOWER          yes        yes            yes        -
    PRE_CANDIDATE     yes        yes            yes        -
    CANDIDATE         yes        yes            yes        yes
    LEADER            yes        -              -          -

A follower or pre-candidate becomes candidate (after winning a pre-vote, on a timeout
without pre-vote, or on TimeoutNow); only a candidate wins an election; a leader only
ever steps down.

The Ready contract (etcd's): the driver
  1. persists the log through ``log_end`` when ``must_sync`` (the entries are already
     in the ``RaftLog``; a ``PartitionLog`` syncs them), then ``hard_state`` if set;
  2. only then sends ``messages`` (a vote or an append response promises what was
     persisted in step 1: §5.2's "current term and vote must be persisted");
  3. applies ``committed`` in order (after a ``log_reset`` the state machine starts
     over at that offset);
  4. calls ``advance(ready)``.
A crash anywhere in 1-3 is safe: what was not persisted was never promised.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sentinel.raft.errors import IllegalTransitionError
from sentinel.raft.log import Entry
from sentinel.raft.messages import Message


class Role(Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


_ALLOWED: dict[Role, frozenset[Role]] = {
    Role.FOLLOWER: frozenset({Role.FOLLOWER, Role.PRE_CANDIDATE, Role.CANDIDATE}),
    Role.PRE_CANDIDATE: frozenset({Role.FOLLOWER, Role.PRE_CANDIDATE, Role.CANDIDATE}),
    Role.CANDIDATE: frozenset(
        {Role.FOLLOWER, Role.PRE_CANDIDATE, Role.CANDIDATE, Role.LEADER}
    ),
    Role.LEADER: frozenset({Role.FOLLOWER}),
}


def check_transition(node: int, old: Role, new: Role) -> None:
    if new not in _ALLOWED[old]:
        raise IllegalTransitionError(f"node {node}: {old.value} cannot become {new.value}")


@dataclass(frozen=True, slots=True)
class HardState:
    """What must survive a crash: the current term, the vote cast in it, the commit."""

    term: int = 0
    vote: int | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Tunables, in ticks. The election timeout is drawn from
    ``[election_ticks, 2 * election_ticks)`` with the injected random source."""

    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_entries_per_message: int = 64
    #: Hand committed entries to the driver in ``Ready.committed`` (a state machine
    #: applies them). False for a partition, whose log *is* its state: ``applied``
    #: then follows the commit without reading anything back.
    deliver_committed: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_ticks < self.election_ticks:
            raise ValueError("need 0 < heartbeat_ticks < election_ticks")
        if self.max_entries_per_message < 1:
            raise ValueError("max_entries_per_message must be at least 1")


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work for the driver; see the module docstring for the order."""

    hard_state: HardState | None
    entries: tuple[Entry, ...]
    must_sync: bool
    messages: tuple[Message, ...]
    committed: tuple[Entry, ...]
    log_reset: int | None
    applied: int
