"""A small in-process network for the unit tests (etcd's ``network``): every node's
Ready is persisted, then its messages delivered, until the cluster is quiet; links
can be cut and nodes isolated or crashed (a crash keeps what its Ready persisted)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from sentinel.raft.core import RaftCore
from sentinel.raft.log import Entry, MemoryLog
from sentinel.raft.messages import Message
from sentinel.raft.state import HardState, RaftConfig, Ready, Role


class Cluster:
    def __init__(
        self,
        n: int = 3,
        *,
        seed: int = 0,
        config: RaftConfig | None = None,
        logs: dict[int, list[Entry]] | None = None,
        terms: dict[int, int] | None = None,
    ) -> None:
        self.ids = list(range(1, n + 1))
        self.voters = frozenset(self.ids)
        self.config = config or RaftConfig()
        self.rng = random.Random(seed)
        self.logs: dict[int, MemoryLog] = {}
        self.hard: dict[int, HardState] = {}
        self.nodes: dict[int, RaftCore] = {}
        self.cut: set[tuple[int, int]] = set()
        self.down: set[int] = set()
        self.sent: list[Message] = []
        self.applied: dict[int, list[Entry]] = {i: [] for i in self.ids}
        self.drop: Callable[[Message], bool] = lambda m: False
        for i in self.ids:
            log = MemoryLog()
            log.append((logs or {}).get(i, []))
            self.logs[i] = log
            self.hard[i] = HardState(term=(terms or {}).get(i, 0))
            self.start(i)

    def start(self, i: int) -> None:
        self.down.discard(i)
        self.nodes[i] = RaftCore(
            i, self.voters, self.logs[i], random.Random(self.rng.random()),
            hard_state=self.hard[i], config=self.config,
        )

    def crash(self, i: int) -> None:
        """Lose the node's memory; its MemoryLog and hard state are what it persisted
        (the harness persists every Ready at once, so nothing else is lost)."""
        self.down.add(i)

    def isolate(self, i: int) -> None:
        for j in self.ids:
            if j != i:
                self.cut |= {(i, j), (j, i)}

    def heal(self) -> None:
        self.cut.clear()

    def leader(self) -> int | None:
        leaders = [i for i, c in self.nodes.items() if c.role is Role.LEADER and i not in self.down]
        return max(leaders, key=lambda i: self.nodes[i].term) if leaders else None

    def _collect(self) -> list[Message]:
        out: list[Message] = []
        for i in self.ids:
            c = self.nodes[i]
            if i in self.down or not c.has_ready():
                continue
            rd = c.ready()
            if rd.hard_state is not None:
                self.hard[i] = rd.hard_state
            if rd.log_reset is not None:
                self.applied[i] = []
            self.applied[i].extend(rd.committed)
            out.extend(rd.messages)
            c.advance(rd)
        return out

    def drain(self, limit: int = 10_000) -> None:
        for _ in range(limit):
            msgs = self._collect()
            if not msgs:
                return
            self.deliver(msgs)
        raise AssertionError("the cluster did not go quiet")

    def deliver(self, msgs: Iterable[Message]) -> None:
        for m in msgs:
            self.sent.append(m)
            if m.dst in self.down or (m.src, m.dst) in self.cut or self.drop(m):
                continue
            self.nodes[m.dst].step(m)

    def tick(self, ids: Iterable[int] | None = None, n: int = 1) -> None:
        for _ in range(n):
            for i in ids if ids is not None else self.ids:
                if i not in self.down:
                    self.nodes[i].tick()
            self.drain()

    def elect(self, i: int) -> RaftCore:
        self.nodes[i].campaign(pre=self.config.pre_vote)
        self.drain()
        assert self.nodes[i].role is Role.LEADER, self.nodes[i].role
        return self.nodes[i]


def entries(*terms: int) -> list[Entry]:
    """Batches of two offsets each with the given terms, from offset 0."""
    return [Entry(2 * k, t, 2, b"%d" % k) for k, t in enumerate(terms)]


def take(core: RaftCore) -> Ready:
    """The node's Ready, acknowledged at once (a driver with instant storage)."""
    rd = core.ready()
    core.advance(rd)
    return rd
