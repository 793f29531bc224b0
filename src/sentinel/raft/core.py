"""The Raft node: ``step`` / ``tick`` / ``propose`` in, ``Ready`` out (sans-IO).

Term rules first (§5.1: "If a server receives a request with a stale term number, it
rejects the request"; "if one server's current term is smaller than the other's, then
it updates its current term"), with etcd's two exceptions: a vote request arriving
while this node hears from a leader (check-quorum lease, §9.6 of the dissertation) is
ignored unless it comes from a leadership transfer; and a PreVote never changes
anybody's term. Then the message goes to the handler of the node's role; the leader's
replication, commit, transfer and membership are in ``leader``.

Configuration (§4.1 of the dissertation): a server uses the latest configuration in
its log, committed or not; one server is added or removed at a time.
"""

from __future__ import annotations

import random

from sentinel.raft.errors import (
    CommitPastLogEndError,
    MalformedMessageError,
    NotLeaderError,
    SafetyViolationError,
)
from sentinel.raft.leader import Leadership
from sentinel.raft.log import Entry, RaftLog
from sentinel.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    PreVote,
    PreVoteResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from sentinel.raft.quorum import VoteResult, vote_result
from sentinel.raft.state import HardState, RaftConfig, Ready, Role, check_transition

_SCAN = 1 << 30


