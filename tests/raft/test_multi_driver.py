"""The many-group asyncio driver: three brokers on one event loop, 1 controller-like
group + 20 partition groups, real PartitionLogs and HardStateStores on each broker's
own MemFS, envelopes through an in-memory transport."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable

import pytest

from raft.sim_partition import OPTIONS, payload
from sentinel.clock import ManualClock
from sentinel.errors import ClosedError, NotLeaderError
from sentinel.fs import MemFS
from sentinel.log.config import TopicConfig
from sentinel.log.partition_log import PartitionLog
from sentinel.raft.core import RaftCore
from sentinel.raft.hard_state_store import HardStateStore
from sentinel.raft.log import Entry
from sentinel.raft.multi import Beat, Envelope, GroupSet
from sentinel.raft.multi_driver import MultiRaftDriver
from sentinel.raft.partition_log_adapter import PartitionRaftLog
from sentinel.raft.state import RaftConfig, Role
from sentinel.storage.options import EngineOptions
from sentinel.storage.sync_scheduler import SyncScheduler
from sentinel.storage.wal import SyncMode, WalOptions

NODES = (1, 2, 3)
GROUPS = tuple(range(21))  # 0: the controller-like group, 1..20: partitions
TICK = 0.01
CFG = RaftConfig(election_ticks=10, heartbeat_ticks=1)
DEADLINE = 20.0  # seconds; the polls end far sooner


class Broker:
    """One node's disk (a MemFS that survives a restart) and, while up, its driver."""

    def __init__(self, node_id: int, net: Net) -> None:
        self.id = node_id
        self.fs = MemFS()
        self.net = net
        self.applied: dict[int, list[Entry]] = {}
        self.events: list[tuple[str, int, int]] = []  # ("apply"|"reset", group, offset)
        self.roles: Counter[int] = Counter()
        self.up()

    def up(self) -> None:
        self.scheduler = SyncScheduler(2, name=f"sync-{self.id}")
        engine = EngineOptions(
            background=False, wal=WalOptions(sync_mode=SyncMode.NONE),
            sync_scheduler=self.scheduler,
        )
        clock = ManualClock()
        self.store = HardStateStore.open(
            self.fs, "/data/raft-state", options=EngineOptions(background=False)
        )
        self.driver = MultiRaftDriver(
            GroupSet(self.id), self.net.sender(self.id), self.store, tick_seconds=TICK
        )
        self.logs: dict[int, PartitionRaftLog] = {}
        rng = random.Random(self.id)
        for g in GROUPS:
            plog = PartitionLog.open(
                self.fs, f"/data/p{g}", TopicConfig(), clock, engine, options=OPTIONS
            )
            log = PartitionRaftLog(plog, self.store.view(g), clock)
            core = RaftCore(self.id, frozenset(NODES), log, random.Random(rng.getrandbits(32)),
                            hard_state=log.hard_state, config=CFG)
            self.logs[g] = log
            self.applied[g] = []
            self.driver.add_group(g, core, log, on_apply=self._apply, on_role=self._role,
                                  on_reset=self._reset)
        self.net.drivers[self.id] = self.driver
        self.driver.start()

    def _apply(self, group: int, e: Entry) -> None:
        self.applied[group].append(e)
        self.events.append(("apply", group, e.base))

    def _reset(self, group: int, offset: int) -> None:
        self.events.append(("reset", group, offset))

    def _role(self, group: int) -> None:
        self.roles[group] += 1

    async def kill(self) -> None:
        """As a killed process: nothing more is sent, what was not fsynced is lost."""
        self.net.drivers.pop(self.id, None)
        await self.driver.stop()
        self.fs.crash()
        self.scheduler.shutdown()

    def read_all(self, g: int) -> bytes:
        plog = self.logs[g].plog
        return b"".join(bytes(b) for b in plog.read(0, 1 << 24).batches)


class Net:
    """Envelopes delivered in-process; those to or from a dead broker are dropped.
    Counts envelopes per (src, dst) for the coalescing check."""

    def __init__(self) -> None:
        self.drivers: dict[int, MultiRaftDriver] = {}
        self.sent: Counter[tuple[int, int]] = Counter()

    def sender(self, src: int) -> Callable[[Envelope], None]:
        def send(env: Envelope) -> None:
            if src not in self.drivers:
                return
            self.sent[(env.src, env.dst)] += 1
            dst = self.drivers.get(env.dst)
            if dst is not None:
                dst.deliver(env)
        return send


