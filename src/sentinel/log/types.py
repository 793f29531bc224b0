"""The partition log's values: its options and what its calls return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sentinel.errors import InvalidArgumentError

MiB = 1024 * 1024
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class LogOptions:
    """How a partition log behaves beyond its topic config. Defaults are a broker's."""

    #: Write a checkpoint after this many bytes of appends (bounds the replay on open).
    checkpoint_interval_bytes: int = 64 * MiB
    #: Older checkpoints kept, so a truncation can roll producer state back cheaply.
    checkpoints_kept: int = 3
    #: Write a time-index entry every this many bytes of appends.
    time_index_interval_bytes: int = 4 * MiB
    #: Key compaction drops a latest-for-its-key tombstone once its timestamp is older.
    delete_retention_ms: int = DAY_MS
    #: Forget a producer whose newest batch timestamp is this old (-1: never).
    producer_expiration_ms: int = DAY_MS
    #: A compaction pass stops its offset map at this many keys (the rest waits).
    compaction_max_keys: int = 1_000_000
    #: Compaction installs its rewrites in engine writes of about this many bytes.
    compaction_write_bytes: int = 16 * MiB
    #: At close, skip the checkpoint when fewer bytes than this were appended since the
    #: last one: the next open replays their batch headers (cheap), and a broker of
    #: thousands of partitions written a little each stops without a checkpoint write
    #: and its fsync for each.
    close_checkpoint_min_bytes: int = 1 * MiB
    #: Single broker: the high watermark follows durable appends. False: only
    #: ``set_high_watermark`` moves it (replication).
    auto_high_watermark: bool = True

    def __post_init__(self) -> None:
        if self.checkpoint_interval_bytes < 1 or self.time_index_interval_bytes < 1:
            raise InvalidArgumentError("checkpoint and time-index intervals must be positive")
        if self.checkpoints_kept < 1:
            raise InvalidArgumentError("checkpoints_kept must be at least 1")
        if self.delete_retention_ms < 0 or self.compaction_max_keys < 1:
            raise InvalidArgumentError("delete_retention_ms >= 0 and compaction_max_keys >= 1")
        if self.compaction_write_bytes < 1:
            raise InvalidArgumentError("compaction_write_bytes must be positive")


class AppendResult(NamedTuple):
    """Where one appended batch went (a named tuple: one per produced batch)."""

    base_offset: int
    last_offset: int
    #: The LogAppendTime stamped on the batch, or -1 for CreateTime topics.
    log_append_time_ms: int
    #: The WAL entry to ``sync_to`` (for a duplicate: the newest, covering the original).
    lsn: int
    #: A retried batch already stored: the offsets are the original's, nothing was written.
    duplicate: bool


@dataclass(frozen=True, slots=True)
class ReadResult:
    #: Whole stamped batches, in offset order, as a fetch response carries them: the
    #: stored bytes or views of them (not copies); a response joins them once.
    batches: tuple[bytes | memoryview, ...]
    high_watermark: int
    log_start_offset: int
    log_end_offset: int
    #: The offset after the last batch returned (the requested offset if none).
    next_offset: int

    @property
    def records(self) -> bytes:
        """The batches joined: a fetch response's records field."""
        return b"".join(self.batches)

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.batches)
