"""Majority arithmetic, pure (etcd's ``quorum/majority.go``).

§5.3: "A log entry is committed once the leader that created the entry has replicated
it on a majority of the servers." ``committed`` gives the largest prefix end that a
majority of ``voters`` holds, from each voter's match (a missing voter counts 0).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import Enum


def majority(n: int) -> int:
    """The number of votes that makes a majority of ``n`` voters."""
    return n // 2 + 1


def committed(voters: Collection[int], match: Mapping[int, int]) -> int:
    """The largest value that at least a majority of ``voters`` have reached."""
    if not voters:
        return 0
    ends = sorted((match.get(v, 0) for v in voters), reverse=True)
    return ends[majority(len(voters)) - 1]


class VoteResult(Enum):
    WON = "won"
    LOST = "lost"
    PENDING = "pending"


def vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """WON with a majority of grants, LOST once a majority is out of reach."""
    q = majority(len(voters))
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    if granted >= q:
        return VoteResult.WON
    if len(voters) - rejected < q:
        return VoteResult.LOST
    return VoteResult.PENDING
