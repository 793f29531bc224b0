"""Prepared segments: with sync ``none``/``interval`` an entry appended right after a
roll reaches the OS at once (it survives a process kill), with no fsync or file
creation on the appending thread, and the WAL stays durable as a prefix.

``wal`` ("Prepared segments"): a sync thread prepares the next segment ahead (created
under ``prepared_name``, linked header, fsynced); a roll switches to it and writes a
link (the old segment's number and size) and the entries after the roll into it at
once; the old segment's fsync, the rename to the final name and the directory fsync
follow on a sync thread. ``wal_format.settle_prepared`` adopts a prepared segment
after a crash only if its predecessor holds all the link says, else removes it.

The WAL's ``run_io`` here is a queue the test runs when it chooses, so a crash can
fall at every step of a roll: a process kill (``kill``: every byte written stays, as
the page cache keeps it) and a power cut (``MemFS.crash``, with and without a torn
tail).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from sentinel.fs import MemFS, SimulatedCrash, caused_by_crash
from sentinel.storage.engine import Engine
from sentinel.storage.files import wal_name
from sentinel.storage.options import EngineOptions
from sentinel.storage.sync_scheduler import SyncScheduler
from sentinel.storage.wal import SyncMode, WalOptions, WriteAheadLog, list_segments, replay
from sentinel.storage.wal_format import list_prepared, prepared_name
from test_loop_io import write_past_a_rotation

DIR = "/wal"


@dataclass
class ManualIO:
    """A ``run_io`` whose jobs run when the test says (``run``)."""

    jobs: list[Callable[[], None]] = field(default_factory=list)

    def submit(self, job: Callable[[], None]) -> None:
        self.jobs.append(job)

    def run(self) -> None:
        while self.jobs:
            self.jobs.pop(0)()


class DyingFS(MemFS):
    """``MemFS`` that remembers the simulated crash: the process is dead from then on."""

    def __init__(self) -> None:
        super().__init__()
        self.died = False

    def tick(self) -> None:
        try:
            super().tick()
        except SimulatedCrash:
            self.died = True
            raise


def kill(fs: MemFS) -> None:
    """A process kill: open files are gone, every byte written stays (the OS has it)."""
    with fs.mutex:
        fs.epoch += 1
        fs.locks.clear()
        fs.fail_after(None)


def all_bytes(fs: MemFS, directory: str) -> bytes:
    return b"".join(fs.read_all(f"{directory}/{name}") for name in fs.listdir(directory))


def entry(i: int) -> bytes:
    return b"entry-%03d-" % i + b"x" * (i % 5) * 7


def wal_options(mode: SyncMode, segment_bytes: int = 1 << 20) -> WalOptions:
    return WalOptions(sync_mode=mode, segment_bytes=segment_bytes)


def continues(fs: MemFS, got: list[bytes]) -> None:
    """After a replay no prepared file is left, and a new WAL numbered after the last
    segment appends after what was replayed."""
    assert list_prepared(fs, DIR) == []
    numbers = list_segments(fs, DIR)
    wal = WriteAheadLog(fs, DIR, numbers[-1] + 1 if numbers else 1, WalOptions())
    wal.append(b"next")
    wal.close()
    again, _ = replay(fs, DIR, 1)
    assert again == [*got, b"next"]


# ------------------------------------------------- the entry after a roll is in the OS


@pytest.mark.parametrize("mode", [SyncMode.NONE, SyncMode.INTERVAL], ids=lambda m: m.value)
@pytest.mark.parametrize("trigger", ["rotate_deferred", "segment_bytes"])
def test_an_entry_after_a_roll_is_in_the_os_before_the_rolls_job(
    mode: SyncMode, trigger: str
) -> None:
    fs = MemFS()
    io = ManualIO()
    wal = WriteAheadLog(
        fs, DIR, 1, wal_options(mode, 200), run_io=io.submit, interval_thread=False
    )
    io.run()  # the sync thread prepares the next segment
    wal.append(b"a" * 50)
    if trigger == "rotate_deferred":
        assert wal.rotate_deferred() == 2
    wal.append(b"b" * 120)  # past segment_bytes after "a": rolls if not rolled
    assert wal.current_segment == 2
    wal.append(b"after-the-roll")
    assert io.jobs  # the roll's IO has not run
    assert b"after-the-roll" in all_bytes(fs, DIR)
    expected = [b"a" * 50, b"b" * 120, b"after-the-roll"]
    kill(fs)
    got, report = replay(fs, DIR, 1)
    assert got == expected and report.segments == [1, 2]
    fs.crash()  # the adoption was made durable
    assert replay(fs, DIR, 1)[0] == expected
    continues(fs, got)


def test_a_roll_and_its_job_leave_the_final_segment_and_the_next_prepared() -> None:
    fs = MemFS()
    io = ManualIO()
    wal = WriteAheadLog(fs, DIR, 1, wal_options(SyncMode.NONE), run_io=io.submit)
    io.run()
    assert list_prepared(fs, DIR) == [2]
    wal.append(b"a")
    wal.rotate_deferred()
    wal.append(b"b")
    assert list_segments(fs, DIR) == [1] and list_prepared(fs, DIR) == [2]
    io.run()  # fsync 1, fsync 2, rename, directory fsync; prepare 3
    assert list_segments(fs, DIR) == [1, 2] and list_prepared(fs, DIR) == [3]
    fs.crash()  # the roll made both segments durable, and segment 2's name
    got, report = replay(fs, DIR, 1)
    assert got == [b"a", b"b"] and report.segments == [1, 2]


def test_a_prepared_segment_whose_predecessor_lost_its_tail_is_removed() -> None:
    """A power cut after the OS wrote back the new segment's pages but not the old
    one's tail: its entries cannot follow without a gap, so it goes."""
    fs = MemFS()
    io = ManualIO()
    wal = WriteAheadLog(fs, DIR, 1, wal_options(SyncMode.NONE), run_io=io.submit)
    io.run()
    wal.append(b"a")
    wal.sync()
    wal.append(b"b")  # in the OS, not synced
    wal.rotate_deferred()
    wal.append(b"c")
    prepared = f"{DIR}/{prepared_name(2)}"
    handle = fs.open_append(prepared)
    handle.sync()  # its pages written back (and its name, by another file's dir fsync)
    fs.sync_dir(DIR)
    fs.crash()  # segment 1 loses "b"
    got, _ = replay(fs, DIR, 1)
    assert got == [b"a"]
    assert not fs.exists(prepared)
    continues(fs, got)


