"""The deterministic Raft simulator: five nodes in one process, one seed, one history.

A virtual clock (a heap of timed events), a seeded network that delays, drops,
duplicates and reorders messages, partitions that come and heal, and nodes that crash
and restart. Each node runs the real ``RaftCore`` behind a driver that follows the
Ready contract (persist, then send, then apply, then advance); a crash can strike
before the persist or between the persist and the send, and loses exactly what was
not persisted: the node comes back with its durable log (the entries as of its last
sync) and its durable hard state.

Storage: by default an in-memory durable log with explicit persist points
(``SimStorage``), which models the contract ``PartitionLog`` gives (append visible at
once, durable after sync, truncate durable after sync) and is fast enough for 1,000
seeds in ``make test``. With ``SimParams.real_log`` each node runs on the real thing
(``sim_partition.PartitionStorage``: ``PartitionLog`` + ``PartitionRaftLog`` + the
hard-state file on its own ``MemFS``; a crash is ``MemFS.crash()``); after every
crash the checker requires that the reopened log is exactly what was synced.

After every event the checker asserts: at most one leader per term, and one granted
vote per node and term (across crashes); log matching
(same base and term => same batch and same prefix, by a hash chain); leader
completeness (a leader holds every entry committed in an earlier term); state-machine
safety (every node applies the same batch at the same offsets); a committed entry is
never changed, and (while the membership is the initial one) stays on the durable log
of a majority. After the chaos it heals everything, restarts every node and requires a
leader and a new committed proposal within bounded virtual time.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from raft.sim_partition import PartitionStorage
from raft.sim_partition import payload as real_payload
from sentinel.errors import SentinelError
from sentinel.raft.core import RaftCore
from sentinel.raft.errors import NotLeaderError, ProposalRefusedError
from sentinel.raft.log import Entry, MemoryLog, RaftLog
from sentinel.raft.messages import Message, RequestVoteResponse
from sentinel.raft.quorum import majority
from sentinel.raft.state import HardState, RaftConfig, Ready, Role

TICK = 10  # virtual time units per tick


class InvariantViolationError(AssertionError):
    pass


@dataclass
class SimParams:
    nodes: int = 5
    chaos_time: int = 2_500  # virtual time of faults and proposals
    liveness_bound: int = 3_000  # after healing: leader + commit within this
    max_delay: int = 25
    drop: float = 0.05
    duplicate: float = 0.03
    crash_rate: float = 0.004  # per node input, a crash in the middle of a Ready
    partition_every: int = 400
    propose_every: int = 30
    membership: bool = True
    transfers: bool = True
    pre_vote: bool = True
    check_quorum: bool = True
    slow: float = 0.0  # the share of messages held up to 10x max_delay
    retention_every: int = 0  # a node drops a prefix of what it applied (0: never)
    real_log: bool = False  # nodes on PartitionLog + MemFS (sim_partition)


PROFILES = {
    "default": SimParams(),
    "calm": SimParams(drop=0.01, duplicate=0.0, crash_rate=0.0, partition_every=1_000),
    "churn": SimParams(crash_rate=0.02, partition_every=150),
    "lossy": SimParams(drop=0.2, duplicate=0.1, max_delay=60),
    # Plain Raft (no pre-vote, no check-quorum): many split votes, voters crashing
    # between granting and the next request of the same term.
    # Retention: nodes drop applied prefixes, laggards restart from a leader's log
    # start. Without membership changes: a config entry below the log start needs the
    # snapshot that is not built yet.
    "retention": SimParams(retention_every=60, membership=False, crash_rate=0.01),
    "split": SimParams(crash_rate=0.03, max_delay=40, slow=0.1, pre_vote=False,
                       check_quorum=False),
}


def params_for(seed: int) -> tuple[str, SimParams]:
    """Each seed draws its fault profile, so a range of seeds covers them all."""
    name = sorted(PROFILES)[random.Random(seed ^ 0x5EED).randrange(len(PROFILES))]
    return name, PROFILES[name]


class SimStorage:
    """A node's disk: a volatile ``MemoryLog`` and what was synced of it. ``start_hash``
    is the checker's hash of the prefix retention removed (see ``chain``)."""

    def __init__(self) -> None:
        self.log = MemoryLog()
        self.start_hash = 0
        self.durable: tuple[int, int, int, list[Entry]] = (0, 0, 0, [])
        self.hard = HardState()

    def sync(self) -> None:
        log = self.log
        self.durable = (log.log_start, log.start_term, self.start_hash, log.all_entries())

    def store_hard(self, hard: HardState) -> None:
        self.hard = hard

    def crash(self) -> None:
        start, start_term, self.start_hash, entries = self.durable
        self.log = MemoryLog(start, start_term)
        self.log.append(entries)

    def trim_points(self, applied: int) -> list[int]:
        return [e.end for e in self.durable[3] if self.log.log_start < e.end <= applied]

    def trim(self, offset: int, start_hash: int) -> None:
        """Retention to the boundary ``offset`` (below what is durable): durable at once."""
        self.log.trim_prefix(offset)
        start, start_term, _, entries = self.durable
        kept = [e for e in entries if e.base >= offset]
        gone = [e for e in entries if e.base < offset]
        if gone:
            start, start_term = gone[-1].end, gone[-1].term
        self.durable = (start, start_term, start_hash, kept)
        self.start_hash = start_hash


