"""Key compaction: the pure batch rewrite, and passes over a real partition log."""

from __future__ import annotations

import random

import pytest

from sentinel.broker.topic_config import TopicConfig
from sentinel.clock import ManualClock
from sentinel.fs import MemFS
from sentinel.log.key_compaction import collect_keys, compact_batch
from sentinel.log.partition_log import PartitionLog
from sentinel.log.types import LogOptions
from sentinel.record import (
    Compression,
    TimestampType,
    build_batch,
    decode_records,
    parse_header,
    stamp_batch,
    validate_batch,
)
from sentinel.storage.options import EngineOptions

T0 = 1_700_000_000_000
HOUR_MS = 3600 * 1000
COMPACT = TopicConfig(cleanup_compact=True, cleanup_delete=False, retention_ms=-1)
ENGINE = EngineOptions(memtable_bytes=4096, background=False)


def keyed(
    pairs: list[tuple[bytes, bytes | None]],
    *,
    ts: int = T0,
    compression: Compression = Compression.NONE,
    pid: int = -1,
    seq: int = -1,
) -> bytes:
    return build_batch(
        [(k, v, (("h", b"x"),), ts + i) for i, (k, v) in enumerate(pairs)],
        compression=compression,
        producer_id=pid,
        producer_epoch=0 if pid >= 0 else -1,
        base_sequence=seq,
    )


def records_of(log: PartitionLog) -> list[tuple[int, bytes | None, bytes | None, int]]:
    out = []
    offset = log.log_start_offset
    while offset < log.high_watermark:
        result = log.read(offset, 1 << 20)
        if not result.batches:
            break  # a gap compaction left at the end of the log
        for stored in result.batches:
            validate_batch(stored, max_batch_bytes=1 << 20, from_producer=False)
            out.extend((r.offset, r.key, r.value, r.timestamp) for r in decode_records(stored))
        offset = result.next_offset
    return out


