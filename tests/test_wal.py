"""The write-ahead log: format, replay, crash model, group commit, failure propagation."""

from __future__ import annotations

import contextlib
import errno
import random
import struct
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.codec.crc import crc32c
from sentinel.errors import (
    ClosedError,
    CorruptionError,
    InvalidArgumentError,
    MissingFileError,
    UnsupportedFormatError,
    ValueTooLargeError,
)
from sentinel.fs import FS, DirLock, File, MemFS, OsFS, SimulatedCrash
from sentinel.storage.files import join, wal_name
from sentinel.storage.torn import SECTOR_BYTES
from sentinel.storage.wal import (
    _FLUSH_AT,
    FRAME_HEADER_SIZE,
    HEADER_SIZE,
    SyncMode,
    WalFailedError,
    WalOptions,
    WriteAheadLog,
    encode_frame,
    list_segments,
    replay,
)

DIR = "/db"


def new_fs() -> MemFS:
    fs = MemFS()
    fs.makedirs(DIR)
    return fs


def seg(number: int, directory: str = DIR) -> str:
    return join(directory, wal_name(number))


def memfs_with(files: dict[str, bytes]) -> MemFS:
    """A MemFS whose files (in DIR) are durable with exactly these bytes."""
    fs = new_fs()
    for path, data in files.items():
        handle = fs.create(path)
        handle.write(data)
        handle.sync()
        handle.close()
    fs.sync_dir(DIR)
    return fs


def frame_size(payload: bytes) -> int:
    return FRAME_HEADER_SIZE + len(payload)


class SpyFS:
    """Delegates to a MemFS; counts file syncs and can make them slow or fail."""

    def __init__(self, inner: MemFS, sync_delay: float = 0.0) -> None:
        self.inner = inner
        self.sync_delay = sync_delay
        self.syncs = 0
        self.fail_syncs = False
        self.fail_writes = False
        self.after_sync: Callable[[], None] | None = None  # runs inside each file sync
        self.mutex = threading.Lock()

    def create(self, path: str) -> File:
        return SpyFile(self, self.inner.create(path))

    def open_append(self, path: str) -> File:
        return SpyFile(self, self.inner.open_append(path))

    def open_read(self, path: str) -> File:
        return self.inner.open_read(path)

    def read_all(self, path: str) -> bytes:
        return self.inner.read_all(path)

    def exists(self, path: str) -> bool:
        return self.inner.exists(path)

    def is_dir(self, path: str) -> bool:
        return self.inner.is_dir(path)

    def listdir(self, path: str) -> list[str]:
        return self.inner.listdir(path)

    def makedirs(self, path: str) -> None:
        self.inner.makedirs(path)

    def remove(self, path: str) -> None:
        self.inner.remove(path)

    def rename(self, src: str, dst: str) -> None:
        self.inner.rename(src, dst)

    def sync_dir(self, path: str) -> None:
        self.inner.sync_dir(path)

    def file_size(self, path: str) -> int:
        return self.inner.file_size(path)

    def lock(self, path: str) -> DirLock:
        return self.inner.lock(path)


