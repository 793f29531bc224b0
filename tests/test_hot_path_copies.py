"""The produce hot path copies a batch once and checksums it as few times as the formats
allow: from the request's buffer to the WAL's write, one user-space copy (the stamp),
one CRC pass to verify the client's batch and one for the WAL frame."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from sentinel.broker.topic_config import TopicConfig
from sentinel.clock import ManualClock
from sentinel.fs import Buffer, File, MemFS
from sentinel.log.partition_log import PartitionLog
from sentinel.record import (
    TimestampType,
    build_batch,
    decode_records,
    stamp_batch,
    stamped,
    validate_batch,
)
from sentinel.storage import wal as wal_module
from sentinel.storage import wal_format
from sentinel.storage.options import EngineOptions
from sentinel.storage.wal import SyncMode, WalOptions, WriteAheadLog
from sentinel.storage.write_batch import PARTS_FROM, encode_ops, encode_ops_parts

BIG = 16 * 1024


def _batch(value_bytes: int = BIG) -> bytes:
    return build_batch([(b"k", b"x" * value_bytes, (), 1_700_000_000_000)])


@pytest.mark.parametrize("append_time", [None, 1_800_000_000_000])
def test_stamped_is_stamp_batch_in_one_copy(append_time: int | None) -> None:
    data = _batch(100)
    expected = bytearray(data)
    stamp_batch(expected, 42, 7, append_time)
    got = stamped(memoryview(data), 42, 7, append_time)
    assert got == bytes(expected)
    header = validate_batch(got, max_batch_bytes=1 << 20, from_producer=False)
    assert (header.base_offset, header.leader_epoch) == (42, 7)
    kind = TimestampType.CREATE_TIME if append_time is None else TimestampType.LOG_APPEND_TIME
    assert header.timestamp_type == kind


@pytest.mark.parametrize(
    "sizes", [[10], [PARTS_FROM], [10, PARTS_FROM, 5], [PARTS_FROM, PARTS_FROM], [None, 3]]
)
def test_encode_ops_parts_is_encode_ops_without_joining_large_values(
    sizes: list[int | None],
) -> None:
    ops = [(b"key%d" % i, None if n is None else b"v" * n) for i, n in enumerate(sizes)]
    parts = encode_ops_parts(ops)
    joined = parts if isinstance(parts, bytes) else b"".join(parts)
    assert joined == encode_ops(ops)
    large = [v for _k, v in ops if v is not None and len(v) >= PARTS_FROM]
    if large:
        assert isinstance(parts, tuple)
        assert all(any(p is v for p in parts) for v in large)


class _Recorder:
    """Records every part handed to the OS by the WAL (written, or written and synced in
    one call), and every byte checksummed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.parts: list[Buffer] = []
        self.crc_bytes = 0
        write_parts = wal_module._write_parts
        write_parts_synced = wal_module._write_parts_synced

        def recording(file: File, parts: Sequence[Buffer]) -> None:
            self.parts.extend(parts)
            write_parts(file, parts)

        def recording_synced(file: File, parts: Sequence[Buffer]) -> None:
            self.parts.extend(parts)
            write_parts_synced(file, parts)

        monkeypatch.setattr(wal_module, "_write_parts", recording)
        monkeypatch.setattr(wal_module, "_write_parts_synced", recording_synced)
        import sentinel.record.batch as batch_module

        for module in (wal_format, batch_module):
            original = module.crc32c

            def counting(data: Any, value: int = 0, _original: Any = original) -> int:
                self.crc_bytes += len(data)
                return int(_original(data, value))

            monkeypatch.setattr(module, "crc32c", counting)


@pytest.mark.parametrize("mode", [SyncMode.ALWAYS, SyncMode.NONE])
def test_wal_writes_the_callers_parts_by_reference(
    monkeypatch: pytest.MonkeyPatch, mode: SyncMode
) -> None:
    recorder = _Recorder(monkeypatch)
    fs = MemFS()
    wal = WriteAheadLog(fs, "/w", 1, WalOptions(sync_mode=mode))
    value = b"v" * BIG
    small = b"small entry"
    lsn = wal.append((b"head", value))
    wal.append(small)
    wal.sync_to(lsn + 1)
    assert any(p is value for p in recorder.parts)
    assert any(p is small for p in recorder.parts)
    wal.close()
    entries, _report = wal_module.replay(fs, "/w", 1)
    assert entries == [b"head" + value, small]


@pytest.mark.parametrize("log_append_time", [False, True])
def test_append_copies_once_and_checksums_as_the_format_needs(
    monkeypatch: pytest.MonkeyPatch, log_append_time: bool
) -> None:
    options = EngineOptions(background=False, wal=WalOptions(sync_mode=SyncMode.ALWAYS))
    config = TopicConfig(log_append_time=log_append_time)
    with PartitionLog.open(MemFS(), "/p", config, ManualClock(), options) as log:
        log.append(_batch(10))  # the first append writes the log's own keys too
        request = b"\0" * 7 + _batch() + b"\0" * 5  # a batch inside a request's buffer
        view = memoryview(request)[7:-5]
        recorder = _Recorder(monkeypatch)
        log.append_many([view])
        stored = log.read(1, 1 << 20).batches[0]
        assert bytes(stored[61:]) == bytes(view[61:])
        # The stamped bytes the memtable holds are the very object the WAL wrote.
        assert any(p is stored for p in recorder.parts)
        # CRC passes over the batch: verify the client's CRC, (LogAppendTime: the new
        # CRC), the WAL frame (a batch CRC covers all but its first 21 bytes; the frame
        # adds a few bytes of headers).
        passes = 3 if log_append_time else 2
        assert passes * (len(view) - 21) <= recorder.crc_bytes < passes * len(view) + 200
        assert [r.value for r in decode_records(stored)] == [b"x" * BIG]


def test_fetch_returns_stored_batches_and_views_not_copies() -> None:
    """A read from the memtable hands out the stored bytes themselves; a large value
    (value separation) comes as a view of its WAL entry; ``records`` joins them once."""
    options = EngineOptions(
        background=False,
        wal=WalOptions(sync_mode=SyncMode.ALWAYS),
        value_separation_bytes=BIG // 2,
    )
    with PartitionLog.open(MemFS(), "/p", TopicConfig(), ManualClock(), options) as log:
        small, big = _batch(10), _batch()
        log.append_many([small])
        log.append_many([big])
        first, second = log.read(0, 1 << 20), log.read(0, 1 << 20)
        assert first.batches[0] is second.batches[0]  # the memtable's own bytes
        assert first.batches[1] is second.batches[1]
        log.engine.flush()  # now the large value is a pointer into its WAL entry
        first = log.read(0, 1 << 20)
        assert isinstance(first.batches[1], memoryview)  # the large value: a view
        assert bytes(first.batches[1][61:]) == big[61:]
        assert first.records == b"".join(bytes(b) for b in first.batches)
        assert [len(list(decode_records(b))) for b in first.batches] == [1, 1]


def test_wal_copies_a_mutable_part_so_its_reuse_cannot_change_the_entry() -> None:
    fs = MemFS()
    wal = WriteAheadLog(fs, "/w", 1, WalOptions(sync_mode=SyncMode.ALWAYS))
    reused = bytearray(b"a" * 100)
    lsn = wal.append((b"head", reused, memoryview(reused)[:10]))
    reused[:] = b"b" * 100  # the caller reuses its buffer before the fsync wave
    wal.sync_to(lsn)
    wal.close()
    entries, _report = wal_module.replay(fs, "/w", 1)
    assert entries == [b"head" + b"a" * 110]
