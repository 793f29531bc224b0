"""The partition log on the real engine, on the in-memory and the real filesystem."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel.broker.topic_config import TopicConfig
from sentinel.clock import ManualClock
from sentinel.errors import (
    CallerError,
    ClosedError,
    CorruptRecordError,
    InvalidArgumentError,
    InvalidRecordError,
    RecordBatchTooLargeError,
)
from sentinel.fs import FS, MemFS, OsFS
from sentinel.log.errors import (
    InvalidProducerEpochError,
    OffsetOutOfRangeError,
    OutOfOrderSequenceError,
)
from sentinel.log.partition_log import PartitionLog
from sentinel.log.types import LogOptions
from sentinel.record import (
    TimestampType,
    build_batch,
    decode_records,
    iter_batches,
    parse_header,
    validate_batch,
)
from sentinel.storage.options import EngineOptions
from sentinel.storage.wal import SyncMode, WalOptions

T0 = 1_700_000_000_000  # the ManualClock's wall start, in ms
SMALL = EngineOptions(memtable_bytes=8 * 1024, background=False)
NO_SYNC = EngineOptions(
    memtable_bytes=8 * 1024, background=False, wal=WalOptions(sync_mode=SyncMode.NONE)
)


def batch(
    n: int = 3,
    *,
    tag: str = "v",
    ts: int = T0,
    keys: list[bytes | None] | None = None,
    values: list[bytes | None] | None = None,
    pid: int = -1,
    epoch: int = -1,
    seq: int = -1,
    timestamps: list[int] | None = None,
) -> bytes:
    records = []
    for i in range(n):
        key = keys[i] if keys is not None else b"k%d" % i
        value = values[i] if values is not None else f"{tag}-{i}".encode()
        stamp = timestamps[i] if timestamps is not None else ts + i
        records.append((key, value, (), stamp))
    return build_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def open_log(
    fs: FS,
    directory: str = "/p0",
    config: TopicConfig | None = None,
    clock: ManualClock | None = None,
    engine_options: EngineOptions = SMALL,
    options: LogOptions | None = None,
) -> PartitionLog:
    return PartitionLog.open(
        fs, directory, config or TopicConfig(), clock or ManualClock(), engine_options,
        options=options,
    )


@pytest.fixture(params=["mem", "os"])
def fs_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[FS, str]]:
    if request.param == "mem":
        yield MemFS(), "/data/p0"
    else:
        yield OsFS(), str(tmp_path / "p0")


def all_records(log: PartitionLog, start: int = 0) -> list[tuple[int, bytes | None, bytes | None]]:
    out = []
    offset = max(start, log.log_start_offset)
    while offset < log.high_watermark:
        result = log.read(offset, 1 << 20)
        for b in result.batches:
            out.extend((r.offset, r.key, r.value) for r in decode_records(b))
        offset = result.next_offset
    return out


# ---------------------------------------------------------------- round trips


def test_append_read_round_trip(fs_dir: tuple[FS, str]) -> None:
    fs, directory = fs_dir
    with open_log(fs, directory) as log:
        sent = [batch(n, tag=f"b{i}") for i, n in enumerate([1, 3, 5, 2])]
        results = [log.append(b, leader_epoch=7) for b in sent]
        spans = [(r.base_offset, r.last_offset) for r in results]
        assert spans == [(0, 0), (1, 3), (4, 8), (9, 10)]
        assert all(not r.duplicate and r.log_append_time_ms == -1 for r in results)
        assert log.log_end_offset == log.high_watermark == 11
        assert log.size_bytes == sum(len(b) for b in sent)
        got = log.read(0, 1 << 20)
        assert got.next_offset == 11 and got.high_watermark == 11 and got.log_start_offset == 0
        assert len(got.batches) == 4
        for original, stored, result in zip(sent, got.batches, results, strict=True):
            header = validate_batch(stored, max_batch_bytes=1 << 20, from_producer=False)
            assert header.base_offset == result.base_offset
            assert header.leader_epoch == 7
            assert stored[16:] == original[16:]  # everything after the stamped fields
        assert [b.tobytes() for b in iter_batches(got.records)] == list(got.batches)
        offsets = [r.offset for b in got.batches for r in decode_records(b)]
        assert offsets == list(range(11))


def test_read_from_middle_of_batch_returns_the_whole_batch() -> None:
    with open_log(MemFS()) as log:
        log.append(batch(4))
        log.append(batch(4))
        result = log.read(6, 1 << 20)
        assert len(result.batches) == 1
        assert parse_header(result.batches[0]).base_offset == 4
        assert result.next_offset == 8


def test_max_bytes_honoured_but_at_least_one_batch() -> None:
    with open_log(MemFS()) as log:
        for i in range(5):
            log.append(batch(10, tag=f"x{i}"))
        size = len(log.read(0, 1).batches[0])
        one = log.read(0, 1)
        assert len(one.batches) == 1 and one.next_offset == 10
        assert len(log.read(0, 0).batches) == 1
        two = log.read(10, 2 * size + size // 2)
        assert [parse_header(b).base_offset for b in two.batches] == [10, 20]
        assert two.next_offset == 30
        assert len(log.read(0, 5 * size).batches) == 5


def test_offsets_out_of_range_carry_the_range() -> None:
    with open_log(MemFS()) as log:
        log.append(batch(3))
        log.append(batch(3))
        with pytest.raises(OffsetOutOfRangeError) as info:
            log.read(7, 100)
        assert (info.value.log_start_offset, info.value.log_end_offset) == (0, 6)
        assert isinstance(info.value, CallerError)
        with pytest.raises(OffsetOutOfRangeError):
            log.read(-1, 100)
        end = log.read(6, 100)
        assert end.batches == () and end.next_offset == 6
        log.delete_records(3)
        with pytest.raises(OffsetOutOfRangeError) as info:
            log.read(2, 100)
        assert (info.value.log_start_offset, info.value.log_end_offset) == (3, 6)


def test_append_many_is_one_write_with_consecutive_offsets() -> None:
    with open_log(MemFS()) as log:
        results = log.append_many([batch(2), batch(3), batch(1)])
        assert [(r.base_offset, r.last_offset) for r in results] == [(0, 1), (2, 4), (5, 5)]
        assert len({r.lsn for r in results}) == 1
        with pytest.raises(CorruptRecordError):
            log.append_many([batch(2), batch(2)[:-1]])
        assert log.log_end_offset == 6


def test_log_append_time_is_stamped() -> None:
    clock = ManualClock()
    config = TopicConfig(log_append_time=True)
    with open_log(MemFS(), config=config, clock=clock) as log:
        clock.advance(5)
        result = log.append(batch(3, ts=1))
        assert result.log_append_time_ms == T0 + 5000
        stored = log.read(0, 1000).batches[0]
        header = validate_batch(stored, max_batch_bytes=1 << 20, from_producer=False)
        assert header.timestamp_type == TimestampType.LOG_APPEND_TIME
        assert {r.timestamp for r in decode_records(stored)} == {T0 + 5000}


# ------------------------------------------------------------------- refusals


def corrupt(data: bytes, at: int) -> bytes:
    buf = bytearray(data)
    buf[at] ^= 0x40
    return bytes(buf)


@pytest.mark.parametrize(
    ("mangle", "error"),
    [
        (lambda b: corrupt(b, len(b) - 2), CorruptRecordError),  # a record byte: CRC fails
        (lambda b: corrupt(b, 22), CorruptRecordError),  # attributes: CRC fails
        (lambda b: b[:16] + b"\x01" + b[17:], InvalidRecordError),  # magic 1
        (lambda b: b[:-3], CorruptRecordError),  # truncated
        (lambda b: b[:40], CorruptRecordError),  # shorter than a header
    ],
)
def test_bad_batches_are_refused_and_nothing_is_stored(mangle, error) -> None:  # type: ignore[no-untyped-def]
    with open_log(MemFS()) as log:
        log.append(batch(2))
        size = log.size_bytes
        with pytest.raises(error):
            log.append(mangle(batch(2)))
        assert (log.log_end_offset, log.size_bytes) == (2, size)
        assert len(log.read(0, 1 << 20).batches) == 1
        assert log.append(batch(1)).base_offset == 2


def test_oversize_batch_is_refused() -> None:
    config = TopicConfig(max_message_bytes=500)
    with open_log(MemFS(), config=config) as log:
        with pytest.raises(RecordBatchTooLargeError):
            log.append(batch(1, values=[bytes(600)]))
        assert log.log_end_offset == 0
        log.update_config(TopicConfig(max_message_bytes=2000))
        assert log.append(batch(1, values=[bytes(600)])).base_offset == 0


def test_compacted_topic_refuses_records_without_key() -> None:
    config = TopicConfig(cleanup_compact=True, cleanup_delete=False)
    with open_log(MemFS(), config=config) as log:
        with pytest.raises(InvalidRecordError):
            log.append(batch(2, keys=[b"a", None]))
        assert log.log_end_offset == 0


def test_closed_log_refuses_calls() -> None:
    log = open_log(MemFS())
    log.close()
    log.close()
    with pytest.raises(ClosedError):
        log.append(batch())
    with pytest.raises(ClosedError):
        log.read(0, 10)


# -------------------------------------------------------- idempotent producers


def test_duplicate_retry_returns_original_offsets_and_stores_nothing() -> None:
    with open_log(MemFS()) as log:
        first = [log.append(batch(2, pid=9, epoch=0, seq=2 * i)) for i in range(6)]
        size = log.size_bytes
        for i in range(1, 6):  # the last five batches are remembered
            retried = log.append(batch(2, pid=9, epoch=0, seq=2 * i))
            assert retried.duplicate
            assert (retried.base_offset, retried.last_offset) == (
                first[i].base_offset,
                first[i].last_offset,
            )
        assert (log.log_end_offset, log.size_bytes) == (12, size)
        with pytest.raises(OutOfOrderSequenceError):  # older than the last five
            log.append(batch(2, pid=9, epoch=0, seq=0))
        assert log.append(batch(2, pid=9, epoch=0, seq=12)).base_offset == 12


def test_sequence_gap_and_old_epoch_are_refused() -> None:
    with open_log(MemFS()) as log:
        log.append(batch(3, pid=1, epoch=2, seq=10))  # a new producer may start anywhere
        with pytest.raises(OutOfOrderSequenceError) as gap:
            log.append(batch(1, pid=1, epoch=2, seq=14))
        assert (gap.value.expected, gap.value.got) == (13, 14)
        with pytest.raises(InvalidProducerEpochError):
            log.append(batch(1, pid=1, epoch=1, seq=13))
        with pytest.raises(OutOfOrderSequenceError):  # a new epoch starts at 0
            log.append(batch(1, pid=1, epoch=3, seq=13))
        assert log.append(batch(1, pid=1, epoch=3, seq=0)).base_offset == 3
        assert log.log_end_offset == 4
        with pytest.raises(InvalidProducerEpochError):
            log.append(batch(1, pid=1, epoch=2, seq=13))


def test_append_many_with_a_bad_sequence_stores_nothing() -> None:
    with open_log(MemFS()) as log:
        log.append(batch(1, pid=4, epoch=0, seq=0))
        with pytest.raises(OutOfOrderSequenceError):
            log.append_many([batch(1, pid=4, epoch=0, seq=1), batch(1, pid=4, epoch=0, seq=3)])
        assert log.log_end_offset == 1
        results = log.append_many(
            [batch(1, pid=4, epoch=0, seq=1), batch(1, pid=4, epoch=0, seq=1)]
        )
        assert [(r.base_offset, r.duplicate) for r in results] == [(1, False), (1, True)]
        assert log.log_end_offset == 2


def test_producer_state_survives_restart_with_and_without_checkpoints() -> None:
    fs = MemFS()
    tiny = LogOptions(checkpoint_interval_bytes=300)
    with open_log(fs, options=tiny) as log:
        for i in range(10):
            log.append(batch(2, pid=5, epoch=1, seq=2 * i))
    with open_log(fs, options=tiny) as log:
        assert log.log_end_offset == 20
        retried = log.append(batch(2, pid=5, epoch=1, seq=18))
        assert retried.duplicate and retried.base_offset == 18
        with pytest.raises(OutOfOrderSequenceError):
            log.append(batch(2, pid=5, epoch=1, seq=22))
        log.append(batch(2, pid=5, epoch=1, seq=20))
        entry = log.producer_state(5)
        assert entry is not None and entry.last_seq == 21


# ------------------------------------------------------------ restart / crash


def test_restart_recovers_offsets_and_size(fs_dir: tuple[FS, str]) -> None:
    fs, directory = fs_dir
    with open_log(fs, directory) as log:
        for i in range(20):
            log.append(batch(5, tag=f"r{i}"))
        log.delete_records(12)
        size = log.size_bytes
    with open_log(fs, directory) as log:
        assert (log.log_start_offset, log.log_end_offset, log.high_watermark) == (12, 100, 100)
        assert log.size_bytes == size
        assert parse_header(log.read(12, 10).batches[0]).base_offset == 10
        assert log.append(batch(1)).base_offset == 100


def test_crash_after_acknowledged_appends_keeps_them_all() -> None:
    fs = MemFS()
    log = open_log(fs, options=LogOptions(checkpoint_interval_bytes=2000))
    acked = []
    for i in range(60):
        result = log.append(batch(3, tag=f"c{i}", pid=3, epoch=0, seq=3 * i))
        acked.append(result.base_offset)
    fs.crash(random.Random(1))
    with open_log(fs) as recovered:
        assert recovered.log_end_offset == 180
        bases = []
        offset = 0
        while offset < recovered.log_end_offset:
            result = recovered.read(offset, 1 << 20)
            bases.extend(parse_header(b).base_offset for b in result.batches)
            offset = result.next_offset
        assert bases == acked
        assert recovered.append(batch(3, pid=3, epoch=0, seq=177)).duplicate


def test_crash_before_sync_loses_only_unacknowledged_batches() -> None:
    fs = MemFS()
    log = open_log(fs)
    for i in range(5):
        log.append(batch(2, tag=f"a{i}"))
    pending = [log.append(batch(2, tag=f"p{i}"), wait=False) for i in range(3)]
    assert log.high_watermark == 10  # not yet durable
    assert log.read(10, 1000).batches == ()
    assert len(log.read(10, 1000, include_uncommitted=True).batches) == 3
    fs.crash()
    with open_log(fs) as recovered:
        assert recovered.log_end_offset in (10, 12, 14, 16)
        assert recovered.log_end_offset >= 10
    assert pending[-1].lsn > pending[0].lsn


def test_wait_false_then_sync_to_moves_the_high_watermark() -> None:
    with open_log(MemFS()) as log:
        first = log.append(batch(2), wait=False)
        second = log.append(batch(2), wait=False)
        assert log.high_watermark == 0
        log.sync_to(first.lsn)
        assert log.high_watermark == 2
        log.sync_to(second.lsn)
        assert log.high_watermark == 4


def test_sync_none_acknowledges_at_append() -> None:
    with open_log(MemFS(), engine_options=NO_SYNC) as log:
        log.append(batch(2), wait=False)
        assert log.high_watermark == 2


def test_replicated_partition_moves_watermark_only_when_told() -> None:
    with open_log(MemFS(), options=LogOptions(auto_high_watermark=False)) as log:
        log.append(batch(2))
        log.append(batch(2))
        assert (log.high_watermark, log.log_end_offset) == (0, 4)
        assert log.read(0, 100).batches == ()
        log.set_high_watermark(2)
        assert len(log.read(0, 1000).batches) == 1
        with pytest.raises(InvalidArgumentError):
            log.set_high_watermark(5)


def test_append_replicated_keeps_the_leaders_stamps() -> None:
    with open_log(MemFS()) as leader, open_log(MemFS()) as follower:
        leader.append(batch(2, pid=8, epoch=0, seq=0), leader_epoch=3)
        leader.append(batch(2), leader_epoch=4)
        for stored in leader.read(0, 1 << 20).batches:
            follower.append_replicated(stored)
        assert follower.read(0, 1 << 20).batches == leader.read(0, 1 << 20).batches
        entry = follower.producer_state(8)
        assert entry is not None and entry.last_seq == 1
        with pytest.raises(InvalidArgumentError):
            follower.append_replicated(leader.read(0, 100).batches[0])


# ----------------------------------------------------------------- truncation


def test_truncate_suffix_then_append_continues_there() -> None:
    fs = MemFS()
    with open_log(fs) as log:
        for i in range(6):
            log.append(batch(2, tag=f"t{i}", pid=2, epoch=0, seq=2 * i))
        with pytest.raises(InvalidArgumentError):
            log.truncate_suffix(5)  # inside [4, 5]
        with pytest.raises(InvalidArgumentError):
            log.truncate_suffix(13)
        log.truncate_suffix(6)
        assert (log.log_end_offset, log.high_watermark) == (6, 6)
        with pytest.raises(OffsetOutOfRangeError):
            log.read(8, 10)
        # The truncated batch is no longer a duplicate: producer state rolled back.
        redo = log.append(batch(2, tag="new", pid=2, epoch=0, seq=6))
        assert (redo.base_offset, redo.duplicate) == (6, False)
        assert log.append(batch(1)).base_offset == 8
    with open_log(fs) as log:
        assert log.log_end_offset == 9
        values = [v for _o, _k, v in all_records(log)]
        assert values[6:] == [b"new-0", b"new-1", b"v-0"]


def test_truncate_below_log_start_empties_the_log() -> None:
    with open_log(MemFS()) as log:
        for _ in range(4):
            log.append(batch(2))
        log.delete_records(5)
        log.truncate_suffix(3)
        assert (log.log_start_offset, log.log_end_offset, log.size_bytes) == (3, 3, 0)
        assert log.read(3, 100).batches == ()
        assert log.append(batch(1)).base_offset == 3


def test_restart_at_past_the_end_starts_over_empty_there() -> None:
    """Kafka's truncateFullyAndStartAt: a follower whose leader's log starts past its
    end drops everything and starts at the leader's log start (producers forgotten)."""
    fs = MemFS()
    with open_log(fs, options=LogOptions(auto_high_watermark=False)) as log:
        log.append(build_batch([(None, b"x", (), T0)], producer_id=7, producer_epoch=0,
                               base_sequence=0))
        log.append(batch(2))
        log.set_high_watermark(3)
        log.restart_at(40)
        assert (log.log_start_offset, log.log_end_offset, log.high_watermark) == (40, 40, 40)
        assert (log.size_bytes, log.producer_state(7)) == (0, None)
        assert log.append_replicated(build_batch([(None, b"y", (), T0)], base_offset=40))
        log.engine.sync()
    fs.crash()
    with open_log(fs) as log:
        assert (log.log_start_offset, log.log_end_offset) == (40, 41)
        assert log.offset_for_timestamp(0) == (40, T0)


