"""Moving a partition's replicas (Kafka's AlterPartitionReassignments) by Raft
membership change, one server at a time (Raft dissertation §4.1-4.2).

The controller records the target (``ReassignPartition``); every target broker starts
the partition's Raft group as a non-voter (``ClusterNode``). The group's leader then
calls ``next_step`` periodically and does what it says:

1. While a target broker is not a voter: add it (``propose_config(voters | {b})``),
   one at a time, each only once the previous configuration entry is committed and
   every target voter has every committed entry (``_caught_up``): a new replica is
   never counted on before it holds the log.
2. Then, while a voter is not in the target: remove it, the others first. A leader
   that must go hands its leadership to a caught-up target voter first (§3.10); the
   new leader removes it. (Were it to remove itself, the core steps it down once the
   entry commits, §4.2.2.)
3. Voters == target, committed: report ``PartitionReplicas`` to the controller.

Safe under failure because every step is decided from the Raft log alone (the latest
configuration in it, committed or not, and only with the previous one committed), never
from memory: a leader that dies mid-way leaves a log whose newest configuration any new
leader sees and continues from (the step is idempotent: it compares that configuration
with the target). One change at a time keeps every two successive majorities
overlapping; no replica's data is deleted before ``PartitionReplicas`` is committed, and
that is only reported once the target configuration itself is committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sentinel.raft.core import RaftCore


class Action(Enum):
    WAIT = "wait"  # not the leader, or a change (or catch-up) is under way
    ADD = "add"
    REMOVE = "remove"
    TRANSFER = "transfer"  # hand leadership to ``node`` (this leader must go)
    DONE = "done"  # voters == target, committed: report PartitionReplicas


@dataclass(frozen=True, slots=True)
class Step:
    action: Action
    node: int | None = None
    why: str = ""


def next_step(core: RaftCore, target: tuple[int, ...]) -> Step:
    """What the leader of ``core``'s group does next to make its voters ``target``
    (in ``target``'s order: the first missing broker is added first)."""
    lead = core.lead
    if lead is None:
        return Step(Action.WAIT, why="not the leader")
    if lead.transfer_target is not None:
        return Step(Action.WAIT, why="a leadership transfer is under way")
    if core.config_offset >= core.commit:
        return Step(Action.WAIT, why="the last configuration change is not committed")
    if core.commit == 0 or core.log.term_at(core.commit - 1) != core.term:
        return Step(Action.WAIT, why="no entry of this term is committed yet")
    voters, wanted = core.voters, frozenset(target)
    lagging = [v for v in sorted(voters & wanted) if not _caught_up(core, v)]
    if lagging:
        return Step(Action.WAIT, lagging[0], "a target replica is catching up")
    missing = [b for b in target if b not in voters]
    if missing:
        return Step(Action.ADD, missing[0])
    extra = sorted(voters - wanted)
    others = [v for v in extra if v != core.id]
    if others:
        return Step(Action.REMOVE, others[0])
    if extra:  # only this leader is left to go: hand over first
        heir = max(
            (v for v in target if v != core.id),
            key=lambda v: lead.progress[v].match,
        )
        return Step(Action.TRANSFER, heir)
    return Step(Action.DONE)


def _caught_up(core: RaftCore, node: int) -> bool:
    if node == core.id:
        return True
    lead = core.lead
    assert lead is not None
    progress = lead.progress.get(node)
    return progress is not None and progress.recent_active and progress.match >= core.commit
