"""The asyncio driver (``raft.node``): three nodes on one event loop over an in-memory
transport, no sockets. Timing only bounds the polls (generous deadlines)."""

from __future__ import annotations

import asyncio
import random

import pytest

from sentinel.errors import NotLeaderError
from sentinel.raft.core import RaftCore
from sentinel.raft.log import Entry, MemoryLog
from sentinel.raft.messages import Heartbeat, Message, RequestVoteResponse
from sentinel.raft.node import RaftNode
from sentinel.raft.state import HardState, RaftConfig, Ready, Role

IDS = (1, 2, 3)
DEADLINE = 20.0


class Network:
    """Delivers on the loop, later (``call_soon``), to the nodes that are up."""

    def __init__(self) -> None:
        self.nodes: dict[int, RaftNode] = {}
        self.down: set[int] = set()
        self.durable: dict[int, HardState] = {}
        self.violations: list[str] = []

    def send(self, m: Message) -> None:
        if m.src in self.down:
            return
        # §5.2 / figure 2: votedFor is "updated on stable storage before responding".
        if isinstance(m, RequestVoteResponse) and m.granted:
            hs = self.durable.get(m.src, HardState())
            if (hs.term, hs.vote) != (m.term, m.dst):
                self.violations.append(f"{m.src} granted {m} before persisting it ({hs})")
        node = self.nodes.get(m.dst)
        if node is not None and m.dst not in self.down:
            asyncio.get_running_loop().call_soon(node.deliver, m)


class Transport:
    def __init__(self, net: Network) -> None:
        self.net = net

    def send(self, m: Message) -> None:
        self.net.send(m)


async def poll(what: str, check: object) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not check():  # type: ignore[operator]
        if loop.time() > end:
            raise AssertionError(f"not within {DEADLINE} s: {what}")
        await asyncio.sleep(0.01)


def make_cluster() -> tuple[Network, dict[int, list[Entry]]]:
    net = Network()
    applied: dict[int, list[Entry]] = {i: [] for i in IDS}
    cfg = RaftConfig(election_ticks=10, heartbeat_ticks=2)
    for i in IDS:
        core = RaftCore(i, frozenset(IDS), MemoryLog(), random.Random(i), config=cfg)

        def persist(rd: Ready, i: int = i) -> None:
            if rd.hard_state is not None:
                net.durable[i] = rd.hard_state

        net.nodes[i] = RaftNode(core, Transport(net), persist=persist,
                                apply=applied[i].append, tick_seconds=0.01)
    for node in net.nodes.values():
        node.start()
    return net, applied


def leader_of(net: Network) -> RaftNode | None:
    up = [n for i, n in net.nodes.items() if i not in net.down and n.core.role is Role.LEADER]
    return max(up, key=lambda n: n.core.term) if up else None


async def test_elect_replicate_kill_the_leader_and_elect_again() -> None:
    """§5.2: "a candidate wins an election if it receives votes from a majority";
    §5.3: an entry is committed "once the leader that created the entry has replicated
    it on a majority"; after the leader dies the other two elect a new one (§5.2
    "If election timeout elapses without receiving AppendEntries ... convert to
    candidate"), which still holds every committed entry (§5.4 Leader Completeness)."""
    net, applied = make_cluster()
    try:
        await poll("a leader", lambda: leader_of(net) is not None)
        first = leader_of(net)
        assert first is not None
        done = [await asyncio.wait_for(first.propose(b"a%d" % n), DEADLINE) for n in range(5)]
        await poll("all apply", lambda: all(
            any(e.base == done[-1].base for e in applied[i]) for i in IDS))
        follower = next(n for n in net.nodes.values() if n is not first)
        with pytest.raises(NotLeaderError) as err:
            await follower.propose(b"no")
        assert err.value.leader == str(first.id)

        old_term = first.core.term
        net.down.add(first.id)
        await first.stop()
        await poll("a new leader", lambda: (
            (n := leader_of(net)) is not None and n.core.term > old_term))
        second = leader_of(net)
        assert second is not None and second is not first
        after = await asyncio.wait_for(second.propose(b"b"), DEADLINE)
        survivors = [i for i in IDS if i != first.id]
        await poll("survivors apply", lambda: all(
            any(e.base == after.base for e in applied[i]) for i in survivors))
        a, b = (applied[i] for i in survivors)
        assert [(e.base, e.term, e.data) for e in a] == [(e.base, e.term, e.data) for e in b]
        data = [e.data for e in a]
        assert data.index(b"a4") < data.index(b"b") and all(b"a%d" % n in data for n in range(5))
        assert net.violations == []
    finally:
        for node in net.nodes.values():
            await node.stop()


async def test_a_message_from_an_unknown_node_is_refused_and_changes_nothing() -> None:
    """A message from a node outside the configuration (here with a higher term, which
    §5.1 would otherwise adopt) is dropped with a warning; the node keeps running."""
    net, _ = make_cluster()
    try:
        await poll("a leader", lambda: leader_of(net) is not None)
        leader = leader_of(net)
        assert leader is not None
        target = next(n for n in net.nodes.values() if n is not leader)
        term = target.core.term
        target.deliver(Heartbeat(term + 5, 9, target.id, 0))
        await asyncio.wait_for(leader.propose(b"x"), DEADLINE)
        assert target.core.term == term
    finally:
        for node in net.nodes.values():
            await node.stop()