# ------------------------------------------------------------------ retention


def test_retention_by_time() -> None:
    fs, clock = MemFS(), ManualClock()
    config = TopicConfig(retention_ms=60_000)
    with open_log(fs, config=config, clock=clock) as log:
        for i in range(5):
            log.append(batch(2, ts=T0 + i * 20_000))
        assert log.apply_retention() == 0
        clock.advance(100)  # now = T0 + 100 s: batches with max ts < T0 + 40 s are expired
        assert log.apply_retention() == 2
        assert log.log_start_offset == 4
        clock.advance(1000)
        assert log.apply_retention() == 2  # never the newest batch
        assert (log.log_start_offset, log.log_end_offset) == (8, 10)
        assert log.size_bytes == len(log.read(8, 1000).batches[0])
    with open_log(fs, config=config, clock=clock) as log:
        assert (log.log_start_offset, log.log_end_offset) == (8, 10)


def test_retention_by_size() -> None:
    clock = ManualClock()
    one = len(batch(2))
    config = TopicConfig(retention_ms=-1, retention_bytes=3 * one)
    with open_log(MemFS(), config=config, clock=clock) as log:
        for _ in range(10):
            log.append(batch(2))
        assert log.apply_retention() == 7
        assert log.size_bytes == 3 * one
        assert log.log_start_offset == 14
        assert [r[0] for r in all_records(log)] == list(range(14, 20))
        log.update_config(TopicConfig(retention_ms=-1, retention_bytes=0))
        assert log.apply_retention() == 2
        assert (log.log_start_offset, log.log_end_offset) == (18, 20)


