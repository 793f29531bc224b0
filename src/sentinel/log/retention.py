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

from collections.abc import Iterable
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
