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

__all__ = ["DEFAULT_PARTITION_BYTES", "DEFAULT_RESPONSE_BYTES", "fetch_many", "read_once"]

DEFAULT_PARTITION_BYTES = 1024 * 1024
"""A partition's limit when the request gives none (Kafka's max.partition.fetch.bytes)."""
DEFAULT_RESPONSE_BYTES = 50 * 1024 * 1024
"""The response's limit when the request gives none (Kafka's fetch.max.bytes)."""

Lookup = Callable[[str, int], Partition]


def read_once(
    lookup: Lookup, positions: Sequence[FetchPosition], max_bytes: int
) -> tuple[tuple[FetchOutcome, ...], list[tuple[Signal, int]], int, bool]:
    """Read every position once: (outcomes in request order, the signals read with the
    versions seen before reading, the bytes returned, whether any partition failed)."""
    outcomes: list[FetchOutcome] = []
    seen: list[tuple[Signal, int]] = []
    total = 0
    failed = False
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
            failed = True
            outcomes.append(FetchOutcome(pos.topic, pos.partition, (), -1, -1, pos.offset, exc))
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
    return tuple(outcomes), seen, total, failed


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
    for pos in positions:
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
        outcomes, seen, total, failed = read_once(lookup, positions, max_bytes)
        remaining = deadline - clock.monotonic()
        if failed or total >= min_bytes or remaining <= 0:
            return outcomes
        await wait_any(seen, remaining)
