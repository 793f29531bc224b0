"""A fetch over many partitions returns to the event loop between slices of them.

Each partition's read costs the loop ~5-15 us: one fetch naming 10,000 partitions held
it for ~100 ms at once, and every other connection's requests waited behind it. Here
partitions stand in for real ones (their reads only note the time), and a task that
ticks whenever the loop is free shows where the fetch let go.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from sentinel.broker.fetch import READ_SLICE, Lookup, fetch_many
from sentinel.broker.outcomes import FetchPosition
from sentinel.broker.signal import Signal
from sentinel.clock import SystemClock
from sentinel.log.types import ReadResult


class QuietPartition:
    """A caught-up partition: no records at its end (offset 5)."""

    def __init__(self, reads: list[int], ticks: list[int]) -> None:
        self.hw_signal = Signal()
        self.high_watermark = 5
        self.log_start_offset = 0
        self.log = SimpleNamespace(files_open=True)
        self._reads, self._ticks = reads, ticks

    def read(self, offset: int, max_bytes: int) -> ReadResult:
        self._reads.append(self._ticks[0])
        return ReadResult((), 5, 0, 5, offset)


async def test_a_fetch_of_many_partitions_lets_others_run_between_slices() -> None:
    reads: list[int] = []
    ticks = [0]
    partitions = {(f"t{i // 100}", i % 100): QuietPartition(reads, ticks)
                  for i in range(READ_SLICE * 3 + 10)}
    lookup = cast(Lookup, lambda topic, index: partitions[(topic, index)])
    positions = [FetchPosition(t, p, 5) for t, p in partitions]
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            ticks[0] += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    outcomes = await fetch_many(lookup, positions, cast(Any, SystemClock()), min_bytes=0)
    done.set()
    await task
    assert [(o.topic, o.partition) for o in outcomes] == [(p.topic, p.partition)
                                                          for p in positions]
    # Within a slice the loop is held (one tick value); between slices others ran.
    slices = [reads[i:i + READ_SLICE] for i in range(0, len(reads), READ_SLICE)]
    assert len(slices) == 4
    assert all(len(set(s)) == 1 for s in slices)
    assert [s[0] for s in slices] == sorted({s[0] for s in slices})  # each later
