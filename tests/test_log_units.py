"""The partition log's pure parts: producer sequence rules, the checkpoint format, the
retention plan, the time-index lookup and the high watermark."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.errors import CorruptionError, DiskError, InvalidArgumentError
from sentinel.log.errors import InvalidProducerEpochError, OutOfOrderSequenceError
from sentinel.log.high_watermark import HighWatermark
from sentinel.log.layout import (
    Checkpoint,
    checkpoint_key,
    data_key,
    decode_checkpoint,
    encode_checkpoint,
    key_offset,
    time_index_key,
    time_index_start,
)
from sentinel.log.producer_state import (
    INT32_MAX,
    ProducerBatch,
    ProducerEntry,
    ProducerStateTable,
    apply_batch,
    check_append,
    last_sequence,
    next_sequence,
)
from sentinel.log.retention import BatchInfo, plan_retention
from sentinel.log.types import LogOptions
from sentinel.record import BatchHeader, parse_header
from sentinel.record.builder import build_batch


def header(pid: int, epoch: int, seq: int, count: int = 2, base: int = 0) -> BatchHeader:
    data = build_batch(
        [(b"k", b"v", (), 1000)] * count,
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
        base_offset=base,
    )
    return parse_header(data)


# -------------------------------------------------------------- producer state


def test_sequences_wrap_as_kafkas() -> None:
    assert last_sequence(10, 4) == 14
    assert last_sequence(INT32_MAX, 0) == INT32_MAX
    assert last_sequence(INT32_MAX, 1) == 0
    assert last_sequence(INT32_MAX - 1, 3) == 1
    assert next_sequence(INT32_MAX) == 0
    assert next_sequence(5) == 6


def test_check_append_rules() -> None:
    assert check_append(None, header(1, 0, 77)) is None  # unknown producer: any sequence
    entry = apply_batch(None, header(1, 3, 0), 0, 1000)
    entry = apply_batch(entry, header(1, 3, 2), 2, 1000)
    assert check_append(entry, header(1, 3, 4)) is None
    original = check_append(entry, header(1, 3, 2))
    assert original == ProducerBatch(2, 3, 2, 3, -1)
    with pytest.raises(OutOfOrderSequenceError):
        check_append(entry, header(1, 3, 2, count=1))  # same first, different last
    with pytest.raises(OutOfOrderSequenceError):
        check_append(entry, header(1, 3, 5))
    with pytest.raises(InvalidProducerEpochError):
        check_append(entry, header(1, 2, 4))
    assert check_append(entry, header(1, 4, 0)) is None
    with pytest.raises(OutOfOrderSequenceError):
        check_append(entry, header(1, 4, 4))


def test_sequence_wraps_through_the_check() -> None:
    entry = apply_batch(None, header(1, 0, INT32_MAX - 1, count=3), 0, 1)
    assert entry.last_seq == 0
    assert check_append(entry, header(1, 0, 1)) is None


def test_entry_keeps_the_last_five_batches_and_a_new_epoch_resets() -> None:
    entry = None
    for i in range(8):
        entry = apply_batch(entry, header(9, 0, 2 * i), 2 * i, 1000 + i)
    assert entry is not None
    assert [b.first_seq for b in entry.batches] == [6, 8, 10, 12, 14]
    assert entry.last_timestamp == 1007
    bumped = apply_batch(entry, header(9, 1, 0), 16, 5)
    assert bumped.epoch == 1 and len(bumped.batches) == 1


def test_table_expiry() -> None:
    table = ProducerStateTable()
    table.put(apply_batch(None, header(1, 0, 0), 0, 1000))
    table.put(apply_batch(None, header(2, 0, 0), 2, 5000))
    assert table.expire(6000, 5000) == 1
    assert [e.producer_id for e in table] == [2]
    assert table.expire(6000, -1) == 0


# ------------------------------------------------------------------ checkpoint


def sample_checkpoint() -> Checkpoint:
    producers = (
        ProducerEntry(3, 1, (ProducerBatch(0, 4, 10, 14, -1),), 99),
        ProducerEntry(
            2**40, 7, tuple(ProducerBatch(i, i, 20 + i, 20 + i, 5) for i in range(5)), -1
        ),
    )
    return Checkpoint(5, 12345, 30, 1_700_000_000_000, producers)


def test_checkpoint_round_trip() -> None:
    cp = sample_checkpoint()
    assert decode_checkpoint(encode_checkpoint(cp), "x") == cp
    empty = Checkpoint(0, 0, 0, -1, ())
    assert decode_checkpoint(encode_checkpoint(empty), "x") == empty


def test_checkpoint_flipped_bytes_and_truncation_are_corruption() -> None:
    data = encode_checkpoint(sample_checkpoint())
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        with pytest.raises(CorruptionError):
            decode_checkpoint(bytes(flipped), "x")
    for n in range(len(data)):
        with pytest.raises(DiskError):
            decode_checkpoint(data[:n], "x")


@given(st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1))
def test_keys_sort_by_offset(a: int, b: int) -> None:
    assert (data_key(a) < data_key(b)) == (a < b)
    assert key_offset(data_key(a)) == a
    assert key_offset(checkpoint_key(a)) == a
    assert data_key(a) < checkpoint_key(0) < time_index_key(0)


def test_time_index_start() -> None:
    entries = [(10, 100), (20, 150), (30, 150), (40, 300)]
    assert time_index_start(entries, 50) is None
    assert time_index_start(entries, 101) == 10
    assert time_index_start(entries, 151) == 30
    assert time_index_start(entries, 1000) == 40


# ------------------------------------------------------------------- retention


def infos(sizes: list[int], stamps: list[int]) -> list[BatchInfo]:
    out, base = [], 0
    for size, ts in zip(sizes, stamps, strict=True):
        out.append(BatchInfo(base, base + 2, ts, size))
        base += 2
    return out


def test_retention_by_time_stops_at_the_first_kept_batch() -> None:
    head = infos([10] * 4, [100, 300, 100, 100])
    doomed = plan_retention(head, now_ms=1000, retention_ms=800, retention_bytes=-1,
                            total_bytes=50)
    assert [b.base_offset for b in doomed] == [0]


def test_retention_by_size_ends_under_the_limit() -> None:
    head = infos([10, 20, 30], [0, 0, 0])
    doomed = plan_retention(head, now_ms=0, retention_ms=-1, retention_bytes=45,
                            total_bytes=100)  # 40 bytes in the newest batch
    assert [b.base_offset for b in doomed] == [0, 2, 4]
    assert plan_retention(head, now_ms=0, retention_ms=-1, retention_bytes=-1,
                          total_bytes=100) == []


def test_retention_consumes_the_head_lazily() -> None:
    consumed: list[int] = []

    def head():  # type: ignore[no-untyped-def]
        for info in infos([10] * 100, [0] * 100):
            consumed.append(info.base_offset)
            yield info

    plan_retention(head(), now_ms=0, retention_ms=-1, retention_bytes=975, total_bytes=1000)
    assert consumed == [0, 2, 4, 6]


# --------------------------------------------------------------- high watermark


def test_high_watermark_waits_for_sync_in_always_mode() -> None:
    hw = HighWatermark(0, auto=True, sync_always=True)
    hw.appended(1, 5)
    hw.appended(2, 9)
    hw.appended(3, 12)
    assert hw.value == 0
    hw.synced(2)
    assert hw.value == 9
    hw.truncated(10)
    assert hw.value == 9
    hw.synced(3)
    assert hw.value == 9  # the entry past the truncation was dropped
    manual = HighWatermark(0, auto=False, sync_always=True)
    manual.appended(1, 5)
    manual.synced(1)
    assert manual.value == 0
    manual.set(5)
    assert manual.value == 5


def test_log_options_validate() -> None:
    with pytest.raises(InvalidArgumentError):
        LogOptions(checkpoints_kept=0)
    with pytest.raises(InvalidArgumentError):
        LogOptions(checkpoint_interval_bytes=0)