class SpyFile:
    def __init__(self, fs: SpyFS, inner: File) -> None:
        self._fs = fs
        self._inner = inner

    @property
    def path(self) -> str:
        return self._inner.path

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._fs.fail_writes:
            raise OSError(errno.ENOSPC, "no space left (injected)")
        self._inner.write(data)

    def writev(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(bytes(p) for p in parts))

    def pread(self, offset: int, size: int) -> bytes:
        return self._inner.pread(offset, size)

    def size(self) -> int:
        return self._inner.size()

    def sync(self) -> None:
        with self._fs.mutex:
            self._fs.syncs += 1
        if self._fs.sync_delay:
            time.sleep(self._fs.sync_delay)
        if self._fs.fail_syncs:
            raise OSError(errno.EIO, "fsync failed (injected)")
        self._inner.sync()
        if self._fs.after_sync is not None:
            self._fs.after_sync()

    def write_synced(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        self.writev(parts)
        self.sync()

    def truncate(self, size: int) -> None:
        self._inner.truncate(size)

    def close(self) -> None:
        self._inner.close()


def run_threads(count: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive(), "a writer is stuck"  # e.g. a waiter never woken


# --------------------------------------------------------------------- format


def test_bytes_on_disk_match_the_documented_layout() -> None:
    fs = new_fs()
    wal = WriteAheadLog(fs, DIR, 7, WalOptions())
    wal.append_sync(b"hello")
    wal.append_sync(b"")
    wal.close()
    header = struct.pack("<4sHHQ", b"SWAL", 1, 0, 7)
    expected = header + struct.pack("<I", crc32c(header))
    for payload in (b"hello", b""):
        prefix = struct.pack("<IB", len(payload), 1)
        expected += prefix + struct.pack("<I", crc32c(prefix + payload)) + payload
    assert fs.read_all(seg(7)) == expected
    assert len(expected) == HEADER_SIZE + frame_size(b"hello") + frame_size(b"")


@pytest.mark.parametrize("mode", list(SyncMode))
def test_frames_in_parts_are_checksummed_by_whichever_thread_writes_them(
    mode: SyncMode,
) -> None:
    """Whichever path writes a frame (a sync, an appender's flush past the buffer bound,
    a roll, the close) writes the frame ``encode_frame`` gives: a payload in parts
    (a mutable one copied at append) checksums as joined."""
    fs = new_fs()
    wal = WriteAheadLog(fs, DIR, 1, WalOptions(sync_mode=mode, segment_bytes=1 << 30))
    rng = random.Random(7)
    payloads = [rng.randbytes(rng.randint(0, 3000)) for _ in range(40)]
    big = b"b" * (_FLUSH_AT + 1)  # the appender flushes: it checksums what it writes
    written: list[bytes] = []

    def add(payload: bytes) -> None:
        cut = len(payload) // 3
        wal.append((payload[:cut], memoryview(bytearray(payload[cut:]))))
        written.append(payload)

    for payload in payloads[:10]:
        add(payload)
    wal.sync()
    for payload in payloads[10:20]:
        add(payload)
    add(big)
    for payload in payloads[20:30]:
        add(payload)
    wal.rotate()  # the roll writes the rest of segment 1
    for payload in payloads[30:]:
        add(payload)
    wal.close()
    frames = b"".join(encode_frame(p) for p in written)
    first = HEADER_SIZE + sum(len(encode_frame(p)) for p in written[:31])
    assert fs.read_all(seg(1))[HEADER_SIZE:] == frames[: first - HEADER_SIZE]
    assert fs.read_all(seg(2))[HEADER_SIZE:] == frames[first - HEADER_SIZE :]
    assert replay(fs, DIR, 1)[0] == written


def test_resume_checksums_the_frames_it_writes_again() -> None:
    """The frames after the last fsync, written again by ``resume`` into the fresh
    segment, verify there."""
    fs = new_fs()
    wal = WriteAheadLog(fs, DIR, 1, WalOptions())
    wal.append_sync(b"durable")
    wal.append((b"un", b"synced"))
    fs.fail_after(0)
    with pytest.raises(WalFailedError):
        wal.sync()
    fs.fail_after(None)
    assert wal.resume() is not None
    wal.append((b"after", b"resume"))
    wal.close()
    assert replay(fs, DIR, 1, contiguous=False)[0] == [b"durable", b"unsynced", b"afterresume"]


def test_round_trip_across_rolls_and_rotate() -> None:
    fs = new_fs()
    rng = random.Random(1)
    wal = WriteAheadLog(fs, DIR, 3, WalOptions(segment_bytes=200))
    payloads = [rng.randbytes(rng.randint(0, 80)) for _ in range(120)]
    lsns = []
    for index, payload in enumerate(payloads):
        lsns.append(wal.append_sync(payload))
        if index % 17 == 16:
            wal.rotate()
    wal.close()
    assert lsns == list(range(1, 121))
    got, report = replay(fs, DIR, 3)
    assert got == payloads
    assert report.entries == 120 and report.dropped_bytes == 0
    assert report.truncated_segment is None
    assert report.segments == list(range(3, wal.current_segment + 1))
    for number in report.segments:
        assert fs.file_size(seg(number)) <= 200


def test_oversized_entry_gets_its_own_segment() -> None:
    fs = new_fs()
    wal = WriteAheadLog(fs, DIR, 1, WalOptions(segment_bytes=100))
    big = b"x" * 500
    for payload in (big, b"a", big, b"b"):
        wal.append(payload)
    wal.close()
    assert list_segments(fs, DIR) == [1, 2, 3, 4]  # no empty segment in between
    assert replay(fs, DIR, 1)[0] == [big, b"a", big, b"b"]


def test_replay_from_a_given_segment() -> None:
    fs = new_fs()
    wal = WriteAheadLog(fs, DIR, 10, WalOptions(sync_mode=SyncMode.NONE))
    by_segment: dict[int, list[bytes]] = {}
    for round_ in range(5):
        for i in range(4):
            payload = f"{round_}:{i}".encode()
            wal.append(payload)
            by_segment.setdefault(wal.current_segment, []).append(payload)
        assert wal.rotate() == wal.current_segment == 11 + round_
    wal.close()
    for start in range(10, 17):
        expected = [p for n in sorted(by_segment) if n >= start for p in by_segment[n]]
        assert replay(fs, DIR, start)[0] == expected
    # The WAL numbers its segments contiguously: a needed segment that is absent is
    # damage, not a gap to skip.
    with pytest.raises(MissingFileError, match=r"00000000000000000009\.wal"):
        replay(fs, DIR, 9)


def test_entries_after_rotate_land_in_the_new_segment() -> None:
    fs = new_fs()
    wal = WriteAheadLog(fs, DIR, 1, WalOptions(sync_mode=SyncMode.NONE))
    wal.append(b"old")
    new = wal.rotate()
    wal.append(b"new")
    wal.close()
    assert new == 2
    assert replay(fs, DIR, 2)[0] == [b"new"]


def test_next_number_hook_draws_segment_numbers() -> None:
    fs = new_fs()
    numbers = iter([10, 20, 5])
    wal = WriteAheadLog(fs, DIR, 1, WalOptions(), next_number=lambda: next(numbers))
    wal.append_sync(b"a")
    assert wal.rotate() == 10
    wal.append_sync(b"b")
    assert wal.rotate() == 20
    with pytest.raises(InvalidArgumentError):
        wal.rotate()
    wal.append_sync(b"c")
    wal.close()
    assert list_segments(fs, DIR) == [1, 10, 20]
    assert replay(fs, DIR, 1, contiguous=False)[0] == [b"a", b"b", b"c"]


@given(
    ops=st.lists(st.one_of(st.binary(max_size=120), st.none()), max_size=60),
    segment_bytes=st.integers(min_value=HEADER_SIZE + 1, max_value=600),
    mode=st.sampled_from(list(SyncMode)),
)
@settings(max_examples=60, deadline=None)
def test_random_payload_lists_round_trip(
    ops: list[bytes | None], segment_bytes: int, mode: SyncMode
) -> None:
    fs = new_fs()
    wal = WriteAheadLog(fs, DIR, 1, WalOptions(sync_mode=mode, segment_bytes=segment_bytes))
    model: list[bytes] = []
    for op in ops:
        if op is None:
            wal.rotate()
        else:
            assert wal.append(op) == len(model) + 1
            model.append(op)
    wal.close()
    got, report = replay(fs, DIR, 1)
    assert got == model
    assert report.dropped_bytes == 0
    assert report.segments == list(range(1, wal.current_segment + 1))


# ---------------------------------------------------------------- caller errors


def test_oversize_payload_is_refused_and_nothing_written() -> None:
    fs = new_fs()
    for mode in SyncMode:
        wal = WriteAheadLog(fs, "/w" + mode.value, 1, WalOptions(mode, max_entry_bytes=100))
        wal.append(b"x" * 100)
        size = fs.file_size(seg(1, "/w" + mode.value))
        with pytest.raises(ValueTooLargeError):
            wal.append(b"x" * 101)
        with pytest.raises(ValueTooLargeError):
            wal.append_sync(b"x" * 101)
        assert wal.last_lsn == 1
        assert fs.file_size(seg(1, "/w" + mode.value)) == size
        wal.close()
        assert replay(fs, "/w" + mode.value, 1)[0] == [b"x" * 100]


def test_closed_wal_raises() -> None:
    fs = new_fs()
    wal = WriteAheadLog(fs, DIR, 1, WalOptions())
    lsn = wal.append(b"a")
    wal.close()
    assert wal.synced_lsn == lsn
    calls: list[Callable[[], object]] = [
        lambda: wal.append(b"b"),
        lambda: wal.append_sync(b"b"),
        lambda: wal.sync_to(lsn),
        wal.sync,
        wal.rotate,
        lambda: wal.delete_segments_before(1),
    ]
    for call in calls:
        with pytest.raises(ClosedError):
            call()
    wal.close()  # closing twice is harmless
    assert replay(fs, DIR, 1)[0] == [b"a"]


def test_bad_arguments_are_refused() -> None:
    fs = new_fs()
    wal = WriteAheadLog(fs, DIR, 5, WalOptions())
    with pytest.raises(InvalidArgumentError):
        wal.sync_to(1)  # never appended
    with pytest.raises(InvalidArgumentError):
        wal.delete_segments_before(6)  # would delete the live segment
    wal.close()
    with pytest.raises(InvalidArgumentError):
        WriteAheadLog(fs, DIR, 5, WalOptions())  # would destroy segment 5
    with pytest.raises(InvalidArgumentError):
        WriteAheadLog(fs, DIR, 3, WalOptions())  # 5 would replay after 3's entries
    with pytest.raises(InvalidArgumentError):
        WalOptions(segment_bytes=10)
    with pytest.raises(InvalidArgumentError):
        WalOptions(sync_interval_ms=0)
    with pytest.raises(InvalidArgumentError):
        WalOptions(max_entry_bytes=1 << 32)


def test_delete_segments_before() -> None:
    fs = new_fs()
    wal = WriteAheadLog(fs, DIR, 1, WalOptions())
    for _ in range(4):
        wal.append_sync(b"x")
        wal.rotate()
    wal.delete_segments_before(4)
    assert list_segments(fs, DIR) == [4, 5]
    wal.delete_segments_before(wal.current_segment)
    assert list_segments(fs, DIR) == [5]
    fs.crash()  # the removals were made durable
    assert list_segments(fs, DIR) == [5]


# ------------------------------------------------------------- durability model


def test_none_and_interval_modes_hand_bytes_to_the_os_before_returning() -> None:
    for mode in (SyncMode.NONE, SyncMode.INTERVAL):
        fs = new_fs()
        wal = WriteAheadLog(fs, DIR, 1, WalOptions(mode, sync_interval_ms=10_000))
        wal.append(b"abc")
        assert fs.file_size(seg(1)) == HEADER_SIZE + frame_size(b"abc")
        wal.close()
    fs = new_fs()
    wal = WriteAheadLog(fs, DIR, 1, WalOptions(SyncMode.ALWAYS))
    wal.append(b"abc")  # ALWAYS buffers until sync_to
    assert fs.file_size(seg(1)) == HEADER_SIZE
    wal.sync_to(1)
    assert fs.file_size(seg(1)) == HEADER_SIZE + frame_size(b"abc")
    wal.close()


def test_always_mode_buffer_is_bounded_without_syncs() -> None:
    fs = new_fs()
    wal = WriteAheadLog(fs, DIR, 1, WalOptions())
    payload = b"p" * 4096
    for _ in range(600):  # ~2.4 MiB
        wal.append(payload)
    assert fs.file_size(seg(1)) > 1 << 20
    assert wal.synced_lsn == 0
    wal.close()
    assert len(replay(fs, DIR, 1)[0]) == 600


def test_synced_entries_survive_a_crash() -> None:
    fs = new_fs()
    wal = WriteAheadLog(fs, DIR, 1, WalOptions(segment_bytes=300))
    payloads = [f"entry {i}".encode() * 3 for i in range(60)]
    for payload in payloads:
        wal.append_sync(payload)
    fs.crash()
    got, report = replay(fs, DIR, 1)
    assert got == payloads
    assert report.dropped_bytes == 0


def test_unsynced_entries_may_be_lost_but_never_corrupt_earlier_ones() -> None:
    for mode in (SyncMode.ALWAYS, SyncMode.NONE):
        fs = new_fs()
        wal = WriteAheadLog(fs, DIR, 1, WalOptions(mode))
        for i in range(10):
            wal.append(b"durable %d" % i)
        wal.sync()
        for i in range(10):
            wal.append(b"maybe %d" % i)
        fs.crash()
        got, _ = replay(fs, DIR, 1)
        assert got == [b"durable %d" % i for i in range(10)]


def test_random_crashes_return_a_prefix_with_every_synced_entry() -> None:
    torn = lost = 0
    for seed in range(300):
        rng = random.Random(seed)
        fs = new_fs()
        mode = rng.choice([SyncMode.ALWAYS, SyncMode.NONE])
        options = WalOptions(mode, segment_bytes=rng.choice([64, 256, 4096]))
        wal = WriteAheadLog(fs, DIR, 1, options)
        appended: list[bytes] = []
        for _ in range(rng.randint(0, 60)):
            appended.append(rng.randbytes(rng.randint(0, 100)))
            wal.append(appended[-1])
            roll = rng.random()
            if roll < 0.1:
                wal.sync()
            elif roll < 0.15:
                wal.rotate()
        durable = wal.synced_lsn
        fs.crash(rng)
        got, report = replay(fs, DIR, 1)
        assert got == appended[: len(got)], seed
        assert len(got) >= durable, seed
        torn += report.dropped_bytes > 0
        lost += len(got) < len(appended)
        again, second = replay(fs, DIR, 1)  # replay left a clean log behind
        assert again == got and second.dropped_bytes == 0 and second.truncated_segment is None
        fs.crash()  # and made the cut durable
        assert replay(fs, DIR, 1)[0] == got
    assert torn > 50 and lost > 100, (torn, lost)  # the seeds do exercise torn tails


def test_a_crash_at_every_operation_keeps_acknowledged_entries() -> None:
    def workload(fs: MemFS, acked: list[bytes]) -> None:
        wal = WriteAheadLog(fs, DIR, 1, WalOptions(segment_bytes=120))
        for i in range(24):
            payload = b"entry-%02d" % i
            wal.append_sync(payload)
            acked.append(payload)
            if i % 7 == 6:
                wal.rotate()
        wal.close()

    probe = new_fs()
    start = probe.ops
    workload(probe, [])
    total = probe.ops - start
    for step in range(total + 1):
        fs = new_fs()
        acked: list[bytes] = []
        fs.fail_after(step)
        with contextlib.suppress(SimulatedCrash, WalFailedError):
            workload(fs, acked)
        fs.crash()
        got, _ = replay(fs, DIR, 1)
        assert got[: len(acked)] == acked, step
        assert got == [b"entry-%02d" % i for i in range(len(got))], step


def test_interval_mode_syncs_in_the_background_and_stops_on_close() -> None:
    fs = new_fs()
    wal = WriteAheadLog(fs, DIR, 1, WalOptions(SyncMode.INTERVAL, sync_interval_ms=5))
    for i in range(50):
        wal.append(b"%d" % i)
    deadline = time.monotonic() + 5
    while wal.synced_lsn < 50 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert wal.synced_lsn == 50
    fs.crash()
    assert replay(fs, DIR, 1)[0] == [b"%d" % i for i in range(50)]
    wal.close()
    assert not any(t.name.startswith("wal-sync:") for t in threading.enumerate())


# ----------------------------------------------------------- torn and corrupt


def three_segments() -> tuple[dict[str, bytes], list[list[bytes]]]:
    """Files of a closed WAL with segments 1..3, and the payloads of each."""
    fs = new_fs()
    wal = WriteAheadLog(fs, DIR, 1, WalOptions())
    groups = [[b"a", b"bb" * 20], [b"", b"ccc", b"d" * 50], [b"", b"seven!!", b"x" * 30]]
    for index, group in enumerate(groups):
        for payload in group:
            wal.append(payload)
        if index < 2:
            wal.rotate()
    wal.close()
    return {seg(n): fs.read_all(seg(n)) for n in (1, 2, 3)}, groups


def test_torn_tail_at_every_byte_keeps_every_earlier_entry() -> None:
    files, groups = three_segments()
    last = files[seg(3)]
    ends = [HEADER_SIZE]
    for payload in groups[2]:
        ends.append(ends[-1] + frame_size(payload))
    assert ends[-1] == len(last)
    earlier = groups[0] + groups[1]
    for cut in range(len(last) + 1):
        fs = memfs_with({**files, seg(3): last[:cut]})
        got, report = replay(fs, DIR, 1)
        whole = sum(1 for end in ends[1:] if end <= cut)
        assert got == earlier + groups[2][:whole], cut
        sizes = {1: len(files[seg(1)]), 2: len(files[seg(2)])}
        if cut < HEADER_SIZE:  # a torn create: the segment is removed
            assert not fs.exists(seg(3))
            assert report.dropped_bytes == cut and report.truncated_segment == 3
            assert report.sizes == sizes
            continue
        kept = ends[whole]
        assert report.dropped_bytes == cut - kept
        assert report.truncated_segment == (None if cut == kept else 3)
        assert report.sizes == {**sizes, 3: kept}  # where appends may go on
        assert fs.read_all(seg(3)) == last[:kept]
        fs.crash()  # the truncation was synced
        assert replay(fs, DIR, 1) == (
            got, report.__class__(len(got), [1, 2, 3], 0, None, {**sizes, 3: kept})
        )


def test_zeroed_header_of_the_last_segment_is_a_torn_create() -> None:
    files, groups = three_segments()
    fs = memfs_with({**files, seg(3): bytes(HEADER_SIZE)})
    got, report = replay(fs, DIR, 1)
    assert got == groups[0] + groups[1]
    assert report.truncated_segment == 3 and not fs.exists(seg(3))


def test_flipped_byte_in_the_last_entry_is_refused_not_cut() -> None:
    # A crash leaves a prefix of a write, or unwritten sectors (zeros); a whole last
    # frame with a changed byte is neither, and under sync always it may have been
    # acknowledged: refused, never cut (nothing is truncated).
    files, _groups = three_segments()
    last = files[seg(3)]
    start = len(last) - frame_size(b"x" * 30)
    for position in range(start, len(last)):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(last)
            damaged[position] ^= mask
            fs = memfs_with({**files, seg(3): bytes(damaged)})
            with pytest.raises(CorruptionError) as info:
                replay(fs, DIR, 1)
            assert info.value.path == seg(3), (position, mask)
            assert "not a torn tail" in str(info.value)
            assert fs.read_all(seg(3)) == bytes(damaged)


def test_unwritten_sectors_at_the_end_of_the_last_entry_are_a_torn_write() -> None:
    fs = new_fs()
    wal = WriteAheadLog(fs, DIR, 1, WalOptions())
    wal.append(b"first")
    wal.append(bytes(range(256)) * 12)  # 3,072 bytes, no zero run of its own
    wal.close()
    data = fs.read_all(seg(1))
    frame = len(data) - frame_size(bytes(3072))
    sectors = [b for b in range(0, len(data), SECTOR_BYTES) if frame < b < len(data)]
    assert len(sectors) >= 5
    for boundary in sectors:
        torn = data[:boundary] + bytes(len(data) - boundary)
        damaged = memfs_with({seg(1): torn})
        got, report = replay(damaged, DIR, 1)
        assert got == [b"first"], boundary
        assert report.dropped_bytes == len(data) - frame
    # Zeros after the last whole entry (space a crash left allocated, never written).
    got, report = replay(memfs_with({seg(1): data + bytes(700)}), DIR, 1)
    assert len(got) == 2 and report.dropped_bytes == 700
    # Zeros that stop short of a sector boundary are a change, not a torn write.
    off_boundary = sectors[0] + 7
    changed = data[:off_boundary] + bytes(len(data) - off_boundary - 1) + data[-1:]
    with pytest.raises(CorruptionError):
        replay(memfs_with({seg(1): changed}), DIR, 1)


def test_flipped_byte_in_a_middle_segment_raises() -> None:
    files, _ = three_segments()
    middle = files[seg(2)]
    for position in range(len(middle)):
        damaged = bytearray(middle)
        damaged[position] ^= 0x10
        fs = memfs_with({**files, seg(2): bytes(damaged)})
        with pytest.raises(CorruptionError) as info:
            replay(fs, DIR, 1)
        assert info.value.path == seg(2)
        assert fs.read_all(seg(2)) == bytes(damaged)  # nothing was "repaired"


def test_truncated_middle_segment_raises() -> None:
    files, _ = three_segments()
    fs = memfs_with({**files, seg(2): files[seg(2)][:-1]})
    with pytest.raises(CorruptionError):
        replay(fs, DIR, 1)
    fs = memfs_with({**files, seg(2): b""})
    with pytest.raises(CorruptionError):
        replay(fs, DIR, 1)


def test_damaged_header_of_the_last_segment_raises() -> None:
    files, _ = three_segments()
    for position in range(HEADER_SIZE):
        damaged = bytearray(files[seg(3)])
        damaged[position] ^= 0x04
        fs = memfs_with({**files, seg(3): bytes(damaged)})
        with pytest.raises(CorruptionError):
            replay(fs, DIR, 1)


def test_a_segment_under_the_wrong_name_or_version_is_refused() -> None:
    files, _ = three_segments()
    fs = memfs_with({seg(1): files[seg(1)], seg(2): files[seg(3)], seg(3): files[seg(3)]})
    with pytest.raises(CorruptionError, match="names segment 3"):
        replay(fs, DIR, 1)
    header = struct.pack("<4sHHQ", b"SWAL", 3, 0, 1)
    future = header + struct.pack("<I", crc32c(header)) + encode_frame(b"x")
    with pytest.raises(UnsupportedFormatError):
        replay(memfs_with({seg(1): future}), DIR, 1)


# ---------------------------------------------------------------- concurrency


def test_group_commit_coalesces_concurrent_syncs() -> None:
    fs = SpyFS(new_fs(), sync_delay=0.002)
    wal = WriteAheadLog(fs, DIR, 1, WalOptions())
    before = fs.syncs
    barrier = threading.Barrier(32)

    def writer(thread: int) -> None:
        barrier.wait()
        for i in range(20):
            wal.append_sync(b"%d/%d" % (thread, i))

    run_threads(32, writer)
    syncs = fs.syncs - before
    assert wal.synced_lsn == wal.last_lsn == 640
    assert syncs <= 640 // 8, syncs
    wal.close()
    got, _ = replay(fs.inner, DIR, 1)
    assert sorted(got) == sorted(b"%d/%d" % (t, i) for t in range(32) for i in range(20))
    for thread in range(32):  # each writer's entries stay in its order
        mine = [p for p in got if p.startswith(b"%d/" % thread)]
        assert mine == [b"%d/%d" % (thread, i) for i in range(20)]


def test_fsync_failure_reaches_every_waiter() -> None:
    inner = new_fs()
    fs = SpyFS(inner, sync_delay=0.002)
    wal = WriteAheadLog(fs, DIR, 1, WalOptions())
    wal.append_sync(b"durable")
    fs.fail_syncs = True
    barrier = threading.Barrier(16)
    outcomes: list[str] = []

    def writer(thread: int) -> None:
        barrier.wait()
        try:
            wal.append_sync(b"doomed %d" % thread)
            outcomes.append("durable")
        except WalFailedError:
            outcomes.append("failed")

    run_threads(16, writer)
    assert outcomes == ["failed"] * 16
    assert wal.synced_lsn == 1
    with pytest.raises(WalFailedError):
        wal.append(b"later")
    with pytest.raises(WalFailedError):
        wal.close()
    inner.crash()
    assert replay(inner, DIR, 1)[0] == [b"durable"]


@pytest.mark.parametrize("mode", list(SyncMode))
def test_entries_appended_during_an_fsync_are_not_reported_synced(mode: SyncMode) -> None:
    inner = new_fs()
    fs = SpyFS(inner)
    wal = WriteAheadLog(fs, DIR, 1, WalOptions(mode, sync_interval_ms=10_000))
    first = wal.append(b"first")
    late: list[int] = []

    def append_late() -> None:
        fs.after_sync = None
        late.append(wal.append(b"late"))

    fs.after_sync = append_late
    wal.sync_to(first)
    assert late == [2]
    assert wal.synced_lsn == 1
    inner.crash()
    assert replay(inner, DIR, 1)[0] == [b"first"]


def test_write_failure_fails_the_wal() -> None:
    fs = SpyFS(new_fs())
    wal = WriteAheadLog(fs, DIR, 1, WalOptions(SyncMode.NONE))
    wal.append(b"ok")
    fs.fail_writes = True
    with pytest.raises(WalFailedError):
        wal.append(b"lost")
    fs.fail_writes = False
    with pytest.raises(WalFailedError):
        wal.append(b"after")
    with pytest.raises(WalFailedError):
        wal.sync()


def test_on_sync_reports_latency_and_entries() -> None:
    fs = new_fs()
    reports: list[tuple[float, int]] = []
    wal = WriteAheadLog(
        fs, DIR, 1, WalOptions(), on_sync=lambda seconds, n: reports.append((seconds, n))
    )
    for _ in range(5):
        wal.append_sync(b"x")
    wal.append(b"y")
    wal.append(b"z")
    wal.rotate()
    wal.append(b"w")
    wal.close()
    assert [n for _, n in reports] == [1, 1, 1, 1, 1, 2, 1]
    assert all(seconds >= 0 for seconds, _ in reports)


# ------------------------------------------------------------------- real OS


def test_real_filesystem(tmp_path: Path) -> None:
    fs: FS = OsFS()
    directory = str(tmp_path / "wal")
    wal = WriteAheadLog(fs, directory, 5, WalOptions(segment_bytes=4096))

    def writer(thread: int) -> None:
        for i in range(50):
            wal.append_sync(b"%02d:%03d:" % (thread, i) + b"p" * 90)

    run_threads(8, writer)
    wal.rotate()
    wal.append_sync(b"tail entry")
    wal.close()
    got, report = replay(fs, directory, 5)
    assert len(got) == 401 and got[-1] == b"tail entry"
    assert report.dropped_bytes == 0 and report.segments[0] == 5
    last = join(directory, wal_name(report.segments[-1]))
    handle = fs.open_append(last)
    handle.truncate(handle.size() - 3)
    handle.close()
    torn, report = replay(fs, directory, 5)
    assert torn == got[:-1]
    assert report.dropped_bytes == frame_size(b"tail entry") - 3
    assert fs.file_size(last) == HEADER_SIZE