def test_a_prepared_segment_left_by_a_kill_before_any_roll_is_removed() -> None:
    fs = MemFS()
    io = ManualIO()
    wal = WriteAheadLog(fs, DIR, 1, wal_options(SyncMode.INTERVAL), run_io=io.submit,
                        interval_thread=False)
    io.run()
    wal.append(b"a")
    kill(fs)
    assert list_prepared(fs, DIR) == [2]
    got, report = replay(fs, DIR, 1)
    assert got == [b"a"] and report.segments == [1]
    continues(fs, got)


# ------------------------------------------------------ crash at every step of a roll


@dataclass
class Outcome:
    appended: int = 0  # appends that returned before the process died
    synced: int = 0  # entries a successful sync covered
    attempted: int = 0


def workload(fs: DyingFS, mode: SyncMode) -> Outcome:
    """Appends around rolls whose jobs run a few appends later; syncs now and then.
    Stops where the simulated crash fell (the process died there)."""
    out = Outcome()
    io = ManualIO()
    try:
        wal = WriteAheadLog(
            fs, DIR, 1, wal_options(mode), run_io=io.submit, interval_thread=False
        )
        for i in range(30):
            if i % 6 == 3:
                io.run()  # the previous roll's IO and the next preparation
                if fs.died:
                    return out
                wal.rotate_deferred()
            out.attempted += 1
            wal.append(entry(i))
            if fs.died:
                return out
            out.appended = out.attempted
            if i % 6 == 5:
                io.run()
            if i % 4 == 3:
                if mode is SyncMode.ALWAYS:
                    wal.sync()
                else:
                    wal.sync_unsynced()  # an interval tick
            out.synced = wal.synced_lsn
            if fs.died:
                return out
        io.run()
        wal.close()
        out.synced = wal.synced_lsn
    except Exception as exc:
        if not caused_by_crash(exc):
            raise
    return out


@pytest.mark.parametrize("mode", list(SyncMode), ids=lambda m: m.value)
def test_a_crash_at_every_step_of_a_roll_recovers_a_prefix(mode: SyncMode) -> None:
    counting = DyingFS()
    whole = workload(counting, mode)
    expected = [entry(i) for i in range(30)]
    assert whole.appended == whole.synced == 30
    assert replay(counting, DIR, 1)[0] == expected
    rng = random.Random(11)
    for fail_at in range(counting.ops):
        for crash in ("kill", "power", "torn"):
            fs = DyingFS()
            fs.fail_after(fail_at)
            out = workload(fs, mode)
            if crash == "kill":
                kill(fs)
            else:
                fs.crash(rng if crash == "torn" else None)
            got, _ = replay(fs, DIR, 1)
            where = f"{crash} at operation {fail_at}: {len(got)} entries, {out}"
            assert got == expected[: len(got)], where
            assert out.synced <= len(got) <= out.attempted, where
            if crash == "kill" and mode is not SyncMode.ALWAYS:
                assert len(got) >= out.appended, where  # acknowledged: in the OS
            continues(fs, got)


