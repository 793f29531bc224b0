"""The leader's view of one follower (etcd's ``tracker/progress.go``).

``match`` is the longest prefix (a prefix end) known to be on the follower; ``next``
the prefix end the next AppendEntries starts from. Two states:

    PROBE      we do not know where the follower's log matches ours: send one
               AppendEntries, then wait (``paused``) for its answer or the next
               heartbeat; each rejection moves ``next`` back (fast backup).
    REPLICATE  the follower matched: stream entries optimistically, ``next`` moves on
               as soon as they are sent.

    PROBE --(success)--> REPLICATE --(rejection)--> PROBE
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ProgressState(Enum):
    PROBE = "probe"
    REPLICATE = "replicate"


@dataclass(slots=True)
class Progress:
    match: int
    next: int
    state: ProgressState = ProgressState.PROBE
    paused: bool = False
    recent_active: bool = False

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.next = max(self.next, self.match)
        self.paused = False

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = max(self.next, self.match)
        self.paused = False

    def sent(self, end: int) -> None:
        """An AppendEntries up to ``end`` went out."""
        if self.state is ProgressState.REPLICATE:
            self.next = max(self.next, end)
        else:
            self.paused = True

    def acked(self, match: int) -> bool:
        """The follower holds our log up to ``match``; True if that is news."""
        self.paused = False
        if match <= self.match:
            return False
        self.match = match
        self.next = max(self.next, match)
        return True

    def is_stale_rejection(self, rejected: int) -> bool:
        """A rejection of a request we no longer care about (etcd's MaybeDecrTo)."""
        if self.state is ProgressState.REPLICATE:
            return rejected <= self.match
        return rejected != self.next

    def backed_up(self, next_offset: int) -> None:
        """After a rejection: try from ``next_offset`` (never below ``match``)."""
        self.next = max(next_offset, self.match)
        self.become_probe()
