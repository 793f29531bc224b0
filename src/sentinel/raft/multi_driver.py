"""The asyncio driver of a ``GroupSet``: every Raft group of one broker, one loop.

The many-group sibling of ``node.RaftNode`` (a thin shell; the protocol is in the
sans-IO cores). One task owns the groups: one timer ticks them all
(``GroupSet.tick``), the inputs gathered meanwhile (envelopes from the transport,
proposals' kicks) are stepped as a batch, then the ``MultiReady`` of all groups is
handled together:

    (a) every log with ``must_sync`` made durable in ONE wave of the broker-wide sync
        pipeline (``PartitionLog.sync_all_future``, awaited together: the event loop
        never blocks on an fsync)
    (b) every changed hard state in ONE ``HardStateStore.store_many`` (one write, one
        fsync) in a worker thread
    (c) each such group's high watermark follows its now durable commit
    (d) the envelopes are sent
    (e) committed entries applied (``on_apply``), waiters resolved
    (f) ``advance``

Between a Ready and its advance only ``propose`` touches the cores (what it adds goes
into the next Ready, so nothing is sent before it is persisted). A proposal kicks the
loop, so its AppendEntries leave at once rather than at the next tick.

Log start moves (retention, DeleteRecords): asked with ``request_start`` /
``advance_start`` and done by the loop between two Readies (no hard-state write in
flight): the group's new (start, term) pair stored durably first, then the batches
dropped, then the log synced before anything else moves it (see
``partition_log_adapter``). A committed DeleteRecords entry (noted by the log when
stored) moves each replica's start the same way after the Ready that committed it.

Waiters: ``wait_persisted`` (acks=1: the leader's own log holding the entry is durable)
and ``wait_committed`` (acks=all: the entry was committed with its term). Both fail with
``NotLeaderError`` only when the entry at that offset was replaced (or the group
removed), and with ``ClosedError`` when the driver stops; a commit waiter also with the
error given to ``give_up_commits`` (a stop that cannot wait for the peers any longer). A storage
failure in (a) or (b) stops the whole driver (fail-stop: nothing unpersisted is ever
sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sentinel.errors import (
    ClosedError,
    DamagedDataError,
    NotLeaderError,
    StorageUnavailableError,
)
from sentinel.raft.core import RaftCore
from sentinel.raft.errors import CommitPastLogEndError, MalformedMessageError
from sentinel.raft.hard_state_file import DurableState
from sentinel.raft.hard_state_store import HardStateStore
from sentinel.raft.log import Entry
from sentinel.raft.multi import Envelope, GroupSet, MultiReady
from sentinel.raft.partition_log_adapter import PartitionRaftLog
from sentinel.raft.state import Role
from sentinel.stopping import cancel_and_wait

log = logging.getLogger(__name__)

_Waiter = tuple[Entry, "asyncio.Future[Entry]"]


@dataclass(slots=True)
class _Member:
    core: RaftCore
    log: PartitionRaftLog
    on_apply: Callable[[int, Entry], None] | None
    on_role: Callable[[int], None] | None
    on_commit: Callable[[int], None] | None
    on_reset: Callable[[int, int], None] | None
    seen: tuple[Role, int | None, int]
    durable_end: int  # the log is durable up to here (as of the last sync wave)
    persisted: list[_Waiter] = field(default_factory=list)
    committed: list[_Waiter] = field(default_factory=list)


class MultiRaftDriver:
    def __init__(
        self,
        groups: GroupSet,
        send: Callable[[Envelope], None],
        store: HardStateStore,
        *,
        tick_seconds: float = 0.1,
    ) -> None:
        self.groups = groups
        self._send = send
        self._store = store
        self._tick = tick_seconds
        self._members: dict[int, _Member] = {}
        self._inbox: list[Envelope] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        #: Set when the loop ended on an error (``failure``): the broker must stop.
        self.failed = asyncio.Event()
        self.failure: BaseException | None = None
        self._last_warning = 0.0
        self._quiet = 0  # warnings not logged since the last one
        self.ticks = 0  # for tests and metrics
        self.sent = 0  # envelopes handed to ``send``
        self._elections_gone = 0  # elections started by groups since removed
        self._moves: dict[int, int] = {}  # group -> log start asked (retention, DeleteRecords)
        self._move_waiters: list[tuple[int, asyncio.Future[int]]] = []
        self._moving: set[int] = set()  # groups whose log noted a DeleteRecords entry

    @property
    def id(self) -> int:
        return self.groups.id

    # ------------------------------------------------------------ groups

    def add_group(
        self,
        group: int,
        core: RaftCore,
        log: PartitionRaftLog,
        *,
        on_apply: Callable[[int, Entry], None] | None = None,
        on_role: Callable[[int], None] | None = None,
        on_commit: Callable[[int], None] | None = None,
        on_reset: Callable[[int, int], None] | None = None,
    ) -> None:
        """Drive ``core`` (whose log is ``log``) as ``group``; ids are never reused.
        ``on_commit(group)``: after a Ready that moved the group's commit (and with it
        the high watermark). ``on_reset(group, offset)``: the log was started over at
        the leader's log start ``offset`` (called before the entries committed in the
        same Ready are applied: a state machine learns its state is stale first)."""
        if core.log is not log:
            raise ValueError(f"group {group}: the core's log is not the one given")
        self.groups.add(group, core)
        self._members[group] = _Member(
            core, log, on_apply, on_role, on_commit, on_reset, _seen(core),
            durable_end=log.log_end,
        )

    def remove_group(self, group: int) -> None:
        """Stop driving ``group`` (its waiters fail); its stored hard state stays
        (``HardStateStore.delete`` is the caller's, with the partition's files)."""
        self.groups.remove(group)
        m = self._members.pop(group, None)
        if m is not None:
            self._elections_gone += m.core.elections
            _fail(m, NotLeaderError(f"raft group {group} removed from node {self.id}"))

    @property
    def elections(self) -> int:
        """Elections this node started (became a candidate) in any group, ever since
        the driver started: a counter (removed groups' elections stay counted)."""
        members = list(self._members.values())  # may be read from the metrics thread
        return self._elections_gone + sum(m.core.elections for m in members)

    def core(self, group: int) -> RaftCore:
        return self._member(group).core

    def _member(self, group: int) -> _Member:
        m = self._members.get(group)
        if m is None:
            raise NotLeaderError(f"raft group {group} is not on node {self.id}")
        return m

    # ------------------------------------------------------------ inputs

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"multi-raft-{self.id}")
        self._task.add_done_callback(self._ended)

    async def stop(self) -> None:
        """Stop at once (as a killed process: nothing more is sent); every waiter
        fails with ``ClosedError``."""
        self._stopped = True
        self._wake.set()
        if self._task is not None:
            # a failure was reported when it happened (``failed``), and is logged again
            await cancel_and_wait([self._task], f"multi-raft driver of node {self.id}")
        self._fail_all(ClosedError(f"multi-raft driver of node {self.id} stopped"))

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        assert error is not None
        # Damage, or storage that failed (a full disk): the broker's one line says it.
        if not isinstance(error, DamagedDataError | StorageUnavailableError):
            log.error("multi-raft driver of node %d stopped: %s", self.id, error, exc_info=error)
        self.failure = error
        self.failed.set()
        self._stopped = True
        self._fail_all(ClosedError(f"multi-raft driver of node {self.id} failed: {error}"))

    def deliver(self, envelope: Envelope) -> None:
        """An envelope from the transport; never raises (refusals are logged)."""
        if not self._stopped:
            self._inbox.append(envelope)
            self._wake.set()

    def kick(self, group: int) -> None:
        """Handle ``group``'s Ready now (a caller changed its core directly, e.g. a
        leadership transfer)."""
        self.groups.touch(group)
        self._wake.set()

    def propose(self, group: int, data: bytes, count: int) -> Entry:
        """Append a batch at ``group``'s leader (here); in the log, not yet durable.
        Raises ``NotLeaderError`` (naming the leader if known) when not leading."""
        if self._stopped:
            raise ClosedError(f"multi-raft driver of node {self.id} stopped")
        entry = self._member(group).core.propose(data, count)
        self.groups.touch(group)
        self._wake.set()  # the fast path: the append goes out now, not at the next tick
        return entry

    async def wait_persisted(self, group: int, entry: Entry) -> Entry:
        """Return once this node's log holds ``entry`` durably (acks=1)."""
        m = self._member(group)
        fut = self._future()
        m.persisted.append((entry, fut))
        self._check_persisted(group, m)
        return await fut

    async def wait_committed(self, group: int, entry: Entry) -> Entry:
        """Return once ``entry`` is committed with its term (and applied here)."""
        m = self._member(group)
        fut = self._future()
        m.committed.append((entry, fut))
        if m.core.applied >= entry.end:  # committed before the call
            self._settle_committed(group, m, m.core.applied)
        return await fut

    def commit_waiting(self) -> list[int]:
        """The groups with callers waiting for a commit (``wait_committed``)."""
        return [g for g, m in self._members.items() if any(not f.done() for _, f in m.committed)]

    def give_up_commits(self, group: int, error: Exception) -> int:
        """Fail ``group``'s commit waiters with ``error`` (a stopping broker whose peers
        can no longer commit them: ``ClusterNode``'s stop budget); how many. Their
        entries stay in the log: a later leader may still commit them, so ``error``
        must tell the callers that nothing was acknowledged, not that it was lost (a
        retriable refusal: the client sends again, and the producer's sequence makes a
        re-sent batch that did commit a duplicate answered with its offsets)."""
        m = self._members.get(group)
        if m is None:
            return 0
        waiters, m.committed = m.committed, []
        failed = 0
        for _, fut in waiters:
            if not fut.done():
                fut.set_exception(error)
                failed += 1
        return failed

    def request_start(self, group: int, offset: int) -> None:
        """Ask the loop to move ``group``'s log start toward ``offset`` (retention of this
        replica): at most to its commit and a batch boundary; unknown groups ignored."""
        if self._stopped or group not in self._members:
            return
        self._moves[group] = max(self._moves.get(group, offset), offset)
        self._wake.set()

    async def advance_start(self, group: int, offset: int) -> int:
        """``request_start`` and wait for the move: returns the group's log start."""
        self._member(group)
        if self._stopped:
            raise ClosedError(f"multi-raft driver of node {self.id} stopped")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._move_waiters.append((group, fut))
        self.request_start(group, offset)
        return await fut

    def _future(self) -> asyncio.Future[Entry]:
        if self._stopped:
            raise ClosedError(f"multi-raft driver of node {self.id} stopped")
        return asyncio.get_running_loop().create_future()

    # ------------------------------------------------------------ the loop

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self._tick
        while not self._stopped:
            wait = next_tick - loop.time()
            if not self._wake.is_set() and wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            if self._stopped:
                return
            if loop.time() >= next_tick:
                self.groups.tick()
                self.ticks += 1
                next_tick = max(next_tick + self._tick, loop.time())
            inbox, self._inbox = self._inbox, []
            for env in inbox:
                self._step(env)
            await self._handle_ready()
            if self._moves or self._moving or self._move_waiters:
                await self._move_starts()
            self._notify_roles()

    def _step(self, env: Envelope) -> None:
        try:
            self.groups.step(env)
        except MalformedMessageError as e:
            self._warn(e)
        except CommitPastLogEndError as e:
            member = self._members.get(e.group) if e.group is not None else None
            if member is None:
                raise
            # This replica acknowledged entries its log no longer holds (a WAL tail cut
            # or damaged after a crash): it must not vote or serve on that log.
            plog = member.log.plog
            raise DamagedDataError(
                f"partition {plog.name}: the log in {plog.directory} lost entries this "
                f"broker acknowledged ({e})",
                quarantinable=True,
            ) from e

    def _warn(self, e: Exception) -> None:
        now = time.monotonic()
        if now - self._last_warning < 1.0:
            self._quiet += 1
            return
        more = f" (and {self._quiet} more since the last)" if self._quiet else ""
        log.warning("raft node %d refused a message: %s%s", self.id, e, more)
        self._last_warning, self._quiet = now, 0

    async def _handle_ready(self) -> None:
        gs = self.groups
        while gs.has_ready() and not self._stopped:
            mr = gs.ready()
            await self._persist(mr)
            if self._stopped:  # killed while persisting: nothing more goes out
                return
            for env in mr.envelopes:
                self._send(env)
                self.sent += 1
            for group, rd in mr.groups:
                m = self._members.get(group)
                if m is None:
                    continue
                if rd.log_reset is not None and m.on_reset is not None:
                    m.on_reset(group, rd.log_reset)
                for e in rd.committed:
                    if m.on_apply is not None:
                        m.on_apply(group, e)
                if rd.committed or rd.log_reset is not None or rd.applied > m.core.applied:
                    self._settle_committed(group, m, rd.applied)
                if rd.hard_state is not None and m.on_commit is not None:
                    m.on_commit(group)
                if m.log.has_due_starts:
                    self._moving.add(group)
            gs.advance(mr)

    async def _move_starts(self) -> None:
        """Move the log starts asked for, one group at a time, each durable before the
        next (the hard state keeps only one previous (start, term) pair)."""
        moves, self._moves = self._moves, {}
        moving, self._moving = self._moving, set()
        waiters, self._move_waiters = self._move_waiters, []  # later ones: the next round
        for group in sorted(moves.keys() | moving):
            m = self._members.get(group)
            if m is None or self._stopped:
                continue
            applied = m.core.applied
            wanted = [t for t in (moves.get(group), m.log.due_start(applied)) if t is not None]
            start = m.log.start_point(max(wanted), applied) if wanted else None
            if start is None:
                continue
            state = m.log.start_state(start)
            await asyncio.to_thread(self._store.store_many, {group: state})
            if self._stopped:
                return
            if self._members.get(group) is not m:  # removed meanwhile
                continue
            m.log.stored(state)
            m.log.drop_head(start)
            await asyncio.shield(asyncio.wrap_future(m.log.plog.sync_all_future()))
            log.info("raft group %d on node %d: log start moved to %d", group, self.id, start)
        for group, fut in waiters:
            if fut.done():
                continue
            m = self._members.get(group)
            if m is None:
                fut.set_exception(NotLeaderError(f"raft group {group} removed from node {self.id}"))
            else:
                fut.set_result(m.log.log_start)

    async def _persist(self, mr: MultiReady) -> None:
        """(a) the logs in one sync wave, (b) the hard states in one write, (c) the
        high watermarks."""
        syncing: list[tuple[int, _Member, int]] = []
        waves = []
        for group, rd in mr.groups:
            m = self._members.get(group)
            if m is not None and rd.must_sync:
                # What this Ready appended (after any truncation: the core appends
                # from the truncation point) is not durable until the wave is done.
                low = min((e.base for e in rd.entries), default=m.log.log_end)
                if rd.log_reset is not None:
                    low = min(low, rd.log_reset)
                m.durable_end = min(m.durable_end, low)
                syncing.append((group, m, m.log.log_end))
                # shielded: a stop() must not cancel the pipeline's own future
                waves.append(asyncio.shield(asyncio.wrap_future(m.log.plog.sync_all_future())))
        if waves:
            await asyncio.gather(*waves)
            for group, m, end in syncing:
                m.durable_end = end
                self._check_persisted(group, m)
        states: dict[int, DurableState] = {}
        for group, rd in mr.groups:
            m = self._members.get(group)
            if m is not None and rd.hard_state is not None:
                states[group] = m.log.durable_state(rd.hard_state)
        if states and not self._stopped:
            # A new term or vote must be durable before any message promises it (§5.2);
            # a commit alone need not (Raft's commit index is volatile: after a crash
            # the leader tells it again), so it is written without an fsync.
            promised = any(
                (state.hard.term, state.hard.vote) != (m.log.hard_state.term, m.log.hard_state.vote)
                for group, state in states.items()
                if (m := self._members.get(group)) is not None
            )
            if promised:
                await asyncio.to_thread(self._store.store_many, states)
            else:
                self._store.store_many(states, sync=False)
            for group, state in states.items():
                m = self._members.get(group)
                if m is not None:
                    m.log.stored(state)
                    m.log.follow_commit(state.hard.commit)

    # ------------------------------------------------------------ waiters

    def _check_persisted(self, group: int, m: _Member) -> None:
        keep: list[_Waiter] = []
        for entry, fut in m.persisted:
            if fut.done():
                continue
            if _replaced(m.log, entry):
                fut.set_exception(self._replaced(group, m, entry))
            elif m.durable_end >= entry.end:
                fut.set_result(entry)
            else:
                keep.append((entry, fut))
        m.persisted = keep

    def _settle_committed(self, group: int, m: _Member, applied: int) -> None:
        """Resolve the waiters of entries below ``applied`` (committed and applied):
        the one stored at its offset with its term succeeded, any other was replaced."""
        keep: list[_Waiter] = []
        for entry, fut in m.committed:
            if fut.done():
                continue
            if entry.base >= applied:
                keep.append((entry, fut))
            elif m.log.term_at(entry.base) == entry.term and _starts_at(m.log, entry.base):
                fut.set_result(entry)
            else:
                fut.set_exception(self._replaced(group, m, entry))
        m.committed = keep

    def _replaced(self, group: int, m: _Member, entry: Entry) -> NotLeaderError:
        leader = None if m.core.leader is None else str(m.core.leader)
        return NotLeaderError(
            f"raft group {group} on node {self.id}: the entry at {entry.base} of term "
            f"{entry.term} was replaced",
            leader,
        )

    def _fail_all(self, error: Exception) -> None:
        for m in self._members.values():
            _fail(m, error)
        waiters, self._move_waiters = self._move_waiters, []
        for _, fut in waiters:
            if not fut.done():
                fut.set_exception(error)

    def _notify_roles(self) -> None:
        changed = self.groups.take_changed()  # only these can have changed role
        members = self._members
        if changed is None:
            pairs = list(members.items())
        else:
            pairs = [(g, m) for g in changed if (m := members.get(g)) is not None]
        for group, m in pairs:
            seen = _seen(m.core)
            if seen != m.seen:
                m.seen = seen
                if m.on_role is not None:
                    m.on_role(group)


def _seen(core: RaftCore) -> tuple[Role, int | None, int]:
    return core.role, core.leader, core.term


def _starts_at(log: PartitionRaftLog, base: int) -> bool:
    return log.log_start <= base < log.log_end and log.batch_base(base) == base


def _replaced(log: PartitionRaftLog, entry: Entry) -> bool:
    """The log no longer holds ``entry`` (truncated away, or another batch there)."""
    if entry.base < log.log_start:
        return False  # retention: it was committed, whatever it was
    if log.log_end < entry.end:
        return True
    return log.term_at(entry.base) != entry.term or not _starts_at(log, entry.base)


def _fail(m: _Member, error: Exception) -> None:
    for _, fut in m.persisted:
        if not fut.done():
            fut.set_exception(error)
    for _, fut in m.committed:
        if not fut.done():
            fut.set_exception(error)
    m.persisted.clear()
    m.committed.clear()