def test_a_retention_pass_that_deletes_nothing_is_not_repeated_until_it_could() -> None:
    """An idle partition's head is scanned once, not every interval; every change that
    could let the rules delete (time, size, a new head, the log edited) scans again."""
    clock = ManualClock()
    config = TopicConfig(retention_ms=60_000)
    with open_log(MemFS(), config=config, clock=clock) as log:
        engine = log.engine
        scans = 0
        real_scan = engine.scan

        def counting_scan(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal scans
            scans += 1
            return real_scan(*args, **kwargs)

        engine.scan = counting_scan  # type: ignore[method-assign]
        log.append(batch(2, ts=T0))
        assert log.apply_retention() == 0 and scans == 1
        assert log.apply_retention() == 0 and scans == 1  # one batch: nothing to do
        log.append(batch(2, ts=T0 + 20_000))  # now the first batch is a head
        assert log.apply_retention() == 0 and scans == 2
        for i in range(3):
            log.append(batch(2, ts=T0 + 30_000 + i))
            assert log.apply_retention() == 0
        assert scans == 2  # appends land behind the head, which stays
        clock.advance(61)  # the head (max ts T0 + 1 ms) is past retention now
        assert log.apply_retention() == 1 and scans >= 3
        assert log.log_start_offset == 2
        before = scans
        assert log.apply_retention() == 0 and scans == before + 1  # a new head: looked at
        assert log.apply_retention() == 0 and scans == before + 1  # once
        log.update_config(TopicConfig(retention_ms=60_000, retention_bytes=0))
        assert log.apply_retention() == 3  # the size rule is checked every pass
        log.update_config(config)
        log.append(batch(2, ts=T0))
        assert log.apply_retention() == 0
        assert log.apply_retention() == 0
        log.truncate_suffix(log.log_end_offset - 2)  # an edit voids what was seen
        before = scans
        assert log.apply_retention() == 0 and scans == before + 1


def test_retention_needs_delete_policy() -> None:
    config = TopicConfig(retention_bytes=0, cleanup_delete=False, cleanup_compact=True)
    with open_log(MemFS(), config=config) as log:
        for _ in range(3):
            log.append(batch(2))
        assert log.apply_retention() == 0


def test_delete_records_up_to_the_end() -> None:
    fs = MemFS()
    with open_log(fs) as log:
        for _ in range(3):
            log.append(batch(2))
        with pytest.raises(OffsetOutOfRangeError):
            log.delete_records(7)
        log.delete_records(-1)
        assert (log.log_start_offset, log.log_end_offset, log.size_bytes) == (6, 6, 0)
    with open_log(fs) as log:
        assert (log.log_start_offset, log.log_end_offset) == (6, 6)
        assert log.append(batch(1)).base_offset == 6


# ------------------------------------------------------------- by timestamp


def test_offset_for_timestamp() -> None:
    options = LogOptions(time_index_interval_bytes=200)
    with open_log(MemFS(), options=options) as log:
        # Create times are out of order across and within batches.
        log.append(batch(3, timestamps=[T0 + 10, T0 + 30, T0 + 20]))  # 0-2
        log.append(batch(2, timestamps=[T0 + 5, T0 + 6]))  # 3-4
        for i in range(20):
            log.append(batch(2, timestamps=[T0 + 100 + 10 * i, T0 + 101 + 10 * i]))  # 5..44
        index = list(log.engine.scan(b"MT", b"MU"))
        assert len(index) >= 5  # the time index is in play
        assert log.offset_for_timestamp(T0) == (0, T0 + 10)
        assert log.offset_for_timestamp(T0 + 25) == (1, T0 + 30)
        assert log.offset_for_timestamp(T0 + 31) == (5, T0 + 100)
        assert log.offset_for_timestamp(T0 + 151) == (16, T0 + 151)
        assert log.offset_for_timestamp(T0 + 152) == (17, T0 + 160)
        assert log.offset_for_timestamp(T0 + 291) == (44, T0 + 291)
        assert log.offset_for_timestamp(T0 + 292) is None
        log.delete_records(16)
        assert log.offset_for_timestamp(T0) == (16, T0 + 151)
        log.truncate_suffix(31)
        assert log.offset_for_timestamp(T0 + 230) is None
        log.append(batch(1, timestamps=[T0 + 50]))
        assert log.offset_for_timestamp(T0 + 230) is None
        assert log.offset_for_timestamp(T0 + 221) == (30, T0 + 221)
        assert log.offset_for_timestamp(T0 + 40) == (16, T0 + 151)
        with pytest.raises(InvalidArgumentError):
            log.offset_for_timestamp(-1)


# ---------------------------------------------------------------- buffers, threads


def test_stored_batch_does_not_alias_the_callers_buffer() -> None:
    with open_log(MemFS()) as log:
        buffer = bytearray(batch(2, tag="first"))
        log.append(memoryview(buffer))
        buffer[:] = bytes(len(buffer))  # the broker reuses its receive buffer
        stored = log.read(0, 1000).batches[0]
        assert [r.value for r in decode_records(stored)] == [b"first-0", b"first-1"]


def test_readers_in_other_threads_see_whole_batches() -> None:
    import threading

    config = TopicConfig(retention_ms=-1, retention_bytes=20_000)
    log = open_log(MemFS(), config=config)
    done = threading.Event()
    errors: list[BaseException] = []
    seen = [0]

    def reader() -> None:
        try:
            while not done.is_set():
                offset = log.log_start_offset
                try:
                    result = log.read(offset, 3000)
                except OffsetOutOfRangeError:
                    continue  # retention moved the start meanwhile
                previous = -1
                for stored in result.batches:
                    header = validate_batch(stored, max_batch_bytes=1 << 20, from_producer=False)
                    assert header.base_offset > previous
                    previous = header.base_offset
                    seen[0] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for i in range(300):
            log.append(batch(4, tag=f"t{i}"))
            if i % 20 == 0:
                log.apply_retention()
    finally:
        done.set()
        for thread in threads:
            thread.join()
        log.close()
    assert not errors, errors
    assert seen[0] > 0
