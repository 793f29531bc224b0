"""Many Raft groups of one broker: one tick for all, heartbeats coalesced per broker.

A broker holds a ``RaftCore`` per partition it replicates. ``GroupSet`` (sans-IO, as the
core) ticks every group from the broker's one timer, and bundles what its groups send
to another broker into one ``Envelope`` per destination per round, in which the
heartbeats and heartbeat responses shrink to ``(group, term, commit)`` /
``(group, term)`` triples (Redpanda's heartbeat manager, CockroachDB's coalesced
heartbeats). Heartbeat responses are held until the round after the next tick and ride
in the envelope that carries that tick's heartbeats (a leader learns its followers are
alive at most one tick later; check-quorum counts over a whole election timeout). An
idle cluster of thousands of partitions then exchanges one envelope per broker pair and
direction per tick, not one message per partition.

The idle path builds no message at all (``fast``, the default): a tick hands a
leader's due heartbeats straight to the set as ``Beat``s (``RaftCore.tick(beats)``); a
heartbeat from a follower's known leader that does not move its commit only restarts
its election timer (``RaftCore.quiet_heartbeat``) and the set queues the ``BeatAck``;
an ack from a follower holding the leader's whole log only marks it active
(``RaftCore.quiet_heartbeat_ack``). Anything else takes ``RaftCore.step`` with the
message built. Only the groups that did more than that are looked at by ``ready``
(and reported by ``take_changed``); every ``_RESCAN_TICKS`` ticks all of them are.
``fast=False`` keeps the message path for every input (the reference the equivalence
test compares with).

The Ready contract, for all groups at once (``MultiReady``): the driver persists every
group's Ready (log, then hard state), then sends ``envelopes`` (never the per-group
``Ready.messages``: they are all inside the envelopes), then applies each group's
``committed``, then calls ``advance(multi_ready)``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple

from sentinel.raft.core import RaftCore
from sentinel.raft.errors import CommitPastLogEndError, MalformedMessageError, SafetyViolationError
from sentinel.raft.messages import Heartbeat, HeartbeatResponse, Message
from sentinel.raft.state import Ready


class Beat(NamedTuple):
    """A leader's heartbeat of one group: its term and the commit it lets through.
    (A named tuple, not a dataclass: thousands are built and decoded per second.)"""

    group: int
    term: int
    commit: int


class BeatAck(NamedTuple):
    """A follower's heartbeat response of one group."""

    group: int
    term: int


@dataclass(frozen=True, slots=True)
class Envelope:
    """Everything broker ``src``'s groups send to broker ``dst`` in one round."""

    src: int
    dst: int
    beats: tuple[Beat, ...] = ()
    acks: tuple[BeatAck, ...] = ()
    messages: tuple[tuple[int, Message], ...] = ()

    def __post_init__(self) -> None:
        if self.src == self.dst:
            raise MalformedMessageError(f"envelope from broker {self.src} to itself")
        for group, m in self.messages:
            if (m.src, m.dst) != (self.src, self.dst):
                raise MalformedMessageError(
                    f"group {group}: message {m.src}->{m.dst} in envelope {self.src}->{self.dst}"
                )

    @property
    def size(self) -> int:
        """Group messages carried (a coalesced heartbeat counts one per group)."""
        return len(self.beats) + len(self.acks) + len(self.messages)


@dataclass(frozen=True, slots=True)
class MultiReady:
    groups: tuple[tuple[int, Ready], ...]
    envelopes: tuple[Envelope, ...]


#: A tick looks at every group (a change made to a core and not announced with
#: ``touch`` is seen) at least this often.
_RESCAN_TICKS = 10


