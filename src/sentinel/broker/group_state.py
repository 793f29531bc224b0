"""The states of a consumer group and the only ways between them.

A group moves as Kafka's classic group coordinator moves it::

    Empty --member joins--> PreparingRebalance --join phase ends--> CompletingRebalance
      ^                       |       ^    ^                          |        |
      +--join phase ends,-----+       |    +--member joins, leaves,---+        | assignment
         nobody left                  |       expires, subscription or         | arrives
                                      |       partitions change                v
                                      +------------ the same --------------- Stable

    Empty --deleted--> Dead          any state but Dead --unloaded--> Dead

``TRANSITIONS`` below is the same picture as data, and it is the only source of truth:
a group changes state only through ``next_state``, and a pair not in the table raises
``IllegalTransitionError``. Dead is terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from types import MappingProxyType
from typing import Final

from sentinel.errors import StateError


class GroupState(Enum):
    """The value is Kafka's name for the state (DescribeGroups, ListGroups)."""

    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


class Trigger(Enum):
    """Why a group changes state."""

    REBALANCE = "rebalance"
    """A member joined, left, expired or changed its subscription, or the partitions of a
    subscribed topic changed: every member must rejoin."""
    JOINED = "joined"
    """The join phase ended (all members rejoined, or the rebalance timeout passed) and
    members remain: a new generation begins and waits for its assignment."""
    EMPTIED = "emptied"
    """The join phase ended and no member remains."""
    ASSIGNED = "assigned"
    """The assignment arrived: the leader's SyncGroup, or the coordinator's own."""
    DELETED = "deleted"
    """DeleteGroups, or the coordinator reaped an empty group that holds no offsets."""
    UNLOADED = "unloaded"
    """This coordinator gave the group up (it no longer owns it)."""


_E = GroupState.EMPTY
_P = GroupState.PREPARING_REBALANCE
_C = GroupState.COMPLETING_REBALANCE
_S = GroupState.STABLE
_D = GroupState.DEAD

TRANSITIONS: Final[Mapping[tuple[GroupState, Trigger], GroupState]] = MappingProxyType(
    {
        (_E, Trigger.REBALANCE): _P,  # the first member joins
        (_E, Trigger.DELETED): _D,
        (_E, Trigger.UNLOADED): _D,
        (_P, Trigger.JOINED): _C,  # generation + 1; members get their JoinGroup response
        (_P, Trigger.EMPTIED): _E,  # generation + 1; nobody left
        (_P, Trigger.UNLOADED): _D,
        (_C, Trigger.ASSIGNED): _S,  # members get their SyncGroup response
        (_C, Trigger.REBALANCE): _P,  # pending SyncGroups fail with REBALANCE_IN_PROGRESS
        (_C, Trigger.UNLOADED): _D,
        (_S, Trigger.REBALANCE): _P,
        (_S, Trigger.UNLOADED): _D,
    }
)


class IllegalTransitionError(StateError):
    """A group was asked to move along an edge that is not in ``TRANSITIONS``.

    The coordinator never asks for one; seeing this means a bug in the coordinator.
    """

    def __init__(self, state: GroupState, trigger: Trigger) -> None:
        super().__init__(f"no transition from {state.value} on {trigger.value}")
        self.state = state
        self.trigger = trigger


def next_state(state: GroupState, trigger: Trigger) -> GroupState:
    """The state ``trigger`` moves a group in ``state`` to; raises if there is none."""
    try:
        return TRANSITIONS[state, trigger]
    except KeyError:
        raise IllegalTransitionError(state, trigger) from None


def is_legal(old: GroupState, new: GroupState) -> bool:
    """Whether some trigger moves a group from ``old`` to ``new``."""
    return any(o is old and n is new for (o, _), n in TRANSITIONS.items())
