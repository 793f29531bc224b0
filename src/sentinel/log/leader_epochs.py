"""Where a leader epoch ends in a log: Kafka's OffsetForLeaderEpoch (KIP-101, KIP-320).

A consumer that sees a partition's leader epoch move asks the new leader where the
epoch of its position ended, to find out whether the log it read was truncated under it
(a log it read ahead of the new leader's). Kafka's leader answers from its leader-epoch
cache (``LeaderEpochFileCache.endOffsetFor``); ours from the stored batches: every
batch carries its partition leader epoch (a Raft term in a cluster, 0 for a broker
alone), and an epoch starts at the base offset of its first batch.

Given the epochs present, oldest first, and the requested epoch R:

- R undefined (< 0), or no epoch known: (-1, -1);
- R the latest epoch: (R, log end offset);
- R past the latest: (-1, -1);
- otherwise the end of R is the start of the first epoch after it; the epoch answered
  is the newest one at or before R (R itself if none is older).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from sentinel.errors import FencedLeaderEpochError, UnknownLeaderEpochError

__all__ = ["UNDEFINED", "check_current_epoch", "epoch_end_offset"]

UNDEFINED = (-1, -1)


def epoch_end_offset(
    bases: Sequence[int], epochs: Sequence[int], log_end: int, requested: int
) -> tuple[int, int]:
    """(epoch, end offset) for ``requested``; ``bases`` and ``epochs`` are the log's
    batches in offset order (base offset, leader epoch), epochs never decreasing."""
    if requested < 0 or not epochs:
        return UNDEFINED
    latest = epochs[-1]
    if requested == latest:
        return latest, log_end
    after = bisect.bisect_right(epochs, requested)
    if after == len(epochs):
        return UNDEFINED
    return (epochs[after - 1] if after else requested), bases[after]


def check_current_epoch(name: str, current: int, ours: int) -> None:
    """KIP-320's fencing: a request naming the leader epoch it believes current (-1:
    none) is refused if it is older (FENCED_LEADER_EPOCH: refresh the metadata) or
    newer (UNKNOWN_LEADER_EPOCH: this broker has not caught up) than ours."""
    if current < 0 or current == ours:
        return
    if current < ours:
        raise FencedLeaderEpochError(
            f"{name}: leader epoch {current} is older than the current {ours}"
        )
    raise UnknownLeaderEpochError(f"{name}: leader epoch {current} is newer than ours, {ours}")
