"""What the consumer knows of one assigned partition: ``PartitionFetch``, and
``FetchConfig``, how it fetches. Guarded by the ``Fetcher``'s lock, except the fields
each side keeps for itself (noted)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from sentinel.client.types import ConsumerRecord, TopicPartition

__all__ = ["FetchConfig", "PartitionFetch"]


@dataclass(frozen=True, slots=True)
class FetchConfig:
    """How the fetcher reads. See ``Consumer`` for the meaning."""

    fetch_max_bytes: int
    fetch_max_wait_ms: int
    auto_offset_reset: str  # earliest | latest | none
    request_timeout_ms: int
    retry_backoff_ms: float


@dataclass(slots=True, eq=False)
class PartitionFetch:
    """The fetch state of one assigned partition (guarded by the fetcher's lock)."""

    tp: TopicPartition
    position: int | None = None  # None: to be resolved (committed offset or reset)
    fetch_offset: int = 0
    generation: int = 0
    chunks: deque[bytes] = field(default_factory=deque)  # raw fetch answers
    buffered: int = 0  # bytes in ``chunks``
    # The collector's own state (no lock): valid while ``decode_gen == generation``.
    decode_gen: int = -1
    batches: Iterator[memoryview] | None = None  # batches of the chunk being read
    records: list[ConsumerRecord] = field(default_factory=list)  # decoded, not returned
    index: int = 0  # next of ``records`` to return
    batch_end: int = -1  # the offset after the batch ``records`` came from
    high_watermark: int = -1
    log_start_offset: int = -1
    paused: bool = False
    error: BaseException | None = None  # raised by the next poll
    # The driver's own state (the loop only).
    call_key: int = -1  # the call in flight fetching it at ``call_generation`` (-1: none)
    call_generation: int = -1
    job: asyncio.Task[None] | None = None  # recovering from an error
    resolving: bool = False  # in a batch of positions being resolved

    @property
    def fetchable(self) -> bool:
        """Whether the driver may fetch it (given room in its buffer) or resolve its
        position (lock held): not paused, no pending error, recovery or resolution."""
        return not (
            self.paused or self.error is not None or self.job is not None or self.resolving
        )

    def covered_by(self) -> int | None:
        """The key of the call fetching it at its current generation, if any."""
        if self.call_key < 0 or self.call_generation != self.generation:
            return None
        return self.call_key

    def drop_buffer(self) -> None:
        """Forget the fetched data (lock held); the collector sees the new generation."""
        self.chunks.clear()
        self.buffered = 0

    def reset_decoding(self, generation: int) -> None:
        """The collector starts over for ``generation`` (the collector's thread)."""
        self.decode_gen = generation
        self.batches = None
        self.records = []
        self.index = 0
        self.batch_end = -1
