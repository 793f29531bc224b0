"""Where this broker's Raft groups hand their leadership: at a clean stop, back to a
partition's preferred replica, and step by step through a replica move.

Functions over the driver and the controller's image, called by the cluster node's
loops: ``hand_off`` (a clean stop: every led group to its most caught-up follower),
``balance`` (leaders spread as placement intended), ``reassign_step`` (the next
membership change of each move this broker leads, ``cluster/reassignment``'s plan).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Container, Iterable, Mapping

from sentinel.broker.replicated_partition import ReplicatedPartition
from sentinel.cluster.controller_reports import ControllerReports
from sentinel.cluster.metadata import MetadataImage
from sentinel.cluster.reassignment import Action, next_step
from sentinel.raft.errors import ProposalRefusedError
from sentinel.raft.multi_driver import MultiRaftDriver

log = logging.getLogger("sentinel.cluster.node")  # the name these lines always had


async def hand_off(
    driver: MultiRaftDriver,
    groups: Iterable[int],
    timeout: float,
    leaving: Callable[[int], bool] = lambda peer: False,
) -> int:
    """Every one of ``groups`` this broker leads is handed to its most caught-up
    follower (Raft §3.10), so clients find a new leader at once instead of after an
    election timeout. Returns how many groups moved within ``timeout``.

    ``leaving(peer)``: that peer is stopping too, or gone. It is never chosen (a
    stopping broker refuses the leadership, ``ClusterNode._deliver``), and a hand-off
    under way to it is abandoned as soon as that is known, as is one the core gave up
    (§3.10: after an election timeout): the wait is for the hand-offs that can still
    complete, not for ``timeout``. When every broker of a cluster stops at once, none
    can take the leadership and the stop goes on at once; the groups are left as they
    are (their logs are on disk, and the next election picks a leader)."""
    moving = []
    for group in groups:
        core = driver.core(group)
        lead = core.lead
        if lead is None or lead.transfer_target is not None:
            continue
        candidates = [(v, pr) for v, pr in lead.progress.items() if not leaving(v)]
        if not candidates:
            continue
        target, _ = max(candidates, key=lambda item: (item[1].recent_active, item[1].match))
        try:
            core.transfer_leadership(target)
        except ProposalRefusedError:
            continue
        driver.kick(group)
        moving.append(group)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline and any(
        _still_moving(driver, g, leaving) for g in moving
    ):
        await asyncio.sleep(HAND_OFF_CHECK_S)
    moved = sum(1 for g in moving if driver.core(g).lead is None)
    if moving:
        log.info("handed %d of %d led groups to other brokers", moved, len(moving))
    return moved


#: How often ``hand_off`` looks whether its hand-offs completed (or can no longer).
HAND_OFF_CHECK_S = 0.02


def _still_moving(driver: MultiRaftDriver, group: int, leaving: Callable[[int], bool]) -> bool:
    """Whether ``group``'s hand-off is still under way and may yet complete: this
    broker leads it, with a transfer in flight to a peer that is not leaving."""
    lead = driver.core(group).lead
    return (
        lead is not None
        and lead.transfer_target is not None
        and not leaving(lead.transfer_target)
    )


def reassign_step(
    driver: MultiRaftDriver,
    image: MetadataImage,
    hosted: Container[int],
    reports: ControllerReports,
) -> None:
    """One step of each move led here (``cluster/reassignment``): add a target
    broker, remove one no longer wanted, hand leadership over, or report the move
    done through the controller."""
    for group, target in list(image.reassignments.items()):
        if group not in hosted:
            continue
        core = driver.core(group)
        step = next_step(core, target)
        if step.action is Action.WAIT:
            continue
        if step.action is Action.DONE:
            if not reports.reporting_move(group):
                reports.move_done(group, target)
            continue
        assert step.node is not None
        if step.action is Action.TRANSFER:
            log.info("group %d: leadership to broker %d before this one leaves it",
                     group, step.node)
            core.transfer_leadership(step.node)
        else:
            voters = core.voters | {step.node} if step.action is Action.ADD else (
                core.voters - {step.node}
            )
            log.info("group %d: voters %s -> %s (target %s)", group,
                     sorted(core.voters), sorted(voters), list(target))
            core.propose_config(frozenset(voters))
        driver.kick(group)


def balance(
    driver: MultiRaftDriver,
    image: MetadataImage,
    hosted: Mapping[int, ReplicatedPartition],
    node_id: int,
    leaving: Callable[[int], bool] = lambda peer: False,
) -> int:
    """Hand each partition this broker leads (of ``hosted``) back to its preferred
    replica (the first of its replicas) once that one is caught up, unless a move is
    under way or that replica is ``leaving`` (it would refuse the leadership, and the
    transfer would refuse proposals meanwhile); returns how many it handed."""
    moved = 0
    for group, part in list(hosted.items()):
        assignment = image.assignment_at(part.topic, part.index)
        if assignment is None or image.target_of(group) is not None:
            continue  # a move under way places the leader itself
        preferred = assignment.replicas[0]
        core = driver.core(group)
        lead = core.lead
        if (
            lead is None
            or preferred == node_id
            or lead.transfer_target is not None
            or leaving(preferred)
        ):
            continue
        progress = lead.progress.get(preferred)
        if progress is None or not progress.recent_active:
            continue
        if progress.match == core.log.log_end:
            core.transfer_leadership(preferred)
            driver.kick(group)
            moved += 1
    return moved
