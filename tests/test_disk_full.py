"""A full disk, injected: an FS whose writes or fsyncs fail with ENOSPC while it is
"full". The WAL goes into a failed state and resumes in a fresh segment, flushes retry,
nothing acknowledged is lost (read back after a crash too), one log line per change."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Sequence

import pytest

from metrics_polling import wait_for
from sentinel.broker.meta_store import MetaStore
from sentinel.broker.topic_config import TopicConfig
from sentinel.clock import ManualClock
from sentinel.errors import StorageUnavailableError
from sentinel.fs import Buffer, File, MemFS
from sentinel.log.open_files import OpenLogLimit
from sentinel.log.partition_log import PartitionLog
from sentinel.record import build_batch, decode_records
from sentinel.storage import clean_marker
from sentinel.storage.engine import Engine
from sentinel.storage.files import TABLE_SUFFIX, WAL_SUFFIX
from sentinel.storage.options import EngineOptions
from sentinel.storage.wal import SyncMode, WalOptions
from sentinel.storage.wal_format import list_segments, replay

D = "/data/p0"
ENOSPC = OSError(errno.ENOSPC, "No space left on device")


class FullFile:
    """A MemFS file that asks its FS before every write and fsync."""

    def __init__(self, fs: FullFS, inner: File) -> None:
        self._fs = fs
        self._inner = inner

    @property
    def path(self) -> str:
        return self._inner.path

    def write(self, data: Buffer) -> None:
        self._fs.check(self.path, "write")
        self._inner.write(data)

    def writev(self, parts: Sequence[Buffer]) -> None:
        self._fs.check(self.path, "write")
        self._inner.writev(parts)

    def pread(self, offset: int, size: int) -> bytes:
        return self._inner.pread(offset, size)

    def size(self) -> int:
        return self._inner.size()

    def sync(self) -> None:
        self._fs.check(self.path, "sync")
        self._inner.sync()

    def write_synced(self, parts: Sequence[Buffer]) -> None:
        self.writev(parts)
        self.sync()

    def truncate(self, size: int) -> None:
        self._inner.truncate(size)

    def close(self) -> None:
        self._inner.close()


class FullFS(MemFS):
    """``refuse(path, op)`` (op "write" or "sync") says which calls get ENOSPC."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse: Callable[[str, str], bool] = lambda _path, _op: False
        self.refused = 0

    def check(self, path: str, op: str) -> None:
        if self.refuse(path, op):
            self.refused += 1
            raise OSError(errno.ENOSPC, "No space left on device", path)

    def create(self, path: str) -> File:
        self.check(path, "write")  # a new file needs an inode and a page
        return FullFile(self, super().create(path))

    def open_append(self, path: str) -> File:
        return FullFile(self, super().open_append(path))

    def full(self, op: str | None = None, suffix: str = "") -> None:
        """Refuse ``op`` (both when None) on files ending with ``suffix``."""
        self.refuse = lambda path, o: (op is None or o == op) and path.endswith(suffix)

    def space_back(self) -> None:
        self.refuse = lambda _path, _op: False


def batch(tag: str, n: int = 3, size: int = 10) -> bytes:
    return build_batch(
        [
            (b"k%d" % i, f"{tag}-{i}".encode().ljust(size, b"."), (), 1_700_000_000_000 + i)
            for i in range(n)
        ]
    )


def records(log: PartitionLog) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    offset = log.log_start_offset
    while offset < log.high_watermark:
        result = log.read(offset, 1 << 20)
        for b in result.batches:
            out.extend((r.offset, r.value or b"") for r in decode_records(b))
        offset = result.next_offset
    return out


def open_log(fs: MemFS, clock: ManualClock, **engine: object) -> PartitionLog:
    options = EngineOptions(memtable_bytes=64 * 1024, **engine)  # type: ignore[arg-type]
    return PartitionLog.open(fs, D, TopicConfig(), clock, options)


