"""Idempotent-producer state: the last batches of every producer, and the sequence rules.

Kafka's rules (``ProducerStateManager`` / ``ProducerAppendInfo``), applied per batch:

- an epoch older than the producer's current one is a zombie: ``InvalidProducerEpochError``;
- a newer epoch starts its sequences at 0 (any other first sequence is out of order);
- within the current epoch, a batch whose (first sequence, last sequence) equals one of
  the producer's last ``MAX_CACHED_BATCHES`` batches is a retried duplicate: the caller
  answers with the original offsets and stores nothing;
- otherwise the first sequence must follow the producer's last one (wrapping from
  2^31 - 1 to 0), else ``OutOfOrderSequenceError``;
- a producer the log does not know (new, or expired) may start at any sequence.

Values only: ``check_append`` and ``apply_batch`` are pure; ``ProducerStateTable`` is a
plain dict wrapper the partition log owns (and guards with its write lock).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sentinel.log.errors import InvalidProducerEpochError, OutOfOrderSequenceError
from sentinel.record import BatchHeader, TimestampType

MAX_CACHED_BATCHES = 5
INT32_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class ProducerBatch:
    """What the log remembers of one of a producer's recent batches."""

    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int
    #: The batch's LogAppendTime, or -1 for CreateTime (what a duplicate is answered with).
    log_append_time_ms: int


@dataclass(frozen=True, slots=True)
class ProducerEntry:
    """One producer: its epoch, its last batches (oldest first, never empty), and the
    greatest batch timestamp seen (producer expiry compares it with the clock, as Kafka)."""

    producer_id: int
    epoch: int
    batches: tuple[ProducerBatch, ...]
    last_timestamp: int

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq


def last_sequence(base_sequence: int, last_offset_delta: int) -> int:
    """The sequence of a batch's last record (sequences wrap after 2^31 - 1)."""
    if base_sequence > INT32_MAX - last_offset_delta:
        return last_offset_delta - (INT32_MAX - base_sequence) - 1
    return base_sequence + last_offset_delta


def next_sequence(sequence: int) -> int:
    return 0 if sequence == INT32_MAX else sequence + 1


def check_append(entry: ProducerEntry | None, header: BatchHeader) -> ProducerBatch | None:
    """Check a producer's batch against its state: the original batch if it is a
    duplicate, None if it may be appended; raises if it may not."""
    if entry is None:
        return None
    epoch = header.producer_epoch
    first = header.base_sequence
    if epoch < entry.epoch:
        raise InvalidProducerEpochError(header.producer_id, entry.epoch, epoch)
    if epoch > entry.epoch:
        if first != 0:
            raise OutOfOrderSequenceError(header.producer_id, 0, first)
        return None
    last = last_sequence(first, header.last_offset_delta)
    for cached in entry.batches:
        if cached.first_seq == first and cached.last_seq == last:
            return cached
    expected = next_sequence(entry.last_seq)
    if first != expected:
        raise OutOfOrderSequenceError(header.producer_id, expected, first)
    return None


def apply_batch(
    entry: ProducerEntry | None, header: BatchHeader, base_offset: int, max_timestamp: int
) -> ProducerEntry:
    """The producer's state after its batch was stored at ``base_offset`` (no checks:
    also used to replay the log, where the batches were checked when appended)."""
    log_append_time = (
        max_timestamp if header.timestamp_type == TimestampType.LOG_APPEND_TIME else -1
    )
    batch = ProducerBatch(
        first_seq=header.base_sequence,
        last_seq=last_sequence(header.base_sequence, header.last_offset_delta),
        base_offset=base_offset,
        last_offset=base_offset + header.last_offset_delta,
        log_append_time_ms=log_append_time,
    )
    if entry is None or entry.epoch != header.producer_epoch:
        return ProducerEntry(header.producer_id, header.producer_epoch, (batch,), max_timestamp)
    return ProducerEntry(
        entry.producer_id,
        entry.epoch,
        (*entry.batches[1 - MAX_CACHED_BATCHES :], batch)
        if len(entry.batches) >= MAX_CACHED_BATCHES
        else (*entry.batches, batch),
        max(entry.last_timestamp, max_timestamp),
    )


class ProducerStateTable:
    """Producer id -> ``ProducerEntry``. Not thread-safe: the log's write lock guards it."""

    __slots__ = ("_entries",)

    def __init__(self, entries: dict[int, ProducerEntry] | None = None) -> None:
        self._entries: dict[int, ProducerEntry] = dict(entries) if entries else {}

    def get(self, producer_id: int) -> ProducerEntry | None:
        return self._entries.get(producer_id)

    def put(self, entry: ProducerEntry) -> None:
        self._entries[entry.producer_id] = entry

    def replay(self, header: BatchHeader) -> None:
        """Apply a stored batch (its header carries its own base offset)."""
        if header.producer_id >= 0:
            entry = self._entries.get(header.producer_id)
            self.put(apply_batch(entry, header, header.base_offset, header.max_timestamp))

    def expire(self, now_ms: int, expiration_ms: int) -> int:
        """Forget producers whose last batch timestamp is ``expiration_ms`` old; how many."""
        if expiration_ms < 0:
            return 0
        horizon = now_ms - expiration_ms
        stale = [pid for pid, e in self._entries.items() if e.last_timestamp <= horizon]
        for pid in stale:
            del self._entries[pid]
        return len(stale)

    def copy(self) -> ProducerStateTable:
        return ProducerStateTable(self._entries)

    def __iter__(self) -> Iterator[ProducerEntry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.producer_id))

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ProducerStateTable) and self._entries == other._entries

    __hash__ = None  # type: ignore[assignment]
