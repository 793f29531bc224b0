"""Incremental fetch sessions (KIP-227): a consumer names its partitions once.

A Fetch v7+ request may open a session (id 0, epoch 0): the broker keeps the
partitions it names, with their fetch offsets and byte limits, and answers with the
session's id. The client's next requests (that id, epochs 1, 2, ...) carry only the
partitions whose offset or limit changed and those to forget; the broker fetches every
partition of the session and answers only those with something new: records, an
error, or a high watermark or log start offset other than the one last answered. A
consumer of thousands of mostly quiet partitions then sends and receives a few
entries per fetch, not thousands. Epoch -1 closes a session; a request with an epoch
other than the one expected is refused ``INVALID_FETCH_SESSION_EPOCH`` and one naming
a session not kept ``FETCH_SESSION_ID_NOT_FOUND``: the client starts a new session.

The broker keeps at most ``max_sessions`` sessions and ``max_partitions`` partitions
over all of them (Kafka's ``max.incremental.fetch.session.cache.slots``: 1,000). A new
session takes the place of one unused for ``evict_after_s`` (Kafka's 120 s), or else of
the smallest session if it is smaller than the new one; with no room it is not kept
(the answer's session id 0: the client goes on with full fetches, which every client
handles). Partitions that returned records move to the end of their session's order,
so that a response's byte limit does not always serve the same partitions first.

Sans-IO: ``FetchSessions.begin`` turns a request into the positions to fetch, and
``FetchSessions.finish`` the outcomes into those to answer.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sentinel.broker.outcomes import FetchOutcome, FetchPosition
from sentinel.protocol.kafka.messages.fetch import FetchRequest

__all__ = [
    "FETCH_SESSION_ID_NOT_FOUND",
    "INVALID_FETCH_SESSION_EPOCH",
    "FetchSessions",
    "FetchStart",
    "positions_of",
]

FETCH_SESSION_ID_NOT_FOUND = 70
INVALID_FETCH_SESSION_EPOCH = 71
INITIAL_EPOCH = 0
FINAL_EPOCH = -1

DEFAULT_MAX_SESSIONS = 1_000
#: Partitions kept over all sessions (each costs ~200 bytes): 200,000 is ~40 MB, twenty
#: consumers of every partition of a 10,000-partition broker.
DEFAULT_MAX_PARTITIONS = 200_000
DEFAULT_EVICT_AFTER_S = 120.0

Key = tuple[str, int]


@dataclass(slots=True)
class _Kept:
    """One partition of a session: where the client fetches (kept as the position to
    fetch: a quiet session's fetch makes none anew), and what it last heard."""

    position: FetchPosition
    high_watermark: int = -1
    log_start_offset: int = -1


@dataclass(slots=True)
class _Session:
    id: int
    #: The epoch the next request must carry.
    epoch: int
    partitions: dict[Key, _Kept]
    used_at: float


@dataclass(frozen=True, slots=True)
class FetchStart:
    """What ``begin`` made of a request: the positions to fetch (empty with an error),
    the session id to answer with, and the error that refuses the request (0: none)."""

    positions: tuple[FetchPosition, ...]
    session_id: int = 0
    error_code: int = 0
    #: An incremental answer names only the partitions with something new.
    incremental: bool = False


@dataclass(slots=True)
class FetchSessions:
    """The broker's fetch sessions (one per Kafka listener)."""

    max_sessions: int = DEFAULT_MAX_SESSIONS
    max_partitions: int = DEFAULT_MAX_PARTITIONS
    evict_after_s: float = DEFAULT_EVICT_AFTER_S
    clock: Callable[[], float] = time.monotonic
    _sessions: dict[int, _Session] = field(default_factory=dict, init=False)
    _partitions: int = field(default=0, init=False)
    _random: random.Random = field(default_factory=random.Random, init=False)

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def partitions(self) -> int:
        """Partitions kept over all sessions."""
        return self._partitions

    def begin(self, request: FetchRequest) -> FetchStart:
        """The positions ``request`` fetches (a v7+ request's session fields; older
        versions carry the defaults, id 0 and epoch -1: no session)."""
        session_id, epoch = request.session_id, request.session_epoch
        if epoch in (INITIAL_EPOCH, FINAL_EPOCH):  # a full request
            if session_id:
                self._remove(session_id)
            positions = positions_of(request)
            if epoch == FINAL_EPOCH:
                return FetchStart(positions)
            session = self._open({(p.topic, p.partition): _Kept(p) for p in positions})
            return FetchStart(positions, session.id if session is not None else 0)
        session = self._sessions.get(session_id)
        if session is None:
            return FetchStart((), 0, FETCH_SESSION_ID_NOT_FOUND)
        if epoch != session.epoch:
            return FetchStart((), 0, INVALID_FETCH_SESSION_EPOCH)
        before = len(session.partitions)
        for key, kept in _named(request).items():
            had = session.partitions.get(key)
            if had is None:
                session.partitions[key] = kept
            else:
                had.position = kept.position
        for key in _forgotten(request):  # after: one both named and forgotten goes, as Kafka
            session.partitions.pop(key, None)
        self._partitions += len(session.partitions) - before
        if self._partitions > self.max_partitions and not self._make_room(
                0, len(session.partitions), keep=session.id):
            # Grown past what the broker keeps: the client starts anew (a new session,
            # or full fetches if that one is too large too).
            self._remove(session.id)
            return FetchStart((), 0, FETCH_SESSION_ID_NOT_FOUND)
        session.epoch = _next_epoch(session.epoch)
        session.used_at = self.clock()
        positions = tuple(k.position for k in session.partitions.values())
        return FetchStart(positions, session.id, incremental=True)

    def finish(self, start: FetchStart,
               outcomes: Sequence[FetchOutcome]) -> tuple[list[FetchOutcome], int]:
        """The outcomes to answer, and the session id to answer with: every outcome of
        a full request; of an incremental one, those with records, an error, or a high
        watermark or log start offset the client has not heard. Records what the client
        heard. A session evicted while its fetch waited is answered with id 0 (closed:
        the client starts anew), and every outcome."""
        session = self._sessions.get(start.session_id) if start.session_id else None
        if session is None:
            return list(outcomes), 0
        answered: list[FetchOutcome] = []
        served: list[Key] = []
        for outcome in outcomes:
            key = (outcome.topic, outcome.partition)
            kept = session.partitions.get(key)
            if kept is None:  # forgotten meanwhile (another request of the session)
                continue
            news = (outcome.error is not None or bool(outcome.chunks)
                    or kept.high_watermark != outcome.high_watermark
                    or kept.log_start_offset != outcome.log_start_offset)
            if outcome.error is None:
                kept.high_watermark = outcome.high_watermark
                kept.log_start_offset = outcome.log_start_offset
            else:  # heard again once it recovers
                kept.high_watermark = kept.log_start_offset = -1
            if news or not start.incremental:
                answered.append(outcome)
            if outcome.chunks:
                served.append(key)
        for key in served:  # to the back of the order: the others are read first next time
            session.partitions[key] = session.partitions.pop(key)
        return answered, session.id

    def _open(self, named: dict[Key, _Kept]) -> _Session | None:
        size = len(named)
        if size > self.max_partitions or not self._make_room(size, size):
            return None
        session_id = self._new_id()
        session = _Session(session_id, _next_epoch(INITIAL_EPOCH), named, self.clock())
        self._sessions[session_id] = session
        self._partitions += size
        return session

    def _make_room(self, adding: int, size: int, keep: int = 0) -> bool:
        """Room for ``adding`` more partitions (a new session when ``keep`` is 0) for a
        session of ``size``: stale sessions evicted first (the longest unused), then
        those smaller than it, the smallest first; never ``keep``. False: no room."""
        def full() -> bool:
            return ((not keep and len(self._sessions) >= self.max_sessions)
                    or self._partitions + adding > self.max_partitions)

        if not full():
            return True
        others = [s for s in self._sessions.values() if s.id != keep]
        stale_before = self.clock() - self.evict_after_s
        for session in sorted(others, key=lambda s: s.used_at):
            if session.used_at > stale_before:
                break
            self._remove(session.id)
            if not full():
                return True
        for session in sorted(others, key=lambda s: len(s.partitions)):
            if len(session.partitions) >= size:
                break
            if session.id in self._sessions:
                self._remove(session.id)
                if not full():
                    return True
        return False

    def _remove(self, session_id: int) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            self._partitions -= len(session.partitions)

    def _new_id(self) -> int:
        while True:
            session_id = self._random.randint(1, 2**31 - 1)
            if session_id not in self._sessions:
                return session_id


def _next_epoch(epoch: int) -> int:
    """Epochs run 1 .. 2**31-1, then wrap to 1 (0 and -1 mean open and close)."""
    return 1 if epoch >= 2**31 - 1 else epoch + 1


def positions_of(request: FetchRequest) -> tuple[FetchPosition, ...]:
    """The positions a request names, in its order."""
    return tuple(FetchPosition(topic.topic, part.partition, part.fetch_offset,
                               part.partition_max_bytes)
                 for topic in request.topics for part in topic.partitions)


def _named(request: FetchRequest) -> dict[Key, _Kept]:
    return {(p.topic, p.partition): _Kept(p) for p in positions_of(request)}


def _forgotten(request: FetchRequest) -> list[Key]:
    return [(topic.topic, p) for topic in request.forgotten_topics_data
            for p in topic.partitions]
