"""An append never fsyncs on its own thread (a broker's event loop), in any sync mode.

DESIGN: "disk work that can stall the loop (fsync, SSTable writes, compaction) runs in
a worker thread; nothing else does". A WAL roll (fsync the old segment, create the new
one, fsync it and the directory), whether a memtable rotation or a segment past
``segment_bytes`` asks for it, and the fsync that bounds the WAL's unsynced memory
(``_RETAIN_AT``) are done by a sync thread, never by the thread that appended. Found
with py-spy on a broker run with ``--sync none``: 8.5% of the event loop's samples were
in ``OsFile.sync`` under ``WriteAheadLog.rotate``.

The filesystem records the thread of every ``File.sync``, ``FS.sync_dir`` and
``FS.create``; the test watches the appending thread between the engine's open and
close (which may do their IO where they are called).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from sentinel.broker.topic_config import TopicConfig
from sentinel.clock import ManualClock
from sentinel.fs import Buffer, File, MemFS
from sentinel.log.partition_log import PartitionLog
from sentinel.record import build_batch
from sentinel.storage.engine import Engine
from sentinel.storage.options import EngineOptions
from sentinel.storage.wal import SyncMode, WalOptions
from sentinel.storage.write_batch import WriteBatch

MiB = 1024 * 1024


class _RecordingFile:
    """A ``MemFile`` whose fsyncs are reported to its ``ThreadRecordingFS``."""

    def __init__(self, fs: ThreadRecordingFS, file: File) -> None:
        self._fs = fs
        self._file = file

    @property
    def path(self) -> str:
        return self._file.path

    def write(self, data: Buffer) -> None:
        self._fs.note_write(self.path)
        self._file.write(data)

    def writev(self, parts: Sequence[Buffer]) -> None:
        self._fs.note_write(self.path)
        self._file.writev(parts)

    def pread(self, offset: int, size: int) -> bytes:
        return self._file.pread(offset, size)

    def size(self) -> int:
        return self._file.size()

    def sync(self) -> None:
        self._fs.note("sync", self.path)
        self._file.sync()

    def write_synced(self, parts: Sequence[Buffer]) -> None:
        self._fs.note("sync", self.path)
        self._file.write_synced(parts)

    def truncate(self, size: int) -> None:
        self._file.truncate(size)

    def close(self) -> None:
        self._file.close()


class ThreadRecordingFS(MemFS):
    """``MemFS`` noting the fsyncs, directory fsyncs and creations done by one thread."""

    def __init__(self) -> None:
        super().__init__()
        self.watched: int | None = None
        self.on_watched: list[tuple[str, str]] = []  # (operation, path)
        self.elsewhere = 0  # the same operations on other threads
        self.record_writes = False  # also note writes (without a sync) to WAL segments

    def note_write(self, path: str) -> None:
        if self.record_writes and path.endswith(".wal"):
            self.note("write", path)

    def note(self, operation: str, path: str) -> None:
        if threading.get_ident() == self.watched:
            self.on_watched.append((operation, path))
        else:
            self.elsewhere += 1

    def create(self, path: str) -> File:
        self.note("create", path)
        return _RecordingFile(self, super().create(path))

    def open_append(self, path: str) -> File:
        return _RecordingFile(self, super().open_append(path))

    def sync_dir(self, path: str) -> None:
        self.note("sync_dir", path)
        super().sync_dir(path)


@dataclass(frozen=True, slots=True)
class Trigger:
    """What makes the WAL roll (or sync) while one thread appends."""

    name: str
    memtable_bytes: int
    segment_bytes: int
    value_bytes: int
    appends: int


MEMTABLE = Trigger("memtable rotation", 4096, 64 * MiB, 100, 600)
SEGMENT = Trigger("segment past segment_bytes", 64 * MiB, 4096, 100, 600)
# Past the unsynced bytes a WAL keeps for ``resume`` (8 MiB) without any roll.
RETAINED = Trigger("unsynced bytes past the retain bound", 256 * MiB, 256 * MiB, 60_000, 400)


def append_watched(fs: ThreadRecordingFS, mode: SyncMode, trigger: Trigger) -> int:
    """Open an engine, append ``trigger.appends`` batches from this thread while it is
    watched, close; the number of WAL segments the appends went through."""
    options = EngineOptions(
        memtable_bytes=trigger.memtable_bytes,
        value_separation_bytes=0,
        wal=WalOptions(sync_mode=mode, segment_bytes=trigger.segment_bytes),
    )
    engine = Engine.open("/db", options, fs=fs)
    first = engine.wal.current_segment
    fs.watched = threading.get_ident()
    lsn = 0
    for i in range(trigger.appends):
        value = (b"%06d" % i) * (trigger.value_bytes // 6)
        lsn = engine.write_nowait(WriteBatch().put(b"k%06d" % i, value))
        if mode is SyncMode.ALWAYS and i % 10 == 9:  # acknowledged by a sync thread
            engine.sync_future(lsn).result(10)
    if mode is SyncMode.ALWAYS:
        engine.sync_future(lsn).result(10)
    segments = engine.wal.current_segment - first
    fs.watched = None
    engine.close()
    return segments


@pytest.mark.parametrize("mode", list(SyncMode), ids=lambda m: m.value)
@pytest.mark.parametrize("trigger", [MEMTABLE, SEGMENT], ids=lambda t: t.name)
def test_an_append_that_rolls_the_wal_never_fsyncs_on_its_thread(
    mode: SyncMode, trigger: Trigger
) -> None:
    fs = ThreadRecordingFS()
    segments = append_watched(fs, mode, trigger)
    assert segments > 5  # the WAL rolled, several times
    assert fs.on_watched == []
    assert fs.elsewhere > 3 * segments  # the rolls' fsyncs were done, elsewhere
    with Engine.open("/db", fs=fs) as again:
        got = dict(again.scan())
    assert len(got) == trigger.appends
    assert got[b"k%06d" % (trigger.appends - 1)].startswith(b"%06d" % (trigger.appends - 1))


@pytest.mark.parametrize("mode", [SyncMode.NONE, SyncMode.INTERVAL], ids=lambda m: m.value)
def test_appends_past_the_retained_bytes_never_fsync_on_their_thread(mode: SyncMode) -> None:
    fs = ThreadRecordingFS()
    append_watched(fs, mode, RETAINED)
    assert fs.on_watched == []
    with Engine.open("/db", fs=fs) as again:
        assert sum(1 for _ in again.scan()) == RETAINED.appends


@pytest.mark.parametrize("mode", [SyncMode.NONE, SyncMode.INTERVAL], ids=lambda m: m.value)
def test_a_partition_log_append_that_rotates_never_fsyncs_on_its_thread(
    mode: SyncMode,
) -> None:
    """The stack py-spy showed: ``PartitionLog.append`` -> ``Engine.write_nowait`` ->
    ``_rotate_memtable`` -> ``WriteAheadLog.rotate`` -> ``OsFile.sync``."""
    fs = ThreadRecordingFS()
    options = EngineOptions(memtable_bytes=4096, wal=WalOptions(sync_mode=mode))
    log = PartitionLog.open(fs, "/p0", TopicConfig(), ManualClock(), options)
    first = log.engine.wal.current_segment
    fs.watched = threading.get_ident()
    for i in range(300):
        log.append(build_batch([(b"k", b"value %d " % i * 8, (), 1_700_000_000_000 + i)]))
    rolled = log.engine.wal.current_segment - first
    fs.watched = None
    log.close()
    assert rolled > 5
    assert fs.on_watched == []


def test_sync_always_hands_a_large_backlog_to_the_os_off_the_appending_thread() -> None:
    """Sync ``always`` buffers appends for the next group commit; past ``_FLUSH_AT``
    (1 MiB) unsynced and not handed to the OS, the buffer is written out without a
    sync (bounding the memory of a caller that never syncs). That ``writev`` is IO too:
    on a broker's event loop it waited for the page cache behind the sync's own writes
    to the same file (p99 10 ms, max 22 ms in a flood of 64 KB produces); it is done by
    a sync thread."""
    fs = ThreadRecordingFS()
    fs.record_writes = True
    options = EngineOptions(value_separation_bytes=0, wal=WalOptions(sync_mode=SyncMode.ALWAYS))
    engine = Engine.open("/db", options, fs=fs)
    fs.watched = threading.get_ident()
    value = b"v" * 60_000
    lsn = 0
    for i in range(100):  # ~6 MB, never synced meanwhile: the backlog passes 1 MiB often
        lsn = engine.write_nowait(WriteBatch().put(b"k%06d" % i, value))
    fs.watched = None
    wal = engine.wal
    deadline = time.monotonic() + 10
    while wal.unhanded_bytes >= 1 << 20 and time.monotonic() < deadline:
        time.sleep(0.01)  # the sync threads write it out
    assert wal.unhanded_bytes < 1 << 20  # bounded all the same
    engine.sync_future(lsn).result(10)
    engine.close()
    assert fs.on_watched == []
    assert fs.elsewhere > 0
    with Engine.open("/db", fs=fs) as again:
        assert sum(1 for _ in again.scan()) == 100

