"""Raft's errors, placed in Sentinel's error tree (they name who is wrong)."""

from __future__ import annotations

from sentinel.errors import CallerError, NotLeaderError, PeerError, StateError

__all__ = [
    "CommitPastLogEndError",
    "IllegalTransitionError",
    "MalformedMessageError",
    "NotLeaderError",
    "ProposalRefusedError",
    "SafetyViolationError",
]


class MalformedMessageError(PeerError):
    """A Raft message from a peer is not well formed (negative term, bad offsets)."""


class IllegalTransitionError(StateError):
    """The caller asked for a role change the transition table does not allow."""


class ProposalRefusedError(CallerError):
    """The leader cannot take this proposal now (a transfer or a config change is
    in flight, or the change is not one server at a time)."""


class SafetyViolationError(StateError):
    """The core was asked to do something that would break a Raft invariant
    (truncate a committed entry, append out of place): a bug in the caller or
    the storage, never a peer's fault."""


class CommitPastLogEndError(SafetyViolationError):
    """The leader says an entry is committed that this replica's log no longer holds
    although it acknowledged it: its storage lost acknowledged entries (a damaged or
    cut log). ``group`` is set by ``GroupSet.step`` when known."""

    group: int | None = None
