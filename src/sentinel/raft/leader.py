"""The leader's half of a node: replication, commit, heartbeats, check-quorum,
leadership transfer and one-server-at-a-time membership changes.

A ``Leadership`` exists only while its node leads (``RaftCore.lead``), so leader state
(follower progress, a transfer in flight) cannot outlive the term it belongs to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sentinel.raft.errors import ProposalRefusedError
from sentinel.raft.log import Entry
from sentinel.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    TimeoutNow,
)
from sentinel.raft.progress import Progress, ProgressState
from sentinel.raft.quorum import committed, majority

if TYPE_CHECKING:
    from sentinel.raft.core import RaftCore


class Leadership:
    def __init__(self, core: RaftCore) -> None:
        self.core = core
        self.progress: dict[int, Progress] = {}
        self.transfer_target: int | None = None
        self.heartbeat_elapsed = 0
        self._sync_progress()

    def _sync_progress(self) -> None:
        """One Progress per voter other than us (voters come and go with config)."""
        c = self.core
        for v in c.voters - {c.id}:
            if v not in self.progress:
                self.progress[v] = Progress(match=0, next=c.log.log_end, recent_active=True)
        for v in set(self.progress) - c.voters:
            del self.progress[v]

    def start(self) -> None:
        """§5.4.2 / §8: a new leader commits an entry of its own term at once (a no-op
        batch, like KIP-595's LeaderChange control record), which commits the rest."""
        c = self.core
        c.election_elapsed = 0
        self.append([Entry(0, 0)])

    # ------------------------------------------------------------ proposals

    def append(self, entries: list[Entry]) -> list[Entry]:
        c = self.core
        at, placed = c.log.log_end, []
        for e in entries:
            placed.append(e.at(at, c.term))
            at += e.count
        c.append(placed)
        self._sync_progress()
        self.maybe_commit()
        self.broadcast_append()
        return placed

    def propose(self, entry: Entry) -> Entry:
        if self.transfer_target is not None:
            raise ProposalRefusedError(
                f"node {self.core.id} is handing leadership to {self.transfer_target}"
            )
        return self.append([entry])[0]

    def propose_config(self, voters: frozenset[int]) -> Entry:
        c = self.core
        if len(voters ^ c.voters) != 1:
            raise ProposalRefusedError(
                f"change {sorted(c.voters)} -> {sorted(voters)}: one server at a time"
            )
        if c.config_offset >= c.commit:
            raise ProposalRefusedError("the previous configuration change is not committed")
        if c.log.term_at(c.commit - 1) != c.term:
            raise ProposalRefusedError("no entry of this term committed yet (§4.1 fix)")
        return self.propose(Entry(0, 0, voters=voters))

    def transfer(self, target: int) -> None:
        c = self.core
        if target == c.id or target not in self.progress:
            raise ProposalRefusedError(f"cannot transfer leadership to {target}")
        self.transfer_target = target
        c.election_elapsed = 0
        if self.progress[target].match == c.log.log_end:
            c.send(TimeoutNow(c.term, c.id, target))
        else:
            self.send_append(target)

    # ------------------------------------------------------------ ticks

    def tick(self, beats: list[tuple[int, int, int]] | None = None) -> None:
        """``beats``: heartbeats due go there as ``(dst, term, commit)`` rather than
        out as messages (see ``RaftCore.tick``)."""
        c = self.core
        c.election_elapsed += 1
        self.heartbeat_elapsed += 1
        if c.election_elapsed >= c.cfg.election_ticks:
            c.election_elapsed = 0
            self.transfer_target = None  # §3.10: abort a transfer that took too long
            if c.cfg.check_quorum and not self._quorum_active():
                c.become_follower(c.term, None)
                return
        if self.heartbeat_elapsed >= c.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            for v, pr in sorted(self.progress.items()):
                if beats is None:
                    c.send(Heartbeat(c.term, c.id, v, min(pr.match, c.commit)))
                else:
                    beats.append((v, c.term, min(pr.match, c.commit)))

    def _quorum_active(self) -> bool:
        """§6.2 (dissertation) check-quorum: "a leader steps down if an election
        timeout elapses without a successful round of heartbeats to a majority"."""
        c = self.core
        active = sum(1 for v in c.voters if v == c.id or self.progress[v].recent_active)
        for pr in self.progress.values():
            pr.recent_active = False
        return active >= majority(len(c.voters))

    # ------------------------------------------------------------ replication

    def broadcast_append(self) -> None:
        for v in sorted(self.progress):
            self.send_append(v)

    def send_append(self, v: int, *, allow_empty: bool = False) -> None:
        c, pr = self.core, self.progress[v]
        log = c.log
        if pr.state is ProgressState.PROBE and pr.paused:
            return
        if pr.state is ProgressState.REPLICATE and pr.next >= log.log_end and not allow_empty:
            return
        from_start = pr.next < log.log_start
        if from_start:
            pr.next = log.log_start
        prev_term = log.term_at(pr.next - 1)
        assert prev_term is not None
        entries = tuple(log.entries(pr.next, c.cfg.max_entries_per_message))
        c.send(AppendEntries(c.term, c.id, v, pr.next, prev_term, entries, c.commit, from_start))
        pr.sent(entries[-1].end if entries else pr.next)

    def maybe_commit(self) -> bool:
        """§5.4.2: "only log entries from the leader's current term are committed by
        counting replicas"; earlier ones are committed with them (figure 8)."""
        c = self.core
        match = {v: pr.match for v, pr in self.progress.items()}
        match[c.id] = c.log.log_end
        voters = c.voters
        n = committed(voters, match)
        if n <= c.commit or c.log.term_at(n - 1) != c.term:
            return False
        c.commit_to(n)
        if c.id not in voters and c.config_offset < c.commit:
            c.become_follower(c.term, None)  # §4.2.2: a removed leader steps down
        return True

    def step(self, m: Message) -> None:
        c = self.core
        pr = self.progress.get(m.src)
        if pr is None:
            return
        if isinstance(m, HeartbeatResponse):
            pr.recent_active = True
            pr.paused = False
            if pr.match < c.log.log_end:
                # An empty append in REPLICATE finds out whether earlier ones were lost:
                # the follower rejects it if so, and the leader backs up (etcd's way).
                self.send_append(m.src, allow_empty=True)
        elif isinstance(m, AppendEntriesResponse):
            pr.recent_active = True
            if m.success:
                self._on_ack(m.src, pr, m.match)
            else:
                self._on_reject(m.src, pr, m)

    def _on_ack(self, v: int, pr: Progress, match: int) -> None:
        c = self.core
        if pr.acked(match):
            if pr.state is ProgressState.PROBE:
                pr.become_replicate()
            if self.maybe_commit():
                if c.lead is not self:
                    return
                for u in sorted(self.progress):
                    self.send_append(u, allow_empty=True)
            else:
                self.send_append(v)
            if v == self.transfer_target and pr.match == c.log.log_end:
                c.send(TimeoutNow(c.term, c.id, v))
        elif pr.state is ProgressState.PROBE:
            self.send_append(v)

    def _on_reject(self, v: int, pr: Progress, m: AppendEntriesResponse) -> None:
        """Fast backup (§5.3): skip the follower's whole conflicting term at once."""
        if pr.is_stale_rejection(m.rejected):
            return
        log = self.core.log
        if m.conflict_term is None:
            target = m.log_end
        else:
            ours = self._end_of_term(m.conflict_term, m.rejected)
            target = m.conflict_first if ours is None else ours
        target = min(target, m.rejected - 1)
        if target >= log.log_start:
            target = log.batch_base(target) if target < log.log_end else log.log_end
        pr.backed_up(target)
        self.send_append(v)

    def _end_of_term(self, term: int, below: int) -> int | None:
        """End of our last batch of ``term`` before ``below``, if we have that term."""
        log = self.core.log
        p = min(below, log.log_end)
        while p > log.log_start:
            t = log.term_at(p - 1)
            assert t is not None
            if t == term:
                return p
            if t < term:
                return None
            p = log.batch_base(p - 1)
        return None
