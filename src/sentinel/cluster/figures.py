"""Per-group Raft figures of one broker, read at metrics scrape time.

One ``RaftFigures`` per Raft group this broker is a member of: every replicated
partition it hosts, and the controller's group as topic ``__cluster_metadata``
partition 0 (KRaft's name for its metadata log). Read from the metrics endpoint's
thread while the event loop runs: every collection is copied before it is walked, a
group removed meanwhile is skipped, and nothing is changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sentinel.errors import NotLeaderError
from sentinel.raft.core import RaftCore
from sentinel.raft.multi_driver import MultiRaftDriver
from sentinel.raft.state import Role

METADATA_TOPIC = "__cluster_metadata"

#: ``sentinel_raft_role``'s values.
ROLE_CODES: dict[Role, int] = {
    Role.FOLLOWER: 0,
    Role.PRE_CANDIDATE: 1,
    Role.CANDIDATE: 2,
    Role.LEADER: 3,
}


@dataclass(frozen=True, slots=True)
class RaftFigures:
    topic: str
    partition: int
    role: int  # ROLE_CODES
    term: int
    commit_index: int
    #: At the leader only: (follower node id, log end minus the follower's match).
    follower_lags: tuple[tuple[int, int], ...]


def raft_figures(
    driver: MultiRaftDriver, groups: Iterable[tuple[int, str, int]]
) -> Iterator[RaftFigures]:
    """The figures of each ``(group, topic, partition)`` still driven by ``driver``."""
    for group, topic, partition in groups:
        try:
            core = driver.core(group)
        except NotLeaderError:  # removed since the list was taken
            continue
        yield figures_of(core, topic, partition)


def figures_of(core: RaftCore, topic: str, partition: int) -> RaftFigures:
    lead = core.lead  # read once: the loop may depose it meanwhile
    lags: tuple[tuple[int, int], ...] = ()
    if lead is not None:
        end = core.log.log_end
        lags = tuple(
            sorted((node, max(0, end - pr.match)) for node, pr in list(lead.progress.items()))
        )
    return RaftFigures(topic, partition, ROLE_CODES[core.role], core.term, core.commit, lags)