def test_an_always_ack_in_a_new_segment_waits_for_its_predecessor() -> None:
    """ALWAYS mode never writes ahead into a prepared segment: a sync of an entry
    after a roll makes the old segment durable and the new one named first."""
    fs = MemFS()
    io = ManualIO()
    wal = WriteAheadLog(fs, DIR, 1, wal_options(SyncMode.ALWAYS), run_io=io.submit)
    io.run()
    assert list_prepared(fs, DIR) == []
    wal.append(b"a")
    wal.rotate_deferred()
    lsn = wal.append(b"b")
    wal.sync_to(lsn)
    fs.crash()
    assert replay(fs, DIR, 1)[0] == [b"a", b"b"]


# ------------------------------------------------------ an engine with real sync threads


def killed_copy(fs: MemFS) -> MemFS:
    """What a kill -9 leaves now: every file with all its bytes written."""
    copy = MemFS()
    with fs.mutex:  # (stored normalised: given back as the engine names them)
        files = {"/" + path.lstrip("/"): bytes(inode.data) for path, inode in fs.files.items()}
        dirs = {"/" + path.lstrip("/") for path in fs.dirs}
    for directory in sorted(dirs):
        copy.makedirs(directory)
    for path, data in files.items():
        handle = copy.create(path)
        handle.write(data)
        handle.sync()
    for directory in dirs:
        copy.sync_dir(directory)
    return copy


class HeldScheduler(SyncScheduler):
    """A sync scheduler whose jobs wait while ``hold`` is set (a busy sync thread)."""

    def __init__(self) -> None:
        super().__init__(threads=1)
        self.hold = False
        self.held: list[Callable[[], None]] = []
        self._held_lock = threading.Lock()
        self._outstanding = 0  # jobs handed to the threads and not ended

    def submit(self, job: Callable[[], None]) -> None:
        with self._held_lock:
            if self.hold:
                self.held.append(job)
                return
        self._submit_counted(job)

    def release(self) -> None:
        with self._held_lock:
            self.hold = False
            jobs, self.held = self.held, []
        for job in jobs:
            self._submit_counted(job)

    def _submit_counted(self, job: Callable[[], None]) -> None:
        def counted() -> None:
            try:
                job()
            finally:
                with self._held_lock:
                    self._outstanding -= 1

        with self._held_lock:
            self._outstanding += 1
        super().submit(counted)

    def wait_idle(self, seconds: float = 10) -> None:
        """Until every job handed to the threads has ended."""
        deadline = time.monotonic() + seconds
        while True:
            with self._held_lock:
                if not self._outstanding:
                    return
            assert time.monotonic() < deadline, "the sync jobs did not end"
            time.sleep(0.001)


@pytest.mark.parametrize("mode", [SyncMode.NONE, SyncMode.INTERVAL], ids=lambda m: m.value)
def test_an_engine_killed_while_its_roll_waits_keeps_the_writes_after_it(
    mode: SyncMode,
) -> None:
    fs = MemFS()
    scheduler = HeldScheduler()
    options = EngineOptions(
        memtable_bytes=1024, wal=WalOptions(sync_mode=mode), sync_scheduler=scheduler
    )
    engine = Engine.open("/db", options, fs=fs)
    deadline = time.monotonic() + 10
    while not list_prepared(fs, "/db"):
        assert time.monotonic() < deadline, "no segment was prepared"
        time.sleep(0.001)
    scheduler.wait_idle()  # the job that prepared it has ended
    scheduler.hold = True
    i = write_past_a_rotation(engine)
    image = killed_copy(fs)
    scheduler.release()
    engine.close()
    scheduler.shutdown()
    assert fs.exists("/db/" + wal_name(engine.wal.current_segment))
    with Engine.open("/db", EngineOptions(background=False), fs=image) as again:
        got = dict(again.scan())
    assert got[b"after-the-rotation"] == b"w" * 40
    assert all(got[b"k%04d" % n] == b"v" * 40 for n in range(i))
