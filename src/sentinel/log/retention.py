"""Retention policy: which batches at the head of a log to delete. Pure: the partition
log feeds it the head batches in offset order (lazily) and deletes what it returns.

Rules (Kafka's ``cleanup.policy=delete`` at batch granularity, where Kafka works per
segment):

- by time (``retention_ms >= 0``): a batch whose maxTimestamp is older than
  ``now - retention_ms``;
- by size (``retention_bytes >= 0``): the head batch while the log holds more than
  ``retention_bytes``, so that the log ends at or under the limit;
- only from the head, stopping at the first batch that neither rule deletes; the newest
  batch is never offered (it holds the log end, as Kafka keeps the active segment).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """What retention needs to know of a stored batch."""

    base_offset: int
    next_offset: int
    max_timestamp: int
    size: int


def plan_retention(
    head: Iterable[BatchInfo],
    *,
    now_ms: int,
    retention_ms: int,
    retention_bytes: int,
    total_bytes: int,
) -> list[BatchInfo]:
    """The head batches to delete, oldest first; ``head`` must exclude the newest batch.

    Consumes ``head`` only as far as it deletes (plus the one batch it keeps)."""
    doomed: list[BatchInfo] = []
    if retention_ms < 0 and retention_bytes < 0:
        return doomed
    horizon = now_ms - retention_ms
    remaining = total_bytes
    for batch in head:
        too_old = retention_ms >= 0 and batch.max_timestamp < horizon
        too_big = 0 <= retention_bytes < remaining
        if not (too_old or too_big):
            break
        doomed.append(batch)
        remaining -= batch.size
    return doomed


@dataclass(frozen=True, slots=True)
class RetentionMemo:
    """What a retention pass that deleted nothing saw, so the next passes can skip the
    scan while nothing it depended on has changed (a broker of thousands of idle
    partitions otherwise scans every head every interval).

    Valid while the log's stored batches changed only by appends (``generation``), its
    start and ``retention_ms`` are the same, and the size rule does not fire; then:
    with a head batch seen (``head_timestamp``), until that batch is old enough for the
    time rule (appends land behind it, and only the head is ever deleted); with none
    seen (at most the newest batch, or the head not yet under the high watermark),
    until the newest batch or the high watermark moves."""

    generation: int
    log_start: int
    retention_ms: int
    high_watermark: int
    last_base: int
    head_timestamp: int | None = None

    def holds(self, now: RetentionMemo, now_ms: int, retention_bytes: int, size: int) -> bool:
        """Whether a pass now (``now``: the same figures, today's) would delete nothing."""
        if (
            now.generation != self.generation
            or now.log_start != self.log_start
            or now.retention_ms != self.retention_ms
            or 0 <= retention_bytes < size
        ):
            return False
        if self.head_timestamp is None:
            return now.high_watermark == self.high_watermark and now.last_base == self.last_base
        return self.retention_ms < 0 or self.head_timestamp >= now_ms - self.retention_ms


class FirstSeen:
    """An iterator of batches that remembers the first one it gave."""

    def __init__(self, batches: Iterator[BatchInfo]) -> None:
        self._batches = batches
        self.first: BatchInfo | None = None

    def __iter__(self) -> FirstSeen:
        return self

    def __next__(self) -> BatchInfo:
        batch = next(self._batches)
        if self.first is None:
            self.first = batch
        return batch