class GroupSet:
    """The Raft groups of broker ``node_id`` (every core has ``id == node_id``)."""

    def __init__(self, node_id: int, *, fast: bool = True) -> None:
        self.id = node_id
        self.fast = fast
        self.groups: dict[int, RaftCore] = {}
        self._pending: MultiReady | None = None
        self._held: dict[int, list[BeatAck]] = defaultdict(list)
        self._beats: dict[int, list[Beat]] = defaultdict(list)  # from ticks, not yet sent
        self._ticked = False
        self._ticks = 0
        #: Groups that took an input since the last ``ready`` (None: all of them, after
        #: a tick): only these can have a Ready, so an envelope for a few groups does
        #: not make ``ready`` look at thousands.
        self._touched: set[int] | None = None
        #: The same since the last ``take_changed`` (for the driver's role watch).
        self._changed: set[int] | None = None

    def add(self, group: int, core: RaftCore) -> None:
        if core.id != self.id:
            raise ValueError(f"group {group}: core of node {core.id} in broker {self.id}")
        if group in self.groups:
            raise ValueError(f"group {group} already on broker {self.id}")
        self.groups[group] = core
        self.touch(group)

    def remove(self, group: int) -> None:
        self.groups.pop(group, None)

    def touch(self, group: int) -> None:
        """``group``'s core was changed directly (a proposal, a transfer): look at it in
        the next ``ready``. (A change not announced waits for the next full look.)"""
        if self._touched is not None:
            self._touched.add(group)
        if self._changed is not None:
            self._changed.add(group)

    def _touch_all(self) -> None:
        self._touched = None
        self._changed = None

    def take_changed(self) -> list[int] | None:
        """The groups that took an input, ticked into action or were touched since the
        last call (None: maybe any): only these can have changed role, leader or term."""
        changed = self._changed
        self._changed = set()
        return None if changed is None else list(changed)

    def tick(self) -> None:
        """One tick of the broker's one timer, for every group."""
        self._ticked = True
        self._ticks += 1
        if not self.fast or self._ticks % _RESCAN_TICKS == 0:
            self._touch_all()
        if not self.fast:
            for core in self.groups.values():
                core.tick()
            return
        due: list[tuple[int, int, int]] = []
        beats = self._beats
        for group, core in self.groups.items():
            if core.tick(due):
                self.touch(group)
            if due:
                for dst, term, commit in due:
                    beats[dst].append(Beat(group, term, commit))
                due.clear()

    def _core(self, group: int, src: int) -> RaftCore:
        core = self.groups.get(group)
        if core is None:
            raise MalformedMessageError(
                f"broker {src} names group {group}, not on broker {self.id}"
            )
        return core

    def step(self, env: Envelope) -> None:
        """Deliver an envelope to its groups. A group's own error (a malformed or
        stale message) does not stop the others; the first one is raised at the end."""
        if env.dst != self.id:
            raise MalformedMessageError(f"envelope for broker {env.dst} delivered to {self.id}")
        src = env.src
        first: MalformedMessageError | None = None
        beats, acks = env.beats, env.acks
        if self.fast:
            _check_terms(env)
            groups = self.groups
            held = self._held[src]
            slow_beats = []
            for b in beats:
                core = groups.get(b.group)
                if core is not None and core.quiet_heartbeat(src, b.term, b.commit):
                    held.append(BeatAck(b.group, b.term))
                else:
                    slow_beats.append(b)
            slow_acks = []
            for a in acks:
                core = groups.get(a.group)
                if core is None or not core.quiet_heartbeat_ack(src, a.term):
                    slow_acks.append(a)
            beats, acks = tuple(slow_beats), tuple(slow_acks)
        inputs: list[tuple[int, Message]] = [
            (b.group, Heartbeat(b.term, src, self.id, b.commit)) for b in beats
        ]
        inputs += [(a.group, HeartbeatResponse(a.term, src, self.id)) for a in acks]
        inputs += list(env.messages)
        for group, m in inputs:
            self.touch(group)
            try:
                self._core(group, src).step(m)
            except MalformedMessageError as e:
                first = first or e
            except CommitPastLogEndError as e:
                e.group = group
                raise
        if first is not None:
            raise first

    def _candidates(self) -> list[tuple[int, RaftCore]]:
        if self._touched is None:
            return list(self.groups.items())
        return [(g, c) for g in self._touched if (c := self.groups.get(g)) is not None]

    def has_ready(self) -> bool:
        held = self._ticked and any(self._held.values())
        if held or any(self._beats.values()):
            return True
        return any(core.has_ready() for _, core in self._candidates())

    def ready(self) -> MultiReady:
        groups: list[tuple[int, Ready]] = []
        beats = self._beats
        self._beats = defaultdict(list)
        acks = self._held
        other: dict[int, list[tuple[int, Message]]] = defaultdict(list)
        candidates = self._candidates()
        self._touched = set()
        for group, core in candidates:
            if not core.has_ready():
                continue
            rd = core.ready()
            groups.append((group, rd))
            for m in rd.messages:
                if isinstance(m, Heartbeat):
                    beats[m.dst].append(Beat(group, m.term, m.commit))
                elif isinstance(m, HeartbeatResponse):
                    acks[m.dst].append(BeatAck(group, m.term))
                else:
                    other[m.dst].append((group, m))
        if not self._ticked:  # held for the next tick's envelope
            acks = defaultdict(list)
        else:
            self._held = defaultdict(list)
        self._ticked = False
        dsts = sorted(set(beats) | {d for d, a in acks.items() if a} | set(other))
        envelopes = tuple(
            Envelope(self.id, d, tuple(beats[d]), tuple(acks[d]), tuple(other[d])) for d in dsts
        )
        self._pending = MultiReady(tuple(groups), envelopes)
        return self._pending

    def advance(self, mr: MultiReady) -> None:
        if mr is not self._pending:
            raise SafetyViolationError(
                f"broker {self.id}: advance() of a MultiReady not handed out"
            )
        self._pending = None
        for group, rd in mr.groups:
            core = self.groups.get(group)
            if core is not None:
                core.advance(rd)


def _check_terms(env: Envelope) -> None:
    """Refuse the whole envelope for a negative term, before any group steps, as
    building its messages does on the message path."""
    for b in env.beats:
        if b.term < 0:
            Heartbeat(b.term, env.src, env.dst, b.commit)
    for a in env.acks:
        if a.term < 0:
            HeartbeatResponse(a.term, env.src, env.dst)