async def poll(what: str, check: Callable[[], bool], deadline: float = DEADLINE) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not check():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(TICK)


def leaders(brokers: dict[int, Broker], alive: set[int]) -> dict[int, int] | None:
    """group -> leader, once every group has one leader all live brokers agree on."""
    out: dict[int, int] = {}
    for g in GROUPS:
        leading = [b for b in alive if brokers[b].driver.core(g).role is Role.LEADER]
        if len(leading) != 1:
            return None
        term = brokers[leading[0]].driver.core(g).term
        if any(brokers[b].driver.core(g).leader != leading[0]
               or brokers[b].driver.core(g).term != term for b in alive):
            return None
        out[g] = leading[0]
    return out


def converged(brokers: dict[int, Broker], alive: set[int]) -> bool:
    """Every live replica holds the same log, all of it committed (high watermark)."""
    for g in GROUPS:
        ends = {(brokers[b].logs[g].log_end, brokers[b].logs[g].plog.high_watermark)
                for b in alive}
        if len(ends) != 1 or len({e for e, _ in ends} | {h for _, h in ends}) != 1:
            return False
    return True


async def propose_everywhere(brokers: dict[int, Broker], lead: dict[int, int], n: int) -> None:
    """One proposal per group at its leader, both waits on it: acks=1 (persisted)
    always ends before acks=all (committed) can."""
    persisted_first: list[bool] = []

    async def one(g: int) -> None:
        d = brokers[lead[g]].driver
        entry = d.propose(g, payload(n * 100 + g, 3), 3)
        persisted = asyncio.create_task(d.wait_persisted(g, entry))
        committed = asyncio.create_task(d.wait_committed(g, entry))
        committed.add_done_callback(lambda _t: persisted_first.append(persisted.done()))
        assert (await persisted) == entry
        assert (await committed) == entry

    await asyncio.gather(*(one(g) for g in GROUPS))
    assert persisted_first == [True] * len(GROUPS)


async def scenario() -> None:
    net = Net()
    brokers = {n: Broker(n, net) for n in NODES}
    alive = set(NODES)
    try:
        await poll("leaders", lambda: leaders(brokers, alive) is not None)
        lead = leaders(brokers, alive)
        assert lead is not None
        assert all(brokers[lead[g]].roles[g] >= 1 for g in GROUPS)  # on_role was called

        # Proposals commit on all three; acks=1 returns before acks=all can.
        for n in range(3):
            await propose_everywhere(brokers, lead, n)
        await poll("convergence", lambda: converged(brokers, alive))
        for g in GROUPS:
            data = {brokers[b].read_all(g) for b in alive}
            assert len(data) == 1 and len(data.pop()) > 0
        # Not the leader: refused, naming the leader.
        follower = next(b for b in NODES if b != lead[5])
        with pytest.raises(NotLeaderError) as refused:
            brokers[follower].driver.propose(5, payload(1, 1), 1)
        assert refused.value.leader == str(lead[5])

        # Idle: at most one envelope per broker pair and direction per tick.
        d1 = brokers[1].driver
        net.sent.clear()
        t0 = {b: brokers[b].driver.ticks for b in NODES}
        await poll("idle ticks", lambda: d1.ticks >= t0[1] + 30)
        for (src, dst), count in net.sent.items():
            ticks = brokers[src].driver.ticks - t0[src]
            assert count <= ticks + 1, f"{src}->{dst}: {count} envelopes in {ticks} ticks"
        assert {pair for pair in net.sent} == {(a, b) for a in NODES for b in NODES if a != b}

        # The controller's leader dies: the others elect a new one, in bounded ticks.
        victim = lead[0]
        await brokers[victim].kill()
        alive.discard(victim)
        survivor = brokers[min(alive)].driver
        start = survivor.ticks
        await poll("a new leader for every group", lambda: leaders(brokers, alive) is not None)
        assert survivor.ticks - start <= 6 * CFG.election_ticks
        lead = leaders(brokers, alive)
        assert lead is not None and victim not in lead.values()
        await propose_everywhere(brokers, lead, 7)  # two of three still commit

        # The victim restarts from its stores and converges (same bytes everywhere).
        brokers[victim].up()
        alive.add(victim)
        await poll("the restarted broker converges", lambda: converged(brokers, alive))
        for g in GROUPS:
            data = {brokers[b].read_all(g) for b in alive}
            assert len(data) == 1
        for b in NODES:
            assert set(brokers[b].store.load_all()) == set(GROUPS)  # one entry per group
        # Every replica applied the same committed entries, each once per run.
        for g in GROUPS:
            bases = [e.base for e in brokers[min(alive - {victim})].applied[g]]
            assert bases == sorted(set(bases))
    finally:
        for b in alive:
            await brokers[b].driver.stop()
            brokers[b].scheduler.shutdown()


