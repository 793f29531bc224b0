"""The Raft log on the real partition log (KIP-595: the log is the partition log).

``PartitionRaftLog`` implements ``RaftLog`` over a ``PartitionLog`` opened with
``auto_high_watermark=False``:

    Raft                      here
    -------------------------------------------------------------------------
    entry                     one whole record batch, as stored (stamped bytes)
    index [base, last]        the batch's offsets
    term                      the batch's partition leader epoch
    prev entry                (offset, epoch) of the batch before
    commit                    the high watermark (``set_high_watermark``)
    hard state                ``hard_state_file`` beside the log (its own fsync)

Appending an ``Entry``:
  * a configuration entry (``voters``) or an empty one (the leader's no-op of its
    term) is written as a control batch of one record, built here and stamped at
    ``(base, term)`` (KRaft writes KRaftVoters / LeaderChange control records);
  * a batch whose header already carries ``(base, term)`` came from a leader: it is
    stored byte for byte (``append_replicated``), so every replica holds the leader's
    bytes;
  * anything else is a producer batch at the leader: ``PartitionLog.append`` validates
    and stamps it with the term as its leader epoch (``append_checked`` when the
    leader's produce path validated it already, announced by ``expect``: one check
    per batch). (The broker passes producer batches with the leader epoch they came
    with, -1 from every Kafka client.)

Durability follows the Ready contract: appends and truncations are written at once
(visible) and made durable by ``persist`` (one WAL sync), then the hard state file.

An index of every batch's base and term is kept in memory (built by one scan at
open), so ``term_at`` and ``batch_base`` never read the engine.

Moving the log start (retention, DeleteRecords, a reset from the leader's log start):
the new (start, term of the batch ending at start - 1) pair is stored durably in the
group's hard state first, the old pair kept beside it as ``prev``; only then does the
partition log drop the batches (made durable before any later move). A crash in
between leaves the old log start, which ``prev`` still knows. Retention moves only
below the commit (the high watermark) and below what was applied
(``start_point`` / ``advance_start``, one replica on its own, as Kafka's replicas
do). DeleteRecords is an entry of the group's own log: a control batch carrying the
new log start (``log_start_batch``); every replica that stores it notes it and moves
its start there once the entry is committed (``due_start``; rebuilt by the scan at
open, so a crash between the commit and the move loses nothing).
A follower whose leader's log starts past everything it holds starts over, empty, at
the leader's log start (``reset`` beyond ``log_end``: ``PartitionLog.restart_at``, as
Kafka's truncateFullyAndStartAt). Not supported yet: key-compacted topics (gaps
between batches).
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Sequence

from sentinel.clock import Clock
from sentinel.errors import DamagedDataError
from sentinel.log.append import Checked
from sentinel.log.leader_epochs import epoch_end_offset
from sentinel.log.partition_log import PartitionLog
from sentinel.raft.errors import SafetyViolationError
from sentinel.raft.hard_state_file import DurableState, StateFile
from sentinel.raft.log import Entry
from sentinel.raft.state import HardState, Ready
from sentinel.record import build_batch, decode_records, parse_header

#: Control record keys (version 0, type): KRaft's LeaderChange and KRaftVoters.
_CONTROL_KEY = struct.Struct(">hh")
LEADER_CHANGE = 2
VOTERS = 6
#: Sentinel's own control record: the log starts at the offset in its value (a
#: DeleteRecords decided at the leader, applied by every replica once committed).
LOG_START = 100
_SCAN_BYTES = 1 << 20


def control_batch(e: Entry, timestamp_ms: int) -> bytes:
    """The control batch for a no-op or configuration entry, stamped at (base, term)."""
    if e.count != 1:
        raise SafetyViolationError(f"a control entry at {e.base} spans {e.count} offsets")
    if e.voters is None:
        key, value = _CONTROL_KEY.pack(0, LEADER_CHANGE), b""
    else:
        key = _CONTROL_KEY.pack(0, VOTERS)
        value = ",".join(str(v) for v in sorted(e.voters)).encode()
    return build_batch(
        [(key, value, (), timestamp_ms)], base_offset=e.base, leader_epoch=e.term,
        is_control=True,
    )


def log_start_batch(offset: int) -> bytes:
    """The control batch of a DeleteRecords to ``offset``, unstamped (the leader's
    ``append`` stamps it at its (base, term))."""
    key = _CONTROL_KEY.pack(0, LOG_START)
    return build_batch([(key, b"%d" % offset, (), 0)], is_control=True)


def log_start_of(batch: bytes | memoryview) -> int | None:
    """The log start a control batch of ``log_start_batch`` carries (None: another)."""
    for r in decode_records(batch):
        key = r.key or b""
        if len(key) == 4 and _CONTROL_KEY.unpack(key)[1] == LOG_START and r.value:
            return int(r.value)
    return None


def _stamped_log_start(target: int, e: Entry, timestamp_ms: int) -> bytes:
    key = _CONTROL_KEY.pack(0, LOG_START)
    return build_batch(
        [(key, b"%d" % target, (), timestamp_ms)], base_offset=e.base, leader_epoch=e.term,
        is_control=True,
    )


def entry_of(batch: bytes) -> Entry:
    """The Raft entry a stored batch is (a control batch's voters decoded)."""
    h = parse_header(batch)
    voters: frozenset[int] | None = None
    if h.is_control:
        for r in decode_records(batch):
            key = r.key or b""
            if len(key) == 4 and _CONTROL_KEY.unpack(key)[1] == VOTERS and r.value:
                voters = frozenset(int(v) for v in r.value.split(b","))
    return Entry(h.base_offset, h.leader_epoch, h.last_offset_delta + 1, batch, voters)


class PartitionRaftLog:
    """A ``RaftLog`` over a ``PartitionLog``, with the group's hard state beside it."""

    def __init__(
        self, plog: PartitionLog, state_file: StateFile, clock: Clock, *, durable: bool = False
    ) -> None:
        """``durable``: the log's every append is synced before it is acknowledged
        (``--sync always``), so a log that ends before the stored commit lost records
        this replica acknowledged: ``DamagedDataError`` (it must not vote on a log it
        lost). Otherwise such a tail is an expected loss of a crash: commit is cut."""
        self.plog = plog
        self._file = state_file
        self._clock = clock
        stored = state_file.load()
        self._durable = stored if stored is not None else DurableState(HardState())
        log_start = plog.log_start_offset
        start_term = self._durable.term_before(log_start)
        if start_term is None:
            raise DamagedDataError(
                f"{state_file.path} does not know the term before log start {log_start}",
                quarantinable=True,
            )
        self._start_term = start_term
        self._bases: list[int] = []
        self._terms: list[int] = []
        #: (end of the entry, log start) of each DeleteRecords entry stored, in order.
        self._starts: list[tuple[int, int]] = []
        self._end = log_start
        #: The batch the leader's produce path is proposing, already validated there.
        self._expected: Checked | None = None
        at = log_start
        while at < plog.log_end_offset:
            result = plog.read(at, _SCAN_BYTES, include_uncommitted=True)
            for b in result.batches:
                h = parse_header(b)
                self._index(h.base_offset, h.leader_epoch, h.next_offset)
                if h.is_control:
                    self._note_start(b, h.next_offset)
            if result.next_offset <= at:
                raise DamagedDataError(f"{plog.name}: a gap at offset {at}", quarantinable=True)
            at = result.next_offset
        if durable and self._durable.hard.commit > self._end:
            raise DamagedDataError(
                f"the log in {plog.directory} ends at offset {self._end} but {state_file.path} "
                f"says offset {self._durable.hard.commit} was committed: committed records "
                "are missing",
                quarantinable=True,
            )
        commit = min(self._durable.hard.commit, self._end)
        plog.set_high_watermark(max(commit, log_start))

    @property
    def hard_state(self) -> HardState:
        """The hard state as of the last ``store_hard_state`` (what survives a crash)."""
        return self._durable.hard

    def _note_start(self, batch: bytes | memoryview, end: int) -> None:
        target = log_start_of(batch)
        if target is not None and target > self.log_start:
            self._starts.append((end, target))

    def _index(self, base: int, term: int, end: int) -> None:
        if base != self._end:
            raise SafetyViolationError(f"{self.plog.name}: batch at {base}, log end {self._end}")
        if self._terms and term < self._terms[-1]:
            raise SafetyViolationError(f"{self.plog.name}: term {term} after {self._terms[-1]}")
        self._bases.append(base)
        self._terms.append(term)
        self._end = end

    # ------------------------------------------------------------ RaftLog

    @property
    def log_start(self) -> int:
        return self.plog.log_start_offset

    @property
    def start_term(self) -> int:
        return self._start_term

    @property
    def log_end(self) -> int:
        return self._end

    @property
    def last_term(self) -> int:
        return self._terms[-1] if self._terms else self._start_term

    def term_at(self, offset: int) -> int | None:
        start = self.log_start
        if offset == start - 1:
            return self._start_term
        if offset < start or offset >= self._end:
            return None
        return self._terms[bisect.bisect_right(self._bases, offset) - 1]

    def batch_base(self, offset: int) -> int:
        if offset < self.log_start or offset >= self._end:
            raise SafetyViolationError(f"offset {offset} outside [{self.log_start}, {self._end})")
        return self._bases[bisect.bisect_right(self._bases, offset) - 1]

    def entries(self, start: int, max_count: int) -> list[Entry]:
        if start == self._end:
            return []
        i = bisect.bisect_left(self._bases, start)
        if i == len(self._bases) or self._bases[i] != start:
            raise SafetyViolationError(f"{start} is not a batch boundary")
        out: list[Entry] = []
        at = start
        while len(out) < max_count and at < self._end:
            result = self.plog.read(at, _SCAN_BYTES, include_uncommitted=True)
            for b in result.batches[: max_count - len(out)]:
                out.append(entry_of(bytes(b)))
            at = result.next_offset
        return out

    def epoch_end_offset(self, requested: int) -> tuple[int, int]:
        """Where leader epoch (term) ``requested`` ends in this log (Kafka's
        OffsetForLeaderEpoch, ``log/leader_epochs``), from the in-memory index."""
        return epoch_end_offset(self._bases, self._terms, self._end, requested)

    def expect(self, checked: Checked | None) -> None:
        """The leader's produce path is about to propose ``checked`` (a batch it has
        validated with ``PartitionLog.check_produce``): its append, which the proposal
        makes at once, skips the second validation. None when the proposal is done."""
        self._expected = checked

    def append(self, entries: Sequence[Entry]) -> None:
        for e in entries:
            if e.base != self._end:
                raise SafetyViolationError(f"append at {e.base}, log end is {self._end}")
            if e.voters is not None or not e.data:
                self.plog.append_replicated(
                    control_batch(e, int(self._clock.wall() * 1000)), wait=False
                )
            else:
                h = parse_header(e.data)
                if h.last_offset_delta + 1 != e.count:
                    raise SafetyViolationError(
                        f"entry at {e.base} spans {e.count} offsets, its batch "
                        f"{h.last_offset_delta + 1}"
                    )
                if h.base_offset == e.base and h.leader_epoch == e.term:
                    self.plog.append_replicated(e.data, wait=False)
                    if h.is_control:
                        self._note_start(e.data, e.end)
                elif h.is_control:  # the leader's DeleteRecords: stamped here
                    target = log_start_of(e.data)
                    if target is None or e.count != 1:
                        raise SafetyViolationError(
                            f"{self.plog.name}: a control entry at {e.base} is not a log start"
                        )
                    wall = int(self._clock.wall() * 1000)
                    self.plog.append_replicated(_stamped_log_start(target, e, wall), wait=False)
                    self._starts.append((e.end, target))
                else:
                    known = self._expected
                    if known is not None and known[0] is e.data:
                        r = self.plog.append_checked([known], leader_epoch=e.term, wait=False)[0]
                    else:
                        r = self.plog.append(e.data, leader_epoch=e.term, wait=False)
                    if r.duplicate or r.base_offset != e.base:
                        raise SafetyViolationError(
                            f"{self.plog.name}: batch for {e.base} stored at {r.base_offset}"
                            f"{' (a duplicate)' if r.duplicate else ''}"
                        )
            self._index(e.base, e.term, e.end)

    def truncate_suffix(self, offset: int) -> None:
        if offset >= self._end:
            return
        i = bisect.bisect_left(self._bases, offset)
        if offset < self.log_start or i == len(self._bases) or self._bases[i] != offset:
            raise SafetyViolationError(f"truncate at {offset}: not a batch boundary")
        self.plog.truncate_suffix(offset)
        del self._bases[i:]
        del self._terms[i:]
        self._end = offset
        self._starts = [(end, t) for end, t in self._starts if end <= offset]

    def reset(self, start: int, start_term: int) -> None:
        """Start over, empty, at ``start`` (the leader's log start, committed). The new
        (start, term) pair is stored before the log moves, the old one kept beside it."""
        if start < self.log_start:
            raise SafetyViolationError(
                f"{self.plog.name}: starting the log over at {start}, below its start "
                f"{self.log_start}"
            )
        d = self._durable
        self._store(DurableState(d.hard, start, start_term, self.log_start, self._start_term))
        # One atomic write drops every batch (ours past ``start`` may be another term's,
        # or split by ``start``): after a crash, the old log or the new empty one.
        self.plog.restart_at(start)
        self._bases.clear()
        self._terms.clear()
        self._starts.clear()
        self._end = start
        self._start_term = start_term

    # ------------------------------------------------------------ log start moves

    def start_point(self, offset: int, applied: int | None = None) -> int | None:
        """Where the log start may move toward ``offset``: the greatest batch boundary
        at or below it, the high watermark (the commit: no uncommitted entry is ever
        removed) and ``applied``; None when that is not past the log start."""
        limit = min(offset, self.plog.high_watermark, self._end)
        if applied is not None:
            limit = min(limit, applied)
        if limit <= self.log_start:
            return None
        if limit < self._end:
            limit = self._bases[bisect.bisect_right(self._bases, limit) - 1]
        return limit if limit > self.log_start else None

    def due_start(self, applied: int) -> int | None:
        """The log start the committed DeleteRecords entries (below ``applied`` and the
        high watermark) ask for, forgetting them; None for none."""
        limit = min(applied, self.plog.high_watermark)
        due = [t for end, t in self._starts if end <= limit]
        if not due:
            return None
        self._starts = [(end, t) for end, t in self._starts if end > limit]
        return max(due)

    @property
    def has_due_starts(self) -> bool:
        return bool(self._starts)

    def start_state(self, start: int) -> DurableState:
        """The durable state that moves the log start to the boundary ``start`` (the
        current pair kept as prev): store it before ``drop_head(start)``."""
        term = self.term_at(start - 1)
        if term is None or start <= self.log_start:
            raise SafetyViolationError(f"{self.plog.name}: no log start move to {start}")
        d = self._durable
        return DurableState(d.hard, start, term, self.log_start, self._start_term)

    def drop_head(self, start: int) -> None:
        """Drop the batches below ``start``, whose pair the stored hard state holds
        (``start_state`` then ``stored``). Durable at the next ``sync``, which must come
        before the next move (the hard state keeps only one previous pair)."""
        if self._durable.start != start:
            raise SafetyViolationError(
                f"{self.plog.name}: log start {start} is not the stored one "
                f"({self._durable.start})"
            )
        self.plog.delete_records(start)
        i = bisect.bisect_left(self._bases, start)
        del self._bases[:i]
        del self._terms[:i]
        self._start_term = self._durable.start_term
        self._starts = [(end, t) for end, t in self._starts if t > start]

    def advance_start(self, offset: int, applied: int | None = None) -> int:
        """Move the log start toward ``offset`` (see ``start_point``), durably and in the
        crash-safe order: the (start, term) pair in the hard state, then the batches
        dropped, then synced. Returns the log start."""
        start = self.start_point(offset, applied)
        if start is not None:
            self._store(self.start_state(start))
            self.drop_head(start)
            self.sync()
        return self.log_start

    # ------------------------------------------------------------ durability

    def sync(self) -> None:
        """Make every append and truncation so far durable (one WAL sync)."""
        self.plog.engine.sync()

    def store_hard_state(self, hard: HardState) -> None:
        """Store the hard state durably; then the high watermark follows the durable
        commit (what consumers may read)."""
        self._store(self.durable_state(hard))
        self.follow_commit(hard.commit)

    def durable_state(self, hard: HardState) -> DurableState:
        """What ``store_hard_state(hard)`` would store (with the log-start pairs): a
        many-group driver stores these for all its groups in one write
        (``HardStateStore.store_many``), then calls ``stored`` and ``follow_commit``."""
        d = self._durable
        return DurableState(hard, d.start, d.start_term, d.prev_start, d.prev_term)

    def stored(self, state: DurableState) -> None:
        """``state`` (from ``durable_state``) was stored durably by the caller."""
        self._durable = state

    def follow_commit(self, commit: int) -> None:
        """The high watermark follows a durable commit (what consumers may read)."""
        self.plog.set_high_watermark(max(self.log_start, min(commit, self._end)))

    def _store(self, state: DurableState) -> None:
        self._file.store(state)
        self._durable = state

    def persist(self, rd: Ready) -> None:
        """Step 1 of the Ready contract: the log, then the hard state."""
        if rd.must_sync:
            self.sync()
        if rd.hard_state is not None:
            self.store_hard_state(rd.hard_state)
