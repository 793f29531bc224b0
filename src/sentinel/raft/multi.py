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

The Ready contract, for all groups at once (``MultiReady``): the driver persists every
group's Ready (log, then hard state), then sends ``envelopes`` (never the per-group
``Ready.messages``: they are all inside the envelopes), then applies each group's
``committed``, then calls ``advance(multi_ready)``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sentinel.raft.core import RaftCore
from sentinel.raft.errors import MalformedMessageError, SafetyViolationError
from sentinel.raft.messages import Heartbeat, HeartbeatResponse, Message
from sentinel.raft.state import Ready


@dataclass(frozen=True, slots=True)
class Beat:
    """A leader's heartbeat of one group: its term and the commit it lets through."""

    group: int
    term: int
    commit: int


@dataclass(frozen=True, slots=True)
class BeatAck:
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


class GroupSet:
    """The Raft groups of broker ``node_id`` (every core has ``id == node_id``)."""

    def __init__(self, node_id: int) -> None:
        self.id = node_id
        self.groups: dict[int, RaftCore] = {}
        self._pending: MultiReady | None = None
        self._held: dict[int, list[BeatAck]] = defaultdict(list)
        self._ticked = False
        #: Groups that took an input since the last ``ready`` (None: all of them, after
        #: a tick): only these can have a Ready, so an envelope for a few groups does
        #: not make ``ready`` look at thousands.
        self._touched: set[int] | None = None

    def add(self, group: int, core: RaftCore) -> None:
        if core.id != self.id:
            raise ValueError(f"group {group}: core of node {core.id} in broker {self.id}")
        if group in self.groups:
            raise ValueError(f"group {group} already on broker {self.id}")
        self.groups[group] = core

    def remove(self, group: int) -> None:
        self.groups.pop(group, None)

    def touch(self, group: int) -> None:
        """``group``'s core was changed directly (a proposal, a transfer): look at it in
        the next ``ready``. (A change not announced waits for the next tick.)"""
        if self._touched is not None:
            self._touched.add(group)

    def tick(self) -> None:
        """One tick of the broker's one timer, for every group."""
        for core in self.groups.values():
            core.tick()
        self._ticked = True
        self._touched = None

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
        first: MalformedMessageError | None = None
        inputs: list[tuple[int, Message]] = [
            (b.group, Heartbeat(b.term, env.src, self.id, b.commit)) for b in env.beats
        ]
        inputs += [(a.group, HeartbeatResponse(a.term, env.src, self.id)) for a in env.acks]
        inputs += list(env.messages)
        for group, m in inputs:
            self.touch(group)
            try:
                self._core(group, env.src).step(m)
            except MalformedMessageError as e:
                first = first or e
        if first is not None:
            raise first

    def _candidates(self) -> list[tuple[int, RaftCore]]:
        if self._touched is None:
            return list(self.groups.items())
        return [(g, c) for g in self._touched if (c := self.groups.get(g)) is not None]

    def has_ready(self) -> bool:
        held = self._ticked and any(self._held.values())
        return held or any(core.has_ready() for _, core in self._candidates())

    def ready(self) -> MultiReady:
        groups: list[tuple[int, Ready]] = []
        beats: dict[int, list[Beat]] = defaultdict(list)
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