class RaftCore:
    def __init__(
        self,
        node_id: int,
        voters: frozenset[int],
        log: RaftLog,
        rng: random.Random,
        *,
        hard_state: HardState | None = None,
        applied: int | None = None,
        config: RaftConfig | None = None,
    ) -> None:
        hs = hard_state or HardState()
        self.id = node_id
        self.log = log
        self.cfg = config or RaftConfig()
        self._rng = rng
        self.term, self.vote = hs.term, hs.vote
        self.commit = max(hs.commit, log.log_start)
        if self.commit > log.log_end:
            raise SafetyViolationError(f"node {node_id}: commit {self.commit} past log end")
        self.applied = max(log.log_start, applied if applied is not None else 0)
        self.applied = min(self.applied, self.commit)
        self._configs: list[tuple[int, frozenset[int]]] = [(-1, frozenset(voters))]
        self._known: frozenset[int] | None = None  # every voter of any configuration
        for e in log.entries(log.log_start, _SCAN):
            self._note_config(e)
        self.role = Role.FOLLOWER
        self.leader: int | None = None
        self.lead: Leadership | None = None
        self.election_elapsed = 0
        self.timeout = 0
        self.elections = 0  # times this node became a candidate (metrics)
        self._votes: dict[int, bool] = {}
        self._msgs: list[Message] = []
        self._persisted = HardState(self.term, self.vote, self.commit)
        self._new_entries: list[Entry] = []
        self._dirty = False
        self._reset_at: int | None = None
        self._pending: Ready | None = None
        self._randomize()

    # ------------------------------------------------------------ properties

    @property
    def voters(self) -> frozenset[int]:
        return self._configs[-1][1]

    @property
    def config_offset(self) -> int:
        """Base of the newest configuration entry (-1: the bootstrap one)."""
        return self._configs[-1][0]

    @property
    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.commit)

    def known(self, node: int) -> bool:
        known = self._known
        if known is None:  # recomputed after a configuration change
            known = self._known = frozenset().union(*(v for _, v in self._configs))
        return node in known

    # ------------------------------------------------------------ inputs

    def tick(self, beats: list[tuple[int, int, int]] | None = None) -> bool:
        """One unit of the outside clock. ``beats``: a leader whose term is persisted
        puts the heartbeats due as ``(dst, term, commit)`` there instead of queueing
        ``Heartbeat`` messages (a ``GroupSet`` coalesces them). True when the tick did
        more than count (a message queued, a role changed): the node may have a Ready."""
        lead = self.lead
        if lead is not None:
            if self._persisted.term != self.term:
                beats = None  # a heartbeat must not promise an unpersisted term
            queued = len(self._msgs)
            lead.tick(beats)
            return self.lead is not lead or len(self._msgs) != queued
        self.election_elapsed += 1
        if self.election_elapsed >= self.timeout and self.id in self.voters:
            self.election_elapsed = 0
            self.campaign(pre=self.cfg.pre_vote)
            return True
        return False

    def quiet_heartbeat(self, src: int, term: int, commit: int) -> bool:
        """The common idle input, without building messages: a heartbeat from the
        known leader of our current (persisted) term whose commit does not move ours.
        Then it does what ``step(Heartbeat(term, src, self.id, commit))`` does (the
        election timer starts over) except queueing the ``HeartbeatResponse``, which the
        caller sends instead (coalesced), and returns True. Otherwise nothing is done
        and it returns False: take ``step``."""
        if (
            term != self.term
            or src != self.leader
            or self.role is not Role.FOLLOWER
            or commit > self.commit
            or self._persisted.term != term
            or not self.known(src)
        ):
            return False
        self.election_elapsed = 0
        return True

    def quiet_heartbeat_ack(self, src: int, term: int) -> bool:
        """The leader's half: a heartbeat response of our term from a follower that
        holds our whole log. Does what ``step(HeartbeatResponse(term, src, self.id))``
        does (no message follows it) and returns True; otherwise does nothing and
        returns False."""
        lead = self.lead
        if lead is None or term != self.term:
            return False
        pr = lead.progress.get(src)
        if pr is None or pr.match < self.log.log_end:
            return False
        pr.recent_active = True
        pr.paused = False
        return True

    def propose(self, data: bytes, count: int = 1) -> Entry:
        """Append a batch of ``count`` offsets at the leader; returns it (offsets, term)."""
        return self._leadership().propose(Entry(0, 0, count, data))

    def propose_config(self, voters: frozenset[int]) -> Entry:
        """Add or remove exactly one voter (§4.1); refused while a change is pending."""
        return self._leadership().propose_config(voters)

    def transfer_leadership(self, target: int) -> None:
        """§3.10: catch ``target`` up, then tell it to campaign now (TimeoutNow)."""
        self._leadership().transfer(target)

    def _leadership(self) -> Leadership:
        if self.lead is None:
            leader = None if self.leader is None else str(self.leader)
            raise NotLeaderError(f"node {self.id} is not the leader", leader)
        return self.lead

    def step(self, m: Message) -> None:
        if m.dst != self.id:
            raise MalformedMessageError(f"message for {m.dst} delivered to {self.id}")
        if not self.known(m.src):
            raise MalformedMessageError(f"message from unknown node {m.src} to {self.id}")
        if m.term > self.term:
            if isinstance(m, PreVote | RequestVote):
                forced = isinstance(m, RequestVote) and m.transfer
                in_lease = (
                    self.cfg.check_quorum
                    and self.leader is not None
                    and self.election_elapsed < self.cfg.election_ticks
                )
                if in_lease and not forced:
                    return
            if isinstance(m, PreVote) or (isinstance(m, PreVoteResponse) and m.granted):
                pass
            else:
                lead = m.src if isinstance(m, AppendEntries | Heartbeat) else None
                self.become_follower(m.term, lead)
        elif m.term < self.term:
            if isinstance(m, AppendEntries | Heartbeat):
                # Tell a stale leader about the newer term, so it steps down (etcd).
                self.send(AppendEntriesResponse(self.term, self.id, m.src, success=False))
            elif isinstance(m, PreVote):
                self.send(PreVoteResponse(self.term, self.id, m.src, granted=False))
            return
        if isinstance(m, PreVote | RequestVote):
            self._on_vote_request(m)
        elif self.lead is not None:
            self.lead.step(m)
        else:
            self._step_non_leader(m)

    # ------------------------------------------------------------ roles

    def _randomize(self) -> None:
        e = self.cfg.election_ticks
        self.timeout = e + self._rng.randrange(e)

    def _set_role(self, role: Role) -> None:
        check_transition(self.id, self.role, role)
        self.role = role

    def become_follower(self, term: int, leader: int | None) -> None:
        self._set_role(Role.FOLLOWER)
        if term > self.term:
            self.term, self.vote = term, None
        self.leader, self.lead = leader, None
        self.election_elapsed = 0
        self._randomize()

    def campaign(self, *, pre: bool, transfer: bool = False) -> None:
        if self.id not in self.voters:
            return
        if pre:
            self._set_role(Role.PRE_CANDIDATE)
            term = self.term + 1
        else:
            self._set_role(Role.CANDIDATE)
            self.elections += 1
            self.term += 1
            self.vote = self.id
            term = self.term
        self.leader, self.lead = None, None
        self.election_elapsed = 0
        self._randomize()
        self._votes = {self.id: True}
        end, last = self.log.log_end, self.log.last_term
        for v in sorted(self.voters - {self.id}):
            if pre:
                self.send(PreVote(term, self.id, v, end, last))
            else:
                self.send(RequestVote(term, self.id, v, end, last, transfer))
        self._tally()

    def _tally(self) -> None:
        result = vote_result(self.voters, self._votes)
        if result is VoteResult.WON:
            if self.role is Role.PRE_CANDIDATE:
                self.campaign(pre=False)
            else:
                self._set_role(Role.LEADER)
                self.leader = self.id
                self.lead = Leadership(self)
                self.lead.start()
        elif result is VoteResult.LOST:
            self.become_follower(self.term, None)

    # ------------------------------------------------------------ handlers

    def _on_vote_request(self, m: PreVote | RequestVote) -> None:
        """§5.2/§5.4.1: one vote per term, only for a log at least as up-to-date."""
        pre = isinstance(m, PreVote)
        can_vote = (
            self.vote == m.src
            or (self.vote is None and self.leader is None)
            or (pre and m.term > self.term)
        )
        mine = (self.log.last_term, self.log.log_end)
        up_to_date = (m.last_term, m.last_end) >= mine
        granted = can_vote and up_to_date
        if granted and not pre:
            self.vote = m.src
            self.election_elapsed = 0
        term = m.term if granted else self.term
        if pre:
            self.send(PreVoteResponse(term, self.id, m.src, granted))
        else:
            self.send(RequestVoteResponse(term, self.id, m.src, granted))

    def _step_non_leader(self, m: Message) -> None:
        if isinstance(m, AppendEntries | Heartbeat):
            if self.role is not Role.FOLLOWER:
                self.become_follower(m.term, m.src)
            elif self.leader not in (None, m.src):
                raise MalformedMessageError(
                    f"node {m.src} claims term {m.term} led by {self.leader}"
                )
            self.leader = m.src
            self.election_elapsed = 0
            if isinstance(m, AppendEntries):
                self._on_append(m)
            else:
                self.commit_to(m.commit)
                self.send(HeartbeatResponse(self.term, self.id, m.src))
        elif isinstance(m, TimeoutNow):
            if self.role is Role.FOLLOWER:
                self.campaign(pre=False, transfer=True)
        elif (isinstance(m, PreVoteResponse) and self.role is Role.PRE_CANDIDATE) or (
            isinstance(m, RequestVoteResponse) and self.role is Role.CANDIDATE
        ):
            self._votes[m.src] = m.granted
            self._tally()

    def _on_append(self, m: AppendEntries) -> None:
        """§5.3: "If a follower's log does not contain an entry at prevLogIndex whose
        term matches prevLogTerm, it rejects; if an existing entry conflicts with a new
        one (same index but different terms), delete the existing entry and all that
        follow it"."""
        log = self.log
        prev, prev_term, entries = m.prev_offset, m.prev_term, m.entries
        if prev < self.commit:
            # The prefix up to our commit is the leader's: check from there, with our
            # own term at the commit, and keep only the entries that follow it.
            entries = tuple(e for e in entries if e.base >= self.commit)
            if not entries or entries[0].base != self.commit:
                self._ack(m, self.commit)
                return
            prev = self.commit
            prev_term = log.term_at(prev - 1) or 0
        if prev > log.log_end or log.term_at(prev - 1) != prev_term:
            if m.from_log_start:
                self._reset_log(prev, prev_term)
            else:
                self._reject(m, prev)
                return
        self._append_after(entries)
        match = entries[-1].end if entries else prev
        self.commit_to(min(m.commit, match))
        self._ack(m, match)

    def _ack(self, m: AppendEntries, match: int) -> None:
        self.send(AppendEntriesResponse(self.term, self.id, m.src, True, match=match))

    def _reject(self, m: AppendEntries, prev: int) -> None:
        """Fast backup (§5.3): name our term at ``prev - 1`` and where it starts."""
        log = self.log
        end = log.log_end
        term: int | None = None
        first = 0
        if prev <= end:
            term = log.term_at(prev - 1)
            first = log.batch_base(prev - 1) if prev - 1 >= log.log_start else log.log_start
            while first > log.log_start and log.term_at(first - 1) == term:
                first = log.batch_base(first - 1)
        self.send(
            AppendEntriesResponse(
                self.term, self.id, m.src, False, rejected=m.prev_offset, log_end=end,
                conflict_term=term, conflict_first=first,
            )
        )

    def _reset_log(self, start: int, start_term: int) -> None:
        """The leader's log starts past ours: start over at its log start (the prefix
        was committed, retention removed it). A snapshot replaces this later."""
        self.log.reset(start, start_term)
        self._configs = [c for c in self._configs if c[0] < min(self.commit, start)]
        self._known = None
        self.commit = max(self.commit, start)
        self.applied = start
        self._reset_at = start
        self._new_entries.clear()
        self._dirty = True

    def _append_after(self, entries: tuple[Entry, ...]) -> None:
        log = self.log
        for i, e in enumerate(entries):
            if e.base < log.log_end and log.term_at(e.base) == e.term:
                continue
            if e.base < log.log_end:
                self.truncate(e.base)
            self.append(entries[i:])
            return

    # ------------------------------------------------------------ log changes

    def append(self, entries: tuple[Entry, ...] | list[Entry]) -> None:
        self.log.append(entries)
        self._new_entries.extend(entries)
        self._dirty = True
        for e in entries:
            self._note_config(e)

    def truncate(self, offset: int) -> None:
        if offset < self.commit:
            raise SafetyViolationError(
                f"node {self.id}: truncating at {offset} below commit {self.commit}"
            )
        self.log.truncate_suffix(offset)
        self._new_entries = [e for e in self._new_entries if e.base < offset]
        self._configs = [c for c in self._configs if c[0] < offset]
        self._known = None
        self._dirty = True

    def _note_config(self, e: Entry) -> None:
        if e.voters is not None:
            self._configs.append((e.base, e.voters))
            self._known = None

    def commit_to(self, commit: int) -> None:
        if commit > self.commit:
            if commit > self.log.log_end:
                raise CommitPastLogEndError(
                    f"node {self.id}: commit {commit} past log end {self.log.log_end}"
                )
            self.commit = commit

    def send(self, m: Message) -> None:
        self._msgs.append(m)

    # ------------------------------------------------------------ Ready

    def has_ready(self) -> bool:
        # Field by field: called for every group of a broker at every tick (no
        # HardState built to compare).
        p = self._persisted
        return bool(
            self._msgs or self._dirty or self.commit > self.applied
            or self.term != p.term or self.vote != p.vote or self.commit != p.commit
        )

    def ready(self) -> Ready:
        if self._pending is not None:
            raise SafetyViolationError(f"node {self.id}: ready() again before advance()")
        p = self._persisted
        changed = self.term != p.term or self.vote != p.vote or self.commit != p.commit
        committed = tuple(self._committed_entries()) if self.cfg.deliver_committed else ()
        applied = committed[-1].end if committed else self.applied
        if not self.cfg.deliver_committed:
            applied = max(self.applied, self.commit)
        rd = Ready(
            hard_state=self.hard_state if changed else None,  # the one seam of it
            entries=tuple(self._new_entries),
            must_sync=self._dirty,
            messages=tuple(self._msgs),
            committed=committed,
            log_reset=self._reset_at,
            applied=applied,
        )
        self._msgs.clear()
        self._new_entries.clear()
        self._dirty = False
        self._reset_at = None
        self._pending = rd
        return rd

    def _committed_entries(self) -> list[Entry]:
        out: list[Entry] = []
        at, step = self.applied, self.cfg.max_entries_per_message
        while at < self.commit:
            chunk = [e for e in self.log.entries(at, step) if e.end <= self.commit]
            if not chunk:
                break
            out.extend(chunk)
            at = chunk[-1].end
        return out

    def advance(self, rd: Ready) -> None:
        if rd is not self._pending:
            raise SafetyViolationError(f"node {self.id}: advance() of a Ready not handed out")
        self._pending = None
        if rd.hard_state is not None:
            self._persisted = rd.hard_state
        self.applied = max(self.applied, rd.applied)