def health_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [
        (r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("sentinel.storage")
    ]


@pytest.mark.parametrize("op", ["write", "sync"])
def test_failed_wal_refuses_typed_keeps_reads_and_resumes_in_a_fresh_segment(
    op: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sentinel")
    fs, clock = FullFS(), ManualClock()
    log = open_log(fs, clock)
    acked = [log.append(batch(f"a{i}")) for i in range(5)]
    acked_records = records(log)
    assert len(acked_records) == 15
    segment_before = log.engine.wal.current_segment

    fs.full(op, WAL_SUFFIX)
    with pytest.raises(StorageUnavailableError):  # the fsync fails: not acknowledged
        log.append(batch("lost-or-kept", size=6000))  # a large value: a WAL pointer
    for _ in range(50):  # within the backoff: refused before anything is written
        with pytest.raises(StorageUnavailableError):
            log.append(batch("refused"))
    refused = fs.refused
    # Reads of what was acknowledged go on; nothing unacknowledged is visible.
    assert records(log) == acked_records
    assert log.high_watermark == acked[-1].last_offset + 1

    clock.advance(60)  # still full: one more attempt, which fails
    with pytest.raises(StorageUnavailableError):
        log.append(batch("still-full"))
    assert fs.refused > refused

    fs.space_back()
    clock.advance(60)
    after = log.append(batch("after"))
    # The batch whose fsync failed was kept and re-synced: no offset was reused.
    assert after.base_offset == acked[-1].last_offset + 1 + 3
    assert log.engine.wal.current_segment > segment_before
    all_now = records(log)
    assert all_now[:15] == acked_records
    assert [v[:14] for _o, v in all_now[15:18]] == [b"lost-or-kept-%d" % i for i in range(3)]
    log.engine.flush()  # the large value's pointer moved with its frame
    assert records(log) == all_now

    lines = health_lines(caplog)
    assert [level for level, _m in lines] == [logging.WARNING, logging.INFO], lines
    assert "No space left" in lines[0][1] and D in lines[0][1]

    # A crash: everything acknowledged (and everything synced since) comes back.
    log.append(batch("last"))
    fs.crash()
    reopened = open_log(fs, clock)
    assert reopened.engine.replay_report is not None
    assert records(reopened)[: len(all_now)] == all_now
    reopened.close()


def test_failed_segment_is_sealed_at_its_synced_length() -> None:
    fs, clock = FullFS(), ManualClock()
    log = open_log(fs, clock, value_separation_bytes=0)
    log.append(batch("a"))
    fs.full("sync", WAL_SUFFIX)  # the write reaches the page cache, the fsync fails
    with pytest.raises(StorageUnavailableError):
        log.append(batch("b"))
    fs.space_back()
    clock.advance(60)
    log.append(batch("c"))
    fs.crash()
    # Every segment replays whole (a bad entry in a segment but the last would raise
    # CorruptionError): the failed one was cut back to its synced length.
    _payloads, report = replay(fs, D, list_segments(fs, D)[0])
    assert report.dropped_bytes == 0 and len(report.segments) >= 2
    reopened = open_log(fs, clock)
    assert [v[:3] for _o, v in records(reopened)] == [
        b"a-0",
        b"a-1",
        b"a-2",
        b"b-0",
        b"b-1",
        b"b-2",
        b"c-0",
        b"c-1",
        b"c-2",
    ]
    reopened.close()


def test_close_with_failed_storage_does_not_raise_and_keeps_acked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sentinel")
    fs, clock = FullFS(), ManualClock()
    log = open_log(fs, clock)
    log.append(batch("a"))
    fs.full()
    with pytest.raises(StorageUnavailableError):
        log.append(batch("b"))
    log.close()  # no final flush possible: one line, no exception
    assert len([m for lv, m in health_lines(caplog) if lv >= logging.WARNING]) == 2
    fs.space_back()
    fs.crash()
    reopened = open_log(fs, clock)
    assert [v[:3] for _o, v in records(reopened)][:3] == [b"a-0", b"a-1", b"a-2"]
    reopened.close()


def test_discarding_close_of_a_failed_log_frees_its_files() -> None:
    fs, clock = FullFS(), ManualClock()
    log = open_log(fs, clock)
    log.append(batch("a"))
    fs.full()
    with pytest.raises(StorageUnavailableError):
        log.append(batch("b"))
    log.close(discard=True)
    fs.remove_tree(D)
    assert not fs.exists(D)


def test_failing_flushes_retry_with_backoff_and_one_line_each_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sentinel")
    fs = FullFS()
    options = EngineOptions(memtable_bytes=4 * 1024, max_immutable_memtables=2)
    engine = Engine.open(D, options, fs=fs)
    fs.full(suffix=TABLE_SUFFIX)  # the WAL has room; tables do not
    written: dict[bytes, bytes] = {}
    refused = 0
    for i in range(200):
        key, value = b"key-%04d" % i, b"v" * 300
        try:
            engine.put(key, value)
            written[key] = value
        except StorageUnavailableError:
            refused += 1
    assert refused > 0, "writers must be refused, not blocked, while flushes fail"
    assert engine.unavailable is not None and engine.failed is None
    wait_for(lambda: fs.refused >= 3, "flush retries", timeout=20.0)
    assert not [n for n in fs.listdir(D) if n.endswith(TABLE_SUFFIX)]  # partial ones removed
    for key, value in written.items():
        assert engine.get(key) == value
    fs.space_back()
    wait_for(lambda: engine.unavailable is None, "flushes to succeed again", timeout=20.0)
    engine.put(b"after", b"x")
    engine.flush()
    lines = [m for m in health_lines(caplog) if "flushes" in m[1]]
    assert [level for level, _m in lines] == [logging.WARNING, logging.INFO], lines
    engine.close()
    fs.crash()
    reopened = Engine.open(D, options, fs=fs)
    for key, value in written.items():
        assert reopened.get(key) == value
    assert reopened.get(b"after") == b"x"
    reopened.close()


def test_meta_store_commit_refused_typed_then_recovers() -> None:
    from sentinel.broker.group_events import OffsetAndMetadata

    fs = FullFS()
    meta = MetaStore.open(fs, "/data/meta")
    meta.commit_offsets("g", {("t", 0): OffsetAndMetadata(5, "")})
    fs.full()
    with pytest.raises(StorageUnavailableError):
        meta.commit_offsets("g", {("t", 0): OffsetAndMetadata(9, "")})
    fs.space_back()
    meta.resume()
    meta.commit_offsets("g", {("t", 0): OffsetAndMetadata(12, "")})
    assert meta.all_offsets()["g"][("t", 0)].offset == 12
    meta.close()
    fs.crash()
    reopened = MetaStore.open(fs, "/data/meta")
    assert reopened.all_offsets()["g"][("t", 0)].offset == 12
    reopened.close()


def test_wal_in_none_mode_resumes_too() -> None:
    fs, clock = FullFS(), ManualClock()
    log = open_log(fs, clock, wal=WalOptions(sync_mode=SyncMode.NONE))
    log.append(batch("a"))
    fs.full("write", WAL_SUFFIX)
    with pytest.raises(StorageUnavailableError):  # the write fails: refused at append
        log.append(batch("b"))
    fs.space_back()
    clock.advance(60)
    log.append(batch("c"))
    log.engine.sync()
    fs.crash()
    reopened = open_log(fs, clock, wal=WalOptions(sync_mode=SyncMode.NONE))
    assert [v[:1] for _o, v in records(reopened)] == [b"a"] * 3 + [b"c"] * 3
    reopened.close()


def test_wal_entry_whose_background_write_fails_is_kept_for_resume() -> None:
    """An append that hands a large backlog to the OS and fails there still returns its
    LSN (the caller puts it in its memtable); ``resume`` makes it durable."""
    from sentinel.storage.wal import WalFailedError, WalOptions, WriteAheadLog

    fs = FullFS()
    wal = WriteAheadLog(fs, "/w", 1, WalOptions())
    wal.append_sync(b"first")
    fs.full("write", WAL_SUFFIX)
    lsns = []
    while wal.failed is None:  # past 1 MiB the backlog is handed over: that write fails
        lsns.append(wal.append(b"x" * (300 * 1024)))
    assert lsns == [2, 3, 4, 5]  # the append whose hand-over failed returned its LSN
    with pytest.raises(WalFailedError):
        wal.sync_to(lsns[-1])
    with pytest.raises(WalFailedError):
        wal.append(b"refused")
    fs.space_back()
    resumed = wal.resume()
    assert resumed is not None and resumed.new_segment == 2
    assert wal.synced_lsn == 5
    wal.append_sync(b"last")
    wal.close()
    fs.crash()
    payloads, report = replay(fs, "/w", 1)
    assert payloads == [b"first", *[b"x" * (300 * 1024)] * 4, b"last"]
    assert report.dropped_bytes == 0


def test_a_full_disk_leaves_an_idle_log_unmarked_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Marking an idle log clean (``mark_idle_clean``) is an optimisation: on a full
    disk it does not happen, says nothing per pass, leaves no record, and the log is
    marked by a pass once space is back; its data is intact either way."""
    fs, clock = FullFS(), ManualClock()
    limit = OpenLogLimit(1, lambda job, delay: job() if delay <= 0 else None)
    options = EngineOptions(memtable_bytes=64 * 1024, background=False, hold_lock=False)
    logs = [
        PartitionLog.open(fs, name, TopicConfig(), clock, options, open_limit=limit)
        for name in ("/idle", "/busy")
    ]
    logs[0].append(batch("a"))
    logs[1].append(batch("b"))  # the limit of one releases /idle
    clock.advance(60)
    fs.full(suffix=".tmp")  # the record's temp file cannot be written
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            assert not logs[0].mark_idle_clean(30)
    assert not fs.exists("/idle/" + clean_marker.CLEAN_NAME)
    assert not logs[0].files_open  # closed again after the attempt
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    fs.space_back()
    assert logs[0].mark_idle_clean(30)
    assert fs.exists("/idle/" + clean_marker.CLEAN_NAME)
    assert [v for _o, v in records(logs[0])] == [b"a-0.......", b"a-1.......", b"a-2......."]
    for log in logs:
        log.close()
