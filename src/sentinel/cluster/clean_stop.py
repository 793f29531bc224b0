"""A broker's clean stop in a cluster: how long it waits on its peers, and for what.

A stop (SIGTERM) hands this broker's leadership over (``leadership.hand_off``), then
lets the requests in flight finish before it closes its doors. Both wait on peers: a
hand-off for a follower to take the leadership, a produce with acks=all for a quorum
to store its entry. When the peers stop too (systemd stopping every node, ``docker
compose down``) they never will: a stopping broker refuses leadership, and a broker
that has exited acknowledges nothing. Unbounded, or bounded only by the doors' grace
(``shutdown_grace_s``, 8 s), the last broker standing waited ~10 s to exit.

So every wait on peers at a stop is bounded by one budget, ``STOP_BUDGET_S`` from the
stop's start, and gives up at once when its peers cannot answer: a peer that said it is
stopping (``PeerTransport.leaving``) is never handed leadership, a hand-off to it is
abandoned, and a group whose live voters (this broker and the peers not ``gone``) are
no longer a majority cannot commit, so its commit waiters are answered at once.

Nothing acknowledged is lost by giving up. A waiter given up is answered
NOT_LEADER_OR_FOLLOWER: it was never acknowledged; its entry stays in the Raft log on
disk, and may yet commit under the next leader. The client sends it again, and the
producer's sequence makes a batch that did commit a duplicate answered with its first
offsets (``broker/producer_order``). What was acknowledged was committed: on a
majority's disks, which a stop does not touch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection

from sentinel.errors import NotLeaderError
from sentinel.raft.multi_driver import MultiRaftDriver
from sentinel.raft.quorum import majority

log = logging.getLogger("sentinel.cluster.node")

#: The most a clean stop waits on its peers (the hand-off and the commits in flight
#: together), from the stop's start: a hand-off takes a round trip and a commit a few
#: milliseconds when the peers are up, so this is ample, and short enough that a
#: stopped cluster's brokers exit within a few seconds whatever the peers do.
STOP_BUDGET_S = 2.0
#: How often the commit waiters of a stopping broker are looked at.
CHECK_S = 0.05


def cannot_commit(
    voters: Collection[int], node_id: int, gone: Callable[[int], bool]
) -> bool:
    """Whether a group of ``voters`` can no longer commit anything for a broker
    ``node_id`` that is stopping: its voters that can still answer (itself, and the
    peers not ``gone``) are not a majority (Raft §5.3: an entry commits once stored on
    a majority)."""
    live = sum(1 for v in voters if v == node_id or not gone(v))
    return live < majority(len(voters))


async def bound_commit_waits(
    driver: MultiRaftDriver, gone: Callable[[int], bool], deadline: float
) -> None:
    """Until cancelled (the stop cancels it with the node's tasks): answer the commit
    waiters of every group that can no longer commit (``cannot_commit``) at once, and
    of every group once the loop's clock passes ``deadline``, with a retriable
    NOT_LEADER_OR_FOLLOWER (the module docstring says why nothing is lost)."""
    loop = asyncio.get_running_loop()
    while True:
        late = loop.time() >= deadline
        for group in driver.commit_waiting():
            core = driver.core(group)
            if not late and not cannot_commit(core.voters, driver.id, gone):
                continue
            why = "its stop budget is spent" if late else "too few of its peers are left"
            failed = driver.give_up_commits(group, NotLeaderError(
                f"broker {driver.id} is stopping and {why}: raft group {group}'s entries "
                "in flight are not acknowledged; send them again to the next leader"
            ))
            if failed:
                log.info("stopping: %d commit waiter(s) of raft group %d answered "
                         "NOT_LEADER_OR_FOLLOWER (%s)", failed, group, why)
        await asyncio.sleep(CHECK_S)