def chain(
    log: RaftLog, seed: int, prior: dict[int, int] | None = None, since: int | None = None
) -> dict[int, int]:
    """Prefix end -> hash of the whole prefix (log matching in O(1) per entry); a log
    that starts past 0 starts from the hash of the prefix that was removed. With
    ``prior`` (the chain before) and ``since`` (where the log changed), only the
    entries from ``since`` on are read."""
    if prior is not None and since is not None and since in prior:
        out = {end: h for end, h in prior.items() if end <= since}
        h, at = prior[since], since
    else:
        out, h, at = {log.log_start: seed}, seed, log.log_start
    for e in log.entries(at, 1 << 30):
        h = hash((h, e.base, e.term, e.count, e.data, e.voters))
        out[e.end] = h
    return out


@dataclass
class NodeView:
    chain: dict[int, int] = field(default_factory=dict)
    durable_chain: dict[int, int] = field(default_factory=dict)
    changed: int | None = 0  # where the log changed since the last log-matching check
    next_apply: int = 0


class Simulation:
    def __init__(self, seed: int, params: SimParams | None = None) -> None:
        self.seed = seed
        self.profile, self.p = ("given", params) if params else params_for(seed)
        self.rng = random.Random(seed)
        self.ids = list(range(1, self.p.nodes + 1))
        self.voters = frozenset(self.ids)
        self.config = RaftConfig(
            election_ticks=10, heartbeat_ticks=2, max_entries_per_message=2,
            pre_vote=self.p.pre_vote, check_quorum=self.p.check_quorum,
        )
        self.storage: dict[int, Any] = {
            i: PartitionStorage() if self.p.real_log else SimStorage() for i in self.ids
        }
        self.payload = real_payload if self.p.real_log else (lambda n, count: b"p%d" % n)
        self.nodes: dict[int, RaftCore] = {}
        self.view = {i: NodeView() for i in self.ids}
        self.down: set[int] = set()
        self.cut: set[tuple[int, int]] = set()
        self.events: list[tuple[int, int, str, Any]] = []
        self.seq = 0
        self.now = 0
        self.faults = True
        self.trace: deque[str] = deque(maxlen=60)
        self.membership_changed = False
        self.stats: Counter[str] = Counter()
        # the checker's global knowledge
        self.leaders: dict[int, int] = {}
        self.seen: dict[tuple[int, int], int] = {}
        self.committed: dict[int, int] = {0: 0}
        self.commit_end = 0
        self.marks: list[list[int]] = []  # [term, committed end] per term observed
        self.applied: dict[int, tuple[int, int, bytes]] = {}
        self.votes: dict[tuple[int, int], int] = {}
        self.proposed = 0
        for i in self.ids:
            self._start(i)
            self._at(self.rng.randrange(TICK), "tick", i)

    # ------------------------------------------------------------ plumbing

    def _at(self, t: int, kind: str, data: Any) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, data))

    def _start(self, i: int) -> None:
        s = self.storage[i]
        self.nodes[i] = RaftCore(
            i, self.voters, s.log, random.Random(self.rng.getrandbits(32)),
            hard_state=s.hard, config=self.config,
        )
        v = self.view[i]
        v.chain = chain(s.log, s.start_hash)
        v.next_apply = s.log.log_start
        v.changed = s.log.log_start
        self.down.discard(i)

    def _crash(self, i: int, where: str) -> None:
        self.trace.append(f"{self.now} crash {i} {where}")
        self.stats["crash " + where] += 1
        self.down.add(i)
        self._lose_unsynced(i)
        quick = self.rng.random() < 0.5  # a quick restart can rejoin the same election
        delay = self.rng.randrange(2, 40) if quick else self.rng.randrange(50, 600)
        self._at(self.now + delay, "restart", i)

    def _lose_unsynced(self, i: int) -> None:
        """The node's disk after a crash must hold exactly what it synced."""
        s, v = self.storage[i], self.view[i]
        s.crash()
        recovered = chain(s.log, s.start_hash)
        if recovered != (v.durable_chain or {0: 0}):
            lost = sorted(set(v.durable_chain.items()) - set(recovered.items()))[:3]
            kept = sorted(set(recovered.items()) - set(v.durable_chain.items()))[:3]
            self.fail(f"node {i} reopened a log other than it synced: lost {lost}, "
                      f"kept unsynced {kept}")
        v.chain = recovered

    def send(self, m: Message) -> None:
        if (m.src, m.dst) in self.cut or (self.faults and self.rng.random() < self.p.drop):
            return
        copies = 2 if self.faults and self.rng.random() < self.p.duplicate else 1
        for _ in range(copies):
            delay = 1 + self.rng.randrange(self.p.max_delay)
            if self.faults and self.rng.random() < self.p.slow:
                delay *= 10
            self._at(self.now + delay, "deliver", m)

    # ------------------------------------------------------------ the driver

    def _input(self, i: int, what: str, fn: Any) -> None:
        core = self.nodes[i]
        self.trace.append(f"{self.now} n{i} {what}")
        try:
            fn(core)
        except SentinelError as e:
            self.fail(f"node {i} raised {type(e).__name__}: {e}")
        if core.has_ready():
            self._handle_ready(i, core.ready())
        if i not in self.down:
            self.check(i)

    def _handle_ready(self, i: int, rd: Ready) -> None:
        core, s, v = self.nodes[i], self.storage[i], self.view[i]
        if rd.log_reset is not None:
            if rd.log_reset not in self.committed:
                self.fail(f"node {i} starts its log over at {rd.log_reset}, not committed")
            s.start_hash = self.committed[rd.log_reset]
            self.stats["log reset"] += 1
        if rd.must_sync:
            since = rd.entries[0].base if rd.entries and rd.log_reset is None else None
            v.chain = chain(s.log, s.start_hash, v.chain, since)
            at = s.log.log_start if since is None else since
            v.changed = at if v.changed is None else min(v.changed, at)
        if self.faults and self.rng.random() < self.p.crash_rate:
            self._crash(i, "before persist")
            return
        if rd.must_sync:
            s.sync()
            v.durable_chain = v.chain
        if rd.hard_state is not None:
            s.store_hard(rd.hard_state)
        if self.faults and self.rng.random() < self.p.crash_rate:
            self._crash(i, "after persist, before send")
            return
        for m in rd.messages:
            # One vote per node and term, even across crashes (the vote was persisted).
            granted = isinstance(m, RequestVoteResponse) and m.granted
            if granted and self.votes.setdefault((m.src, m.term), m.dst) != m.dst:
                self.fail(f"node {i} voted for {self.votes[(m.src, m.term)]} and "
                              f"{m.dst} in term {m.term}")
            self.send(m)
        if rd.log_reset is not None:
            v.next_apply = rd.log_reset
        for e in rd.committed:
            self._apply(i, e)
        core.advance(rd)

    def _apply(self, i: int, e: Entry) -> None:
        v = self.view[i]
        if e.base != v.next_apply:
            self.fail(f"node {i} applies {e.base}, expected {v.next_apply}")
        v.next_apply = e.end
        key = (e.term, e.count, e.data)
        if self.applied.setdefault(e.base, key) != key:
            self.fail(f"state machine safety: node {i} applies {key} at {e.base}, "
                      f"others applied {self.applied[e.base]}")

    # ------------------------------------------------------------ the checker

    def fail(self, what: str) -> None:
        trace = "\n".join(self.trace)
        raise InvariantViolationError(
            f"seed {self.seed} ({self.profile}) at t={self.now}: {what}\nlast events:\n{trace}\n"
            f"replay: {'RAFT_REAL_LOG=1 ' if self.p.real_log else ''}RAFT_SEED={self.seed} "
            f"pytest tests/raft/test_sim.py::test_replay"
        )

    def check(self, i: int) -> None:
        core, v = self.nodes[i], self.view[i]
        if core.role is Role.LEADER and self.leaders.setdefault(core.term, i) != i:
            self.fail(f"two leaders in term {core.term}: {self.leaders[core.term]} and {i}")
        log = core.log
        if v.changed is not None:
            self._check_log_matching(i, max(v.changed, log.log_start))
            v.changed = None
        c = core.commit
        if c > log.log_start or c == self.commit_end:
            self._check_commit(i, c)
        if core.role is Role.LEADER:
            need = 0
            for term, end in self.marks:
                if term < core.term:
                    need = max(need, end)
            if need > log.log_start and v.chain.get(need) != self.committed[need]:
                self.fail(f"leader completeness: leader {i} of term {core.term} lacks "
                          f"the prefix committed up to {need}")
        if not self.membership_changed and self.commit_end > 0:
            h = self.committed[self.commit_end]
            held = sum(1 for j in self.ids if self.view[j].durable_chain.get(self.commit_end) == h)
            if held < majority(len(self.ids)):
                self.fail(f"committed prefix {self.commit_end} is durable on {held} nodes only")

    def _check_log_matching(self, i: int, since: int) -> None:
        """Same (base, term) => same batch and same prefix (the hash chain says so),
        for the entries from ``since`` (where the log changed) on."""
        log, ch, seen = self.nodes[i].log, self.view[i].chain, self.seen
        if since not in ch:
            since = log.log_start
        prev = log.term_at(since - 1) or 0
        for e in log.entries(since, 1 << 30):
            h = ch[e.end]
            if seen.setdefault((e.base, e.term), h) != h:
                self.fail(f"log matching: node {i} batch ({e.base}, {e.term}) differs")
            if e.term < prev:
                self.fail(f"node {i}: terms go down at {e.base}")
            prev = e.term

    def _check_commit(self, i: int, c: int) -> None:
        v, g = self.view[i], self.commit_end
        h = v.chain.get(c) if c > 0 else 0
        if h is None:
            self.fail(f"node {i} commit {c} is not a batch end of its log")
        if c <= g:
            if self.committed.get(c) != h:
                self.fail(f"committed entry changed: node {i} commit {c} differs")
            return
        if g > self.nodes[i].log.log_start and v.chain.get(g) != self.committed[g]:
            self.fail(f"node {i} commits {c} on a prefix other than the committed one {g}")
        for end, hh in v.chain.items():
            if g < end <= c:
                self.committed[end] = hh
        self.commit_end = c
        term = self.nodes[i].term
        if self.marks and self.marks[-1][0] == term:
            self.marks[-1][1] = c
        else:
            self.marks.append([term, c])

    # ------------------------------------------------------------ the world

    def _leader(self) -> int | None:
        best = None
        for i in self.ids:
            c = self.nodes[i]
            if i not in self.down and c.role is Role.LEADER and (
                best is None or c.term > self.nodes[best].term
            ):
                best = i
        return best

    def _propose(self, kind: str) -> None:
        # Any node that believes it leads, a stale one too (its entries must not stick).
        leaders = [i for i in self.ids if i not in self.down and self.nodes[i].lead is not None]
        if not leaders:
            return
        i = self.rng.choice(leaders)
        self.proposed += 1
        n = self.proposed

        def act(core: RaftCore) -> None:
            try:
                if kind == "data":
                    core.propose(self.payload(n, 1 + n % 3), count=1 + n % 3)
                elif kind == "transfer":
                    core.transfer_leadership(self.rng.choice(sorted(core.voters - {i}) or [0]))
                else:
                    voters = core.voters
                    gone = sorted(self.voters - voters)
                    if gone:
                        new = voters | {self.rng.choice(gone)}
                    elif len(voters) > 3:
                        new = voters - {self.rng.choice(sorted(voters))}
                    else:
                        return
                    core.propose_config(new)
                    self.membership_changed = True
            except (NotLeaderError, ProposalRefusedError):
                pass

        self._input(i, f"propose {kind} {n}", act)

    def _partition(self) -> None:
        self.cut.clear()
        if self.rng.random() < 0.3:
            return
        side = set(self.rng.sample(self.ids, self.rng.randrange(1, len(self.ids))))
        for a in side:
            for b in self.ids:
                if b not in side:
                    self.cut |= {(a, b), (b, a)}
        self.trace.append(f"{self.now} partition {sorted(side)}")

    def _retention(self) -> None:
        i = self.rng.choice(self.ids)
        if i in self.down:
            return
        core, s = self.nodes[i], self.storage[i]
        ends = s.trim_points(core.applied)
        if ends:
            at = self.rng.choice(ends)
            self.trace.append(f"{self.now} retention n{i} to {at}")
            self.stats["retention"] += 1
            s.trim(at, self.view[i].chain[at])
            v = self.view[i]
            v.durable_chain = {k: h for k, h in v.durable_chain.items() if k >= at}
            v.chain = {k: h for k, h in v.chain.items() if k >= at}

    def run(self) -> None:
        p = self.p
        t = 0
        while t < p.chaos_time:
            t += self.rng.randrange(1, 2 * p.propose_every)
            r = self.rng.random()
            kind = "data"
            if r < 0.03 and p.transfers:
                kind = "transfer"
            elif r < 0.06 and p.membership:
                kind = "config"
            self._at(t, "propose", kind)
        for t in range(p.partition_every, p.chaos_time, p.partition_every):
            self._at(t + self.rng.randrange(p.partition_every // 2), "partition", None)
        if p.retention_every:
            for t in range(p.retention_every, p.chaos_time, p.retention_every):
                self._at(t, "retention", None)
        self._loop(p.chaos_time)
        self.heal()
        end = self.now + p.liveness_bound
        target: int | None = None
        while self.now < end:
            self._loop(self.now + TICK)
            i = self._leader()
            if i is None:
                continue
            core = self.nodes[i]
            if target is None:
                try:
                    target = core.propose(self.payload(0, 1)).end
                except (NotLeaderError, ProposalRefusedError):
                    continue
                self._input(i, "propose final", lambda c: None)
            elif self.commit_end >= target:
                return
            elif core.log.term_at(target - 1) is None or core.log.log_end < target:
                target = None
        self.fail(f"liveness: no commit within {p.liveness_bound} after healing "
                  f"(leader {self._leader()}, commit {self.commit_end}, target {target})")

    def heal(self) -> None:
        """Heal every partition and restart every node (each loses what it had not
        persisted), then run without faults."""
        self.trace.append(f"{self.now} heal, restart all")
        self.faults = False
        self.cut.clear()
        for i in self.ids:
            self._lose_unsynced(i)
            self._start(i)
        self.events = [e for e in self.events if e[2] not in ("restart", "partition")]
        heapq.heapify(self.events)

    def _loop(self, until: int) -> None:
        while self.events and self.events[0][0] <= until:
            t, _, kind, data = heapq.heappop(self.events)
            self.now = t
            if kind == "tick":
                self._at(t + TICK, "tick", data)
                if data not in self.down:
                    self._input(data, "tick", RaftCore.tick)
            elif kind == "deliver":
                m: Message = data
                if m.dst not in self.down and (m.src, m.dst) not in self.cut:
                    self._input(m.dst, repr(m), lambda c, m=m: c.step(m))
            elif kind == "propose":
                self._propose(data)
            elif kind == "retention":
                self._retention()
            elif kind == "partition":
                self._partition()
            elif kind == "restart" and data in self.down:
                self.trace.append(f"{t} restart {data}")
                self._start(data)
        self.now = max(self.now, until)
        if self.faults:
            for i in self.ids:
                if i not in self.down and self.rng.random() < self.p.crash_rate:
                    self._crash(i, "idle")


def run_seed(seed: int, params: SimParams | None = None) -> Simulation:
    sim = Simulation(seed, params)
    sim.run()
    return sim
