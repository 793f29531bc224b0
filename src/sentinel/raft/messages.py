"""Raft messages: frozen values, validated on construction.

Offsets, not indices (KIP-595): an entry is a whole record batch covering the offsets
``[base, last]``, and its term is the batch's partition leader epoch. A position in
the log is a *prefix end*: the offset just past a batch (``last + 1``), which is where
the next batch starts. So ``prev_offset`` in ``AppendEntries`` is the base of the first
entry sent (= the end of the prefix the follower must already hold), ``prev_term`` is
the term of the batch that ends at ``prev_offset - 1``, and ``match`` in a response is
a prefix end. ``last_end``/``last_term`` in a vote request are the candidate's log end
and the term of its last batch (§5.4.1's "up-to-date" comparison).

Every message carries ``term``, ``src`` and ``dst``. Heartbeats are separate from
AppendEntries (as in etcd) so that a driver can coalesce the heartbeats of many groups
between two brokers into one message.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentinel.raft.errors import MalformedMessageError
from sentinel.raft.log import Entry


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise MalformedMessageError(what)


@dataclass(frozen=True, slots=True)
class Message:
    term: int
    src: int
    dst: int

    def __post_init__(self) -> None:
        _check(self.term >= 0, f"negative term {self.term} from {self.src}")
        _check(self.src != self.dst, f"message from {self.src} to itself")


@dataclass(frozen=True, slots=True)
class PreVote(Message):
    """§9.6 (dissertation): a would-be candidate asks whether it could win, for the
    term ``term`` (its own term + 1), without disturbing anybody's term."""

    last_end: int
    last_term: int

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        _check(self.last_end >= 0 and self.last_term >= 0, "negative log position")


@dataclass(frozen=True, slots=True)
class PreVoteResponse(Message):
    granted: bool


@dataclass(frozen=True, slots=True)
class RequestVote(Message):
    """§5.2: a candidate asks for a vote. ``transfer`` marks a campaign started by
    TimeoutNow, which voters grant even while they hear from a leader (§3.10)."""

    last_end: int
    last_term: int
    transfer: bool = False

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        _check(self.last_end >= 0 and self.last_term >= 0, "negative log position")


@dataclass(frozen=True, slots=True)
class RequestVoteResponse(Message):
    granted: bool


@dataclass(frozen=True, slots=True)
class AppendEntries(Message):
    """§5.3: entries after the prefix ``prev_offset`` whose last batch has ``prev_term``.
    ``from_log_start``: the leader's log starts at ``prev_offset`` (retention removed
    what was before), so a follower that does not hold that prefix starts its log over
    there."""

    prev_offset: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    from_log_start: bool = False

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        _check(self.prev_offset >= 0 and self.prev_term >= 0, "negative prev position")
        _check(self.commit >= 0, "negative commit")
        at = self.prev_offset
        for e in self.entries:
            _check(e.base == at, f"entry at {e.base} does not follow {at}")
            _check(e.term <= self.term, f"entry term {e.term} above message term")
            at = e.end


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse(Message):
    """``success``: the follower holds the leader's log up to ``match`` (a prefix end).
    A rejection of ``rejected`` (the request's ``prev_offset``) carries the fast-backup
    hints: the follower's ``log_end``, and, when it has a batch at ``rejected - 1``
    with a different term, that ``conflict_term`` and the first offset the follower
    holds of it (``conflict_first``)."""

    success: bool
    match: int = 0
    rejected: int = 0
    log_end: int = 0
    conflict_term: int | None = None
    conflict_first: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """The leader's authority, with ``commit`` no further than the follower's match."""

    commit: int


@dataclass(frozen=True, slots=True)
class HeartbeatResponse(Message):
    pass


@dataclass(frozen=True, slots=True)
class TimeoutNow(Message):
    """§3.10: the leader hands over: the receiver starts an election at once."""
