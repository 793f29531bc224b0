"""Idle CPU of the multi-Raft driver: three brokers of N groups on one event loop
(MemFS, in-process envelopes), tick 0.1 s, the cluster's partition Raft config
(``cluster.replica_hosting.PARTITION_RAFT``); once every group has a leader, CPU
(process_time) over a window, per broker.

    PYTHONPATH=src python bench/bench_multiraft_idle.py [groups] [seconds]

``WIRE=1``: every envelope is encoded and decoded (``cluster.wire``) on its way, as
between real brokers. ``PROFILE=1``: a cProfile of the window.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import random
import sys
import time
from collections.abc import Callable

from sentinel.clock import ManualClock
from sentinel.cluster.replica_hosting import PARTITION_RAFT
from sentinel.cluster.wire import FrameDecoder, encode
from sentinel.fs import MemFS
from sentinel.log.config import TopicConfig
from sentinel.log.partition_log import PartitionLog
from sentinel.log.types import LogOptions
from sentinel.raft.core import RaftCore
from sentinel.raft.hard_state_store import HardStateStore
from sentinel.raft.multi import Envelope, GroupSet
from sentinel.raft.multi_driver import MultiRaftDriver
from sentinel.raft.partition_log_adapter import PartitionRaftLog
from sentinel.raft.state import Role
from sentinel.storage.options import EngineOptions
from sentinel.storage.sync_scheduler import SyncScheduler
from sentinel.storage.wal import SyncMode, WalOptions

NODES = (1, 2, 3)


async def main(groups: int, seconds: float) -> None:
    drivers: dict[int, MultiRaftDriver] = {}
    scheduler = SyncScheduler(2)
    engine = EngineOptions(
        background=False, memtable_bytes=64 * 1024, block_cache_bytes=64 * 1024,
        wal=WalOptions(sync_mode=SyncMode.NONE), sync_scheduler=scheduler,
    )
    cfg = PARTITION_RAFT
    wire = bool(os.environ.get("WIRE"))
    decoder = FrameDecoder(1 << 30)

    def send(env: Envelope) -> None:
        if wire:
            (frame,) = decoder.feed(b"".join(encode(env)))
            assert isinstance(frame, Envelope)
            env = frame
        drivers[env.dst].deliver(env)

    def sender(src: int) -> Callable[[Envelope], None]:
        return send

    for n in NODES:
        fs, clock = MemFS(), ManualClock()
        store = HardStateStore.open(fs, "/raft-state", options=EngineOptions(background=False))
        d = MultiRaftDriver(GroupSet(n), sender(n), store, tick_seconds=0.1)
        rng = random.Random(n)
        for g in range(groups):
            plog = PartitionLog.open(fs, f"/p{g}", TopicConfig(), clock, engine,
                                     options=LogOptions(auto_high_watermark=False))
            log = PartitionRaftLog(plog, store.view(g), clock)
            core = RaftCore(n, frozenset(NODES), log, random.Random(rng.getrandbits(32)),
                            hard_state=log.hard_state, config=cfg)
            d.add_group(g, core, log)
        drivers[n] = d
    for d in drivers.values():
        d.start()
    t0 = time.monotonic()
    while True:
        led = sum(1 for d in drivers.values() for g in range(groups)
                  if d.core(g).role is Role.LEADER)
        if led == groups:
            break
        await asyncio.sleep(0.2)
    print(f"{groups} groups x 3 brokers: all led after {time.monotonic() - t0:.1f} s")
    await asyncio.sleep(2.0)  # the last commits and hard states settle
    sent0 = sum(d.sent for d in drivers.values())
    profile = cProfile.Profile() if os.environ.get("PROFILE") else None
    c0, w0 = time.process_time(), time.monotonic()
    if profile is not None:
        profile.enable()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - c0, time.monotonic() - w0
    if profile is not None:
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)
    sent = sum(d.sent for d in drivers.values()) - sent0
    print(f"idle: {cpu / wall * 100:.1f}% of a core for 3 brokers, "
          f"{cpu / wall * 100 / 3:.1f}% per broker; {sent / wall:.0f} envelopes/s in all")
    for d in drivers.values():
        await d.stop()
    scheduler.shutdown()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000,
                     float(sys.argv[2]) if len(sys.argv) > 2 else 3.0))
