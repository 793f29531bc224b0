"""A fetch over many partitions, in Kafka's shape.

Each partition is read from its position up to its own byte limit, and the response up
to its limit: the first partition that has a batch always returns at least one whole
batch (so a batch larger than every limit still gets through, as KIP-74 says); after
that, a partition's batches that would pass the response limit are left for the next
fetch. The fetch answers once ``min_bytes`` are there over all partitions, once any
partition has an error, or once ``max_wait`` passes; meanwhile it waits on the high
watermark signals of every partition it reads (``signal.wait_any``), so the append that
makes a batch visible wakes it, and nothing earlier does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from sentinel.broker.outcomes import FetchOutcome, FetchPosition
from sentinel.broker.partition import Partition
from sentinel.broker.signal import Signal, wait_any
from sentinel.clock import Clock
from sentinel.errors import SentinelError

__all__ = ["DEFAULT_PARTITION_BYTES", "DEFAULT_RESPONSE_BYTES", "READ_SLICE", "fetch_many"]

DEFAULT_PARTITION_BYTES = 1024 * 1024
"""A partition's limit when the request gives none (Kafka's max.partition.fetch.bytes)."""
DEFAULT_RESPONSE_BYTES = 50 * 1024 * 1024
"""The response's limit when the request gives none (Kafka's fetch.max.bytes)."""

Lookup = Callable[[str, int], Partition]


#: Positions read between two returns to the event loop. A partition's read costs ~5-15
#: us of the loop, so a fetch naming 10,000 partitions held it ~100 ms at once (every
#: other connection's requests waited behind it); in slices, others run in between.
READ_SLICE = 1024


async def _read_in_slices(
    lookup: Lookup, positions: Sequence[FetchPosition], max_bytes: int
) -> _Reading:
    """Read every position once, returning to the event loop every ``READ_SLICE``
    positions: the outcomes in request order, the signals read with the versions seen
    before reading (a wait for any of them to move), the bytes returned, whether any
    partition failed."""
    reading = _Reading(max_bytes)
    for start in range(0, len(positions), READ_SLICE):
        if start:
            await asyncio.sleep(0)
        reading.read(lookup, positions[start:start + READ_SLICE])
    return reading


class _Reading:
    """One pass over a fetch's positions, in one call or in slices."""

    __slots__ = ("failed", "max_bytes", "outcomes", "seen", "total")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.outcomes: list[FetchOutcome] = []
        self.seen: list[tuple[Signal, int]] = []
        self.total = 0
        self.failed = False

    def read(self, lookup: Lookup, positions: Sequence[FetchPosition]) -> None:
        outcomes, seen, max_bytes = self.outcomes, self.seen, self.max_bytes
        total = self.total
        for pos in positions:
            try:
                part = lookup(pos.topic, pos.partition)
                seen.append((part.hw_signal, part.hw_signal.version))
                remaining = max_bytes - total
                if total and remaining <= 0:
                    outcomes.append(_untouched(pos, part))
                    continue
                limit = pos.max_bytes if pos.max_bytes > 0 else DEFAULT_PARTITION_BYTES
                result = part.read(pos.offset, min(limit, remaining))
            except SentinelError as exc:
                self.failed = True
                outcomes.append(
                    FetchOutcome(pos.topic, pos.partition, (), -1, -1, pos.offset, exc))
                continue
            size = sum(len(b) for b in result.batches)
            if total and size > remaining:
                outcomes.append(_untouched(pos, part))
                continue
            total += size
            outcomes.append(
                FetchOutcome(
                    pos.topic,
                    pos.partition,
                    result.batches,  # not joined: the Kafka door writes them as they are
                    result.high_watermark,
                    result.log_start_offset,
                    result.next_offset,
                )
            )
        self.total = total


def _untouched(pos: FetchPosition, part: Partition) -> FetchOutcome:
    """A partition left out because the response is full."""
    return FetchOutcome(
        pos.topic, pos.partition, (), part.high_watermark, part.log_start_offset, pos.offset
    )


async def open_files(lookup: Lookup, positions: Sequence[FetchPosition]) -> None:
    """Open, in worker threads, the logs of ``positions`` that are not open yet and have
    records to read at the position, so that the reads do no file IO on the event loop
    (a read at the high watermark needs no file: ``PartitionLog.read``); a failure is
    left for the read to report."""
    waits = []
    for i, pos in enumerate(positions):
        if i and not i % READ_SLICE:
            await asyncio.sleep(0)  # as the reads: other requests run in between
        try:
            part = lookup(pos.topic, pos.partition)
        except SentinelError:
            continue
        # The offset first: a consumer that is caught up (most partitions of a quiet
        # fetch) needs no file, and asking whether files are open costs more.
        if pos.offset < part.high_watermark and not part.log.files_open:
            waits.append(part.open_files())
    if waits:
        await asyncio.gather(*waits, return_exceptions=True)


async def fetch_many(
    lookup: Lookup,
    positions: Sequence[FetchPosition],
    clock: Clock,
    *,
    max_wait_ms: int = 0,
    min_bytes: int = 1,
    max_bytes: int = DEFAULT_RESPONSE_BYTES,
) -> tuple[FetchOutcome, ...]:
    """Fetch ``positions`` (see the module docstring); never raises for a partition:
    its error is in its outcome."""
    if max_bytes <= 0:
        max_bytes = DEFAULT_RESPONSE_BYTES
    deadline = clock.monotonic() + max(0, max_wait_ms) / 1000.0
    await open_files(lookup, positions)
    while True:
        reading = await _read_in_slices(lookup, positions, max_bytes)
        remaining = deadline - clock.monotonic()
        if reading.failed or reading.total >= min_bytes or remaining <= 0:
            return tuple(reading.outcomes)
        await wait_any(reading.seen, remaining)