def test_three_brokers_elect_replicate_fail_over_and_rejoin() -> None:
    asyncio.run(scenario())


async def stopped_waiters() -> None:
    net = Net()
    brokers = {n: Broker(n, net) for n in NODES}
    try:
        await poll("leaders", lambda: leaders(brokers, set(NODES)) is not None)
        lead = leaders(brokers, set(NODES))
        assert lead is not None
        # The followers stop: the entry can be persisted at the leader, never committed.
        for b in NODES:
            if b != lead[3]:
                await brokers[b].kill()
        d = brokers[lead[3]].driver
        entry = d.propose(3, payload(1, 1), 1)
        assert await d.wait_persisted(3, entry) == entry
        committed = asyncio.create_task(d.wait_committed(3, entry))
        await asyncio.sleep(5 * TICK)
        assert not committed.done()
        await d.stop()
        with pytest.raises(ClosedError):
            await committed
        with pytest.raises(ClosedError):
            d.propose(3, b"", 1)
    finally:
        for b in brokers.values():
            await b.driver.stop()
            b.scheduler.shutdown()


def test_stop_fails_the_waiters_with_closed_error() -> None:
    asyncio.run(stopped_waiters())


async def malformed() -> None:
    net = Net()
    b = Broker(1, net)
    try:
        # For another broker, and naming a group not here: logged, never raised.
        b.driver.deliver(Envelope(2, 3))
        b.driver.deliver(Envelope(2, 1, beats=(Beat(999, 1, 0),)))
        start = b.driver.ticks
        await poll("ticks after bad envelopes", lambda: b.driver.ticks >= start + 3)
        assert b.driver._task is not None and not b.driver._task.done()
    finally:
        await b.driver.stop()
        b.scheduler.shutdown()


def test_malformed_envelopes_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    asyncio.run(malformed())
    refused = [r for r in caplog.records if "refused a message" in r.getMessage()]
    assert len(refused) == 1  # at most one line per second


async def reset_before_apply() -> None:
    net = Net()
    brokers = {n: Broker(n, net) for n in NODES}
    alive = set(NODES)
    try:
        await poll("leaders", lambda: leaders(brokers, alive) is not None)
        lead = leaders(brokers, alive)
        assert lead is not None
        leader = brokers[lead[0]]
        laggard = next(b for b in NODES if b != lead[0])
        await brokers[laggard].kill()
        alive.discard(laggard)
        lag_end = brokers[laggard].logs[0].log_end
        for n in range(5):
            entry = leader.driver.propose(0, payload(n, 2), 2)
            await leader.driver.wait_committed(0, entry)
        start = await leader.driver.advance_start(0, leader.logs[0].log_end)
        assert start > lag_end
        brokers[laggard].events.clear()
        brokers[laggard].up()
        alive.add(laggard)
        entry = leader.driver.propose(0, payload(9, 1), 1)
        await leader.driver.wait_committed(0, entry)

        def applied_after_reset() -> bool:
            return any(ev == ("apply", 0, entry.base) for ev in brokers[laggard].events)

        await poll("the laggard applies past the reset", applied_after_reset)
        events = [ev for ev in brokers[laggard].events if ev[1] == 0]
        resets = [i for i, ev in enumerate(events) if ev[0] == "reset"]
        assert resets and events[resets[0]] == ("reset", 0, start)
        # Told of the reset before it is handed any entry at or past the new start.
        assert all(ev[2] < start for ev in events[: resets[0]] if ev[0] == "apply")
        assert all(ev[2] >= start for ev in events[resets[0]:] if ev[0] == "apply")
    finally:
        for b in alive:
            await brokers[b].driver.stop()
            brokers[b].scheduler.shutdown()


def test_a_log_reset_is_told_before_the_entries_after_it_are_applied() -> None:
    asyncio.run(reset_before_apply())