def open_log(fs: MemFS, clock: ManualClock, **options: int) -> PartitionLog:
    return PartitionLog.open(
        fs, "/c", COMPACT, clock, ENGINE, options=LogOptions(**options)  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------- pure rewrite


@pytest.mark.parametrize("codec", [Compression.NONE, Compression.GZIP, Compression.ZSTD])
def test_compact_batch_keeps_offsets_timestamps_and_headers(codec: Compression) -> None:
    data = bytearray(
        keyed([(b"a", b"1"), (b"b", b"2"), (b"a", b"3"), (b"c", b"4")], compression=codec,
              pid=5, seq=40)
    )
    stamp_batch(data, 100, 3)
    original = decode_records(bytes(data))
    offset_map = {b"a": 102, b"b": 250}
    rewrite, tombstones = compact_batch(bytes(data), offset_map, 0)
    assert rewrite is not None and rewrite.batch is not None and tombstones == 0
    assert rewrite.removed_records == 2 and rewrite.old_size == len(data)
    header = validate_batch(rewrite.batch, max_batch_bytes=1 << 20, from_producer=False)
    assert (header.base_offset, header.last_offset_delta, header.leader_epoch) == (100, 3, 3)
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (5, 0, 40)
    assert header.compression == codec and header.record_count == 2
    assert header.max_timestamp == T0 + 3
    kept = decode_records(rewrite.batch)
    assert kept == [original[2], original[3]]


def test_compact_batch_unchanged_and_emptied() -> None:
    data = keyed([(b"a", b"1"), (b"b", b"2")])
    assert compact_batch(data, {b"a": 0}, 0) == (None, 0)
    rewrite, _ = compact_batch(data, {b"a": 7, b"b": 9}, 0)
    assert rewrite is not None and rewrite.batch is None and rewrite.new_size == 0


def test_compact_batch_tombstones_and_keyless_records() -> None:
    data = keyed([(b"a", None), (None, b"x"), (b"b", None)], ts=T0)
    rewrite, kept = compact_batch(data, {}, T0 + 1)  # a (ts T0) expired; b (T0 + 2) not
    assert rewrite is not None and rewrite.batch is not None and kept == 1
    assert [(r.key, r.value) for r in decode_records(rewrite.batch)] == [(b"b", None)]


def test_compact_batch_keeps_log_append_time() -> None:
    data = bytearray(keyed([(b"a", b"1"), (b"b", b"2")]))
    stamp_batch(data, 0, 0, log_append_time_ms=T0 + 99)
    rewrite, _ = compact_batch(bytes(data), {b"a": 5}, 0)
    assert rewrite is not None and rewrite.batch is not None
    header = parse_header(rewrite.batch)
    assert header.timestamp_type == TimestampType.LOG_APPEND_TIME
    assert header.max_timestamp == T0 + 99
    assert [r.timestamp for r in decode_records(rewrite.batch)] == [T0 + 99]


def test_collect_keys_later_wins() -> None:
    offset_map: dict[bytes, int] = {}
    collect_keys(keyed([(b"a", b"1"), (b"a", b"2"), (b"b", None)]), offset_map)
    assert offset_map == {b"a": 1, b"b": 2}


# ------------------------------------------------------------- passes on a log


def test_compaction_keeps_latest_per_key_at_original_offsets() -> None:
    fs, clock = MemFS(), ManualClock()
    rng = random.Random(7)
    latest: dict[bytes, tuple[int, bytes]] = {}
    appended: list[tuple[int, bytes, bytes]] = []
    with open_log(fs, clock, compaction_write_bytes=2000) as log:
        for _ in range(40):
            pairs = [(b"key%d" % rng.randrange(12), b"val%d" % rng.randrange(10**6))
                     for _ in range(rng.randrange(1, 6))]
            codec = rng.choice([Compression.NONE, Compression.LZ4])
            result = log.append(keyed(pairs, compression=codec))
            for i, (k, v) in enumerate(pairs):
                appended.append((result.base_offset + i, k, v))
        newest_base = result.base_offset
        end = log.log_end_offset
        size_before = log.size_bytes
        removed = log.compact_keys()
        assert removed > 0
        assert log.size_bytes < size_before
        assert log.clean_offset == newest_base
        assert log.log_end_offset == end
        for offset, k, v in appended:
            if offset < newest_base:
                latest[k] = (offset, v)
        got = records_of(log)
        cleaned = [(o, k, v) for o, k, v, _ in got if o < newest_base]
        expected = sorted(
            (o, k, v) for k, (o, v) in latest.items()
        )
        assert cleaned == expected
        assert [(o, k, v) for o, k, v, _ in got if o >= newest_base] == [
            x for x in appended if x[0] >= newest_base
        ]
        assert len(got) + removed == len(appended)
        assert log.compact_keys() == 0  # nothing dirty, no tombstones
        size = log.size_bytes
    with open_log(fs, clock) as log:
        assert log.size_bytes == size
        assert log.clean_offset == newest_base
        assert [(o, k, v) for o, k, v, _ in records_of(log)] == [
            (o, k, v) for o, k, v, _ in got
        ]


def test_compaction_deletes_emptied_batches_and_reads_skip_the_gap() -> None:
    with open_log(MemFS(), ManualClock()) as log:
        log.append(keyed([(b"a", b"1"), (b"b", b"1")]))  # 0-1
        log.append(keyed([(b"a", b"2"), (b"b", b"2")]))  # 2-3
        log.append(keyed([(b"a", b"3"), (b"c", b"3")]))  # 4-5
        log.append(keyed([(b"z", b"newest")]))  # 6
        assert log.compact_keys() == 3
        assert [(o, k) for o, k, _v, _t in records_of(log)] == [
            (3, b"b"), (4, b"a"), (5, b"c"), (6, b"z")
        ]
        first = log.read(0, 1 << 20)
        assert parse_header(first.batches[0]).base_offset == 2
        assert log.log_start_offset == 0
        middle = log.read(1, 1)
        assert parse_header(middle.batches[0]).base_offset == 2


def test_tombstones_survive_until_the_delete_retention_passes() -> None:
    fs, clock = MemFS(), ManualClock()
    with open_log(fs, clock, delete_retention_ms=HOUR_MS) as log:
        log.append(keyed([(b"a", b"1"), (b"b", b"1")], ts=T0))
        log.append(keyed([(b"a", None)], ts=T0 + 10))
        log.append(keyed([(b"c", b"1")], ts=T0 + 20))
        assert log.compact_keys() == 1  # the old "a"
        assert [(k, v) for _o, k, v, _t in records_of(log)] == [
            (b"b", b"1"), (b"a", None), (b"c", b"1")
        ]
        clock.advance(2 * 3600)
        assert log.compact_keys() == 1  # no dirty data, but the tombstone expired
        assert [(k, v) for _o, k, v, _t in records_of(log)] == [(b"b", b"1"), (b"c", b"1")]
        assert log.compact_keys() == 0


def test_compaction_with_interleaved_appends_and_a_small_key_budget() -> None:
    fs, clock = MemFS(), ManualClock()
    with open_log(fs, clock, compaction_max_keys=3) as log:
        for i in range(10):
            log.append(keyed([(b"k%d" % (i % 5), b"v%d" % i)]))
        removed = log.compact_keys()
        first_clean = log.clean_offset
        assert 0 < first_clean < 9
        total = removed
        for _ in range(5):
            total += log.compact_keys()
        assert log.clean_offset == 9
        # k0..k3 each lose their first record; k4 at 4 stays: the newest batch (k4 at
        # 9) is never cleaned and never enters the offset map, as Kafka's active segment.
        assert total == 4
        log.append(keyed([(b"k0", b"late")]))
        assert log.compact_keys() == 1  # now 9 is dirty and supersedes k4 at 4
        assert [(o, k) for o, k, _v, _t in records_of(log)] == [
            (5, b"k0"), (6, b"k1"), (7, b"k2"), (8, b"k3"), (9, b"k4"), (10, b"k0")
        ]


def test_compact_keys_is_a_no_op_without_compact_policy() -> None:
    log = PartitionLog.open(MemFS(), "/d", TopicConfig(), ManualClock(), ENGINE)
    with log:
        log.append(keyed([(b"a", b"1")]))
        log.append(keyed([(b"a", b"2")]))
        assert log.compact_keys() == 0


def test_compaction_in_a_thread_while_appending() -> None:
    import threading

    fs, clock = MemFS(), ManualClock()
    latest: dict[bytes, bytes] = {}
    with open_log(fs, clock, compaction_write_bytes=500) as log:
        stop = threading.Event()
        removed = [0]

        def compactor() -> None:
            while not stop.is_set():
                removed[0] += log.compact_keys()

        thread = threading.Thread(target=compactor)
        thread.start()
        try:
            for i in range(400):
                key, value = b"k%d" % (i % 17), b"v%d" % i
                log.append(keyed([(key, value)]))
                latest[key] = value
        finally:
            stop.set()
            thread.join()
        log.append(keyed([(b"end", b"x")]))
        log.compact_keys()
        got = {k: v for _o, k, v, _t in records_of(log)}
        assert {k: v for k, v in got.items() if k != b"end"} == latest
        assert len(records_of(log)) == len(latest) + 1


def test_truncation_after_compaction_keeps_the_log_end_over_a_gap() -> None:
    fs, clock = MemFS(), ManualClock()
    with open_log(fs, clock) as log:
        log.append(keyed([(b"a", b"1")]))  # 0
        log.append(keyed([(b"b", b"1")]))  # 1: emptied by compaction
        log.append(keyed([(b"b", b"2")]))  # 2
        log.append(keyed([(b"c", b"1")]))  # 3
        assert log.compact_keys() == 1
        log.truncate_suffix(2)  # batches 0 and the gap [1, 2) are left
        assert log.log_end_offset == 2
        empty = log.read(1, 1000)
        assert empty.batches == () and empty.next_offset == 1
    with open_log(fs, clock) as log:
        assert log.log_end_offset == 2
        assert log.append(keyed([(b"d", b"1")])).base_offset == 2
        assert parse_header(log.read(1, 1000).batches[0]).base_offset == 2


def test_compaction_stays_below_the_high_watermark() -> None:
    options = LogOptions(auto_high_watermark=False)
    log = PartitionLog.open(MemFS(), "/r", COMPACT, ManualClock(), ENGINE, options=options)
    with log:
        for value in (b"1", b"2", b"3", b"4"):
            log.append(keyed([(b"a", value), (b"b", value)]))  # batches at 0, 2, 4, 6
        assert log.compact_keys() == 0  # nothing committed yet
        log.set_high_watermark(3)  # inside the batch at 2: only the batch at 0 is clean
        assert log.compact_keys() == 0  # one batch: nothing supersedes it
        assert log.clean_offset == 2
        log.set_high_watermark(6)
        assert log.compact_keys() == 4  # 0 and 2 superseded by 4; 6 is above the mark
        assert log.clean_offset == 6
        log.set_high_watermark(8)
        kept = [(o, v) for o, _k, v, _t in records_of(log)]
        assert kept == [(4, b"3"), (5, b"3"), (6, b"4"), (7, b"4")]
