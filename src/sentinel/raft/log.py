"""The Raft log: what the core needs from storage, and an in-memory implementation.

The log is the partition log itself (KIP-595): an entry is one whole record batch,
its *index* is the batch's offsets ``[base, last]`` and its *term* is the batch's
partition leader epoch. We chose to identify positions by **prefix ends** (the offset
just past a batch, ``Entry.end``), so every Raft index of the paper maps as follows:

    paper                         here
    -----------------------------------------------------------------------
    log entry i                   batch with base b, last l (b <= l)
    lastLogIndex                  log_end (next offset to write)
    lastLogTerm                   last_term (term of the batch ending at log_end - 1)
    prevLogIndex / prevLogTerm    prev_offset (= base of the first entry sent) /
                                  term_at(prev_offset - 1)
    matchIndex, nextIndex         prefix ends (batch boundaries)
    commitIndex                   commit: a prefix end, exclusive (Kafka's high watermark)

    offsets:  ... | b0 ......... l0 | b1 ... l1 | b2 ....... l2 |  (log_end = l2 + 1)
                  ^ boundary        ^ boundary  ^ boundary      ^ boundary

Because a leader creates each batch exactly once, two batches with the same term that
hold a common offset are the same batch; so comparing ``term_at(offset)`` is enough
for the log-matching check, and batch boundaries agree wherever terms agree.

``log_start`` is the first offset kept (retention removes whole batches before it);
``start_term`` is the term of the batch that ended at ``log_start - 1`` (0 for none),
kept so that an AppendEntries right after the start can still be checked.

Durability: ``append`` and ``truncate_suffix`` change the log at once (visible), and
are durable only once the driver persists the ``Ready`` that reported them (a
``PartitionLog`` with ``wait=False`` and ``sync_to``). The core never assumes more.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sentinel.raft.errors import SafetyViolationError


@dataclass(frozen=True, slots=True)
class Entry:
    """One record batch: ``count`` offsets from ``base``. ``voters`` is set on a
    configuration entry (the whole new voter set, one server added or removed)."""

    base: int
    term: int
    count: int = 1
    data: bytes = b""
    voters: frozenset[int] | None = None

    def __post_init__(self) -> None:
        if self.base < 0 or self.term < 0 or self.count < 1:
            raise SafetyViolationError(
                f"entry at {self.base} term {self.term} count {self.count} is not valid"
            )

    @property
    def last(self) -> int:
        return self.base + self.count - 1

    @property
    def end(self) -> int:
        return self.base + self.count

    def at(self, base: int, term: int) -> Entry:
        """The same payload placed at ``base`` in ``term`` (the leader stamping it)."""
        return Entry(base, term, self.count, self.data, self.voters)


class RaftLog(Protocol):
    """The storage protocol the core drives. Offsets are validated by the core; an
    implementation raises ``SafetyViolationError`` for a call out of place."""

    @property
    def log_start(self) -> int: ...

    @property
    def start_term(self) -> int: ...

    @property
    def log_end(self) -> int: ...

    @property
    def last_term(self) -> int: ...

    def term_at(self, offset: int) -> int | None:
        """Term of the batch holding ``offset``; ``start_term`` for ``log_start - 1``;
        None outside ``[log_start - 1, log_end)``."""

    def batch_base(self, offset: int) -> int:
        """Base of the batch holding ``offset`` (``log_start <= offset < log_end``)."""

    def entries(self, start: int, max_count: int) -> list[Entry]:
        """Up to ``max_count`` batches from the one whose base is ``start``."""

    def append(self, entries: Sequence[Entry]) -> None:
        """Add batches at the log end (the first one's base is ``log_end``)."""

    def truncate_suffix(self, offset: int) -> None:
        """Remove every batch from the boundary ``offset`` on."""

    def reset(self, start: int, start_term: int) -> None:
        """Drop everything; the log starts over, empty, at ``start``."""


class MemoryLog:
    """A ``RaftLog`` in a list, with ``bisect`` over the bases."""

    def __init__(self, start: int = 0, start_term: int = 0) -> None:
        self._start = start
        self._start_term = start_term
        self._entries: list[Entry] = []
        self._bases: list[int] = []

    @property
    def log_start(self) -> int:
        return self._start

    @property
    def start_term(self) -> int:
        return self._start_term

    @property
    def log_end(self) -> int:
        return self._entries[-1].end if self._entries else self._start

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self._start_term

    def all_entries(self) -> list[Entry]:
        return list(self._entries)

    def _find(self, offset: int) -> int:
        return bisect.bisect_right(self._bases, offset) - 1

    def term_at(self, offset: int) -> int | None:
        if offset == self._start - 1:
            return self._start_term
        if offset < self._start or offset >= self.log_end:
            return None
        return self._entries[self._find(offset)].term

    def batch_base(self, offset: int) -> int:
        if offset < self._start or offset >= self.log_end:
            raise SafetyViolationError(f"offset {offset} outside [{self._start}, {self.log_end})")
        return self._bases[self._find(offset)]

    def entries(self, start: int, max_count: int) -> list[Entry]:
        if start == self.log_end:
            return []
        i = self._find(start)
        if i < 0 or self._bases[i] != start:
            raise SafetyViolationError(f"{start} is not a batch boundary")
        return self._entries[i : i + max_count]

    def append(self, entries: Sequence[Entry]) -> None:
        for e in entries:
            if e.base != self.log_end:
                raise SafetyViolationError(f"append at {e.base}, log end is {self.log_end}")
            self._entries.append(e)
            self._bases.append(e.base)

    def truncate_suffix(self, offset: int) -> None:
        if offset >= self.log_end:
            return
        i = self._find(offset)
        if offset < self._start or self._bases[i] != offset:
            raise SafetyViolationError(f"truncate at {offset}: not a batch boundary")
        del self._entries[i:]
        del self._bases[i:]

    def reset(self, start: int, start_term: int) -> None:
        self._entries.clear()
        self._bases.clear()
        self._start, self._start_term = start, start_term

    def trim_prefix(self, offset: int) -> None:
        """Retention: drop the batches that end at or before the boundary ``offset``."""
        i = self._find(offset - 1) + 1 if offset > self._start else 0
        if i == 0:
            return
        self._start_term = self._entries[i - 1].term
        self._start = self._entries[i - 1].end
        del self._entries[:i]
        del self._bases[:i]
