"""The append path's pure part: validate a producer's batch (its records walked too,
``record.framing``), check its producer's sequence, and stamp it, without touching the
log (``stage``). The partition log writes what ``stage`` returns and installs the
producer entries after the write.

Stamping copies the batch once (``record.stamped``): the base offset and leader epoch
are written into a copy of the 61-byte header, joined once with the records (both
fields lie outside the CRC, which is kept); for a LogAppendTime topic it also sets
attributes bit 3 and maxTimestamp and recomputes the CRC in the same single copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sentinel.errors import (
    InvalidArgumentError,
    InvalidRecordError,
    TransactionalIdAuthorizationFailedError,
)
from sentinel.log.config import TopicConfig
from sentinel.log.producer_state import (
    ProducerEntry,
    ProducerStateTable,
    apply_batch,
    check_append,
)
from sentinel.record import BatchHeader, stamped, validate_batch
from sentinel.record.batch import TRANSACTIONAL_BIT
from sentinel.record.framing import check_records

Buffer = bytes | bytearray | memoryview
Checked = tuple[Buffer, BatchHeader]


class Staged(NamedTuple):
    """One batch of an append, ready to write (or a duplicate: ``value`` is None). A
    named tuple: one is made per produced batch, and a tuple is built in a fifth of a
    frozen dataclass's time."""

    base_offset: int
    last_offset: int
    log_append_time_ms: int
    value: bytes | None
    max_timestamp: int = -1
    entry: ProducerEntry | None = None


def validate_produce(batch: Buffer, config: TopicConfig, max_value_bytes: int) -> Checked:
    """Check a producer's batch as Kafka's broker (LogValidator) does: the header, size
    and CRC (``validate_batch``), then the records themselves, inflated if compressed
    (``check_records``: exactly ``count`` well-framed records, offset deltas in order);
    compacted topics need keys. Both doors come through here.

    A transactional batch is refused with ``TransactionalIdAuthorizationFailedError``,
    Kafka's answer to one in a produce without a transactional id: no produce here has
    one (the doors refuse a produce that names one: no transactions are served)."""
    data = batch if isinstance(batch, bytes) else memoryview(batch).cast("B")
    limit = min(config.max_message_bytes, max_value_bytes)
    header = validate_batch(data, max_batch_bytes=limit)
    if header.attributes & TRANSACTIONAL_BIT:
        raise TransactionalIdAuthorizationFailedError(
            "a transactional record batch needs a produce with a transactional id "
            "(transactions are not supported)"
        )
    null_keys = check_records(data, header)
    if null_keys and config.cleanup_compact:
        raise InvalidRecordError("a compacted topic cannot accept a record without key")
    return data, header


def stage(
    checked: Sequence[Checked],
    producers: ProducerStateTable,
    log_end: int,
    *,
    leader_epoch: int,
    append_time_ms: int | None,
    replicated: bool,
) -> list[Staged]:
    """Assign offsets from ``log_end``, check producer sequences and stamp each batch.

    Raises (changing nothing) on the first batch a producer may not append.
    ``replicated``: the batches come stamped from a leader; their base offsets must
    follow on from ``log_end`` and they are stored as they are."""
    overlay: dict[int, ProducerEntry] = {}
    staged: list[Staged] = []
    base = log_end
    for data, header in checked:
        pid = header.producer_id
        entry: ProducerEntry | None = None
        if pid >= 0:
            entry = overlay.get(pid) or producers.get(pid)
            if not replicated:
                original = check_append(entry, header)
                if original is not None:
                    staged.append(
                        Staged(
                            original.base_offset,
                            original.last_offset,
                            original.log_append_time_ms,
                            None,
                        )
                    )
                    continue
        if replicated:
            if header.base_offset != base:
                raise InvalidArgumentError(
                    f"replicated batch at {header.base_offset} does not start at the "
                    f"log end {base}"
                )
            value = bytes(data)
            max_ts = header.max_timestamp
        else:
            value = stamped(data, base, leader_epoch, append_time_ms)
            max_ts = header.max_timestamp if append_time_ms is None else append_time_ms
        new_entry = None
        if pid >= 0:
            new_entry = overlay[pid] = apply_batch(entry, header, base, max_ts)
        last = base + header.last_offset_delta
        lat = -1 if append_time_ms is None or replicated else append_time_ms
        staged.append(Staged(base, last, lat, value, max_ts, new_entry))
        base = last + 1
    return staged
