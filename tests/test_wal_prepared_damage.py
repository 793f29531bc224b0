"""Damage to a prepared segment, or to the segment it follows, is refused, never dropped.

After a kill -9 under sync ``none``/``interval`` a prepared segment may hold entries
acknowledged to acks=1 producers (``wal``, "Prepared segments"). The replay
(``wal_format.settle_prepared``) adopts it when it and its predecessor are whole, and
removes it only for what a crash leaves: a header never used, a link torn at the tail,
a predecessor that lost its end (a power cut before its fsync), a segment superseded
by its final name. Any other shape is damage: ``CorruptionError`` naming the file,
nothing changed on disk (``--skip-damaged`` and ``--verify`` see it as it is), and the
scrub (``--verify``) reports the same file.
"""

from __future__ import annotations

import time

import pytest

from sentinel.errors import CorruptionError, MissingFileError
from sentinel.fs import MemFS
from sentinel.storage.engine import Engine
from sentinel.storage.files import wal_name
from sentinel.storage.options import EngineOptions
from sentinel.storage.scrub import ScrubReport, scrub_engine, scrub_wal
from sentinel.storage.wal import SyncMode, WalOptions, WriteAheadLog, list_segments, replay
from sentinel.storage.wal_format import (
    FRAME_HEADER_SIZE,
    HEADER_SIZE,
    LINK_FRAME_SIZE,
    encode_frame,
    list_prepared,
    prepared_name,
)
from test_loop_io import write_past_a_rotation
from test_wal_prepared import HeldScheduler, ManualIO, continues, killed_copy

DIR = "/wal"
PREDECESSOR = f"{DIR}/{wal_name(1)}"
PREPARED = f"{DIR}/{prepared_name(2)}"


def entry(i: int) -> bytes:
    return b"entry-%03d-" % i + b"x" * (i % 5) * 7


BEFORE = [entry(i) for i in range(3)]  # in segment 1
AFTER = [entry(i) for i in range(3, 6)]  # in the prepared segment 2


def kill(fs: MemFS) -> None:
    """A process kill: open files are gone, every byte written stays (the OS has it)."""
    with fs.mutex:
        fs.epoch += 1
        fs.locks.clear()
        fs.fail_after(None)


def killed_after_a_linked_roll() -> MemFS:
    """Segment 1 (three entries), then prepared segment 2 (link, three entries), all
    in the OS; the roll's IO never ran; kill -9."""
    fs = MemFS()
    io = ManualIO()
    options = WalOptions(sync_mode=SyncMode.NONE, segment_bytes=1 << 20)
    wal = WriteAheadLog(fs, DIR, 1, options, run_io=io.submit)
    io.run()  # the sync thread prepares segment 2
    for payload in BEFORE:
        wal.append(payload)
    wal.rotate_deferred()
    for payload in AFTER:
        wal.append(payload)
    assert io.jobs and list_prepared(fs, DIR) == [2] and list_segments(fs, DIR) == [1]
    kill(fs)
    return fs


def starts(data: bytes, first: int = HEADER_SIZE) -> list[int]:
    """The offset of every frame from ``first`` on."""
    found, offset = [], first
    while offset < len(data):
        found.append(offset)
        offset += FRAME_HEADER_SIZE + int.from_bytes(data[offset : offset + 4], "little")
    return found


def put(fs: MemFS, path: str, data: bytes) -> None:
    handle = fs.create(path)
    handle.write(data)
    handle.sync()
    handle.close()


def flip_at(fs: MemFS, path: str, position: int) -> None:
    data = bytearray(fs.read_all(path))
    data[position] ^= 0x40
    put(fs, path, bytes(data))


def files(fs: MemFS) -> dict[str, bytes]:
    return {name: fs.read_all(f"{DIR}/{name}") for name in fs.listdir(DIR)}


def scrub(fs: MemFS) -> ScrubReport:
    report = ScrubReport()
    scrub_wal(fs, DIR, 1, None, set(), report)
    return report


def damage(fs: MemFS, where: str) -> str:
    """Damage ``where``; the path of the file damaged."""
    prepared, before = fs.read_all(PREPARED), fs.read_all(PREDECESSOR)
    entries = starts(prepared, HEADER_SIZE + LINK_FRAME_SIZE)
    positions = {
        "prepared header": (PREPARED, 9),  # the segment number
        "link frame": (PREPARED, HEADER_SIZE + FRAME_HEADER_SIZE + 12),  # the linked size
        "link frame length": (PREPARED, HEADER_SIZE),
        "prepared middle entry": (PREPARED, entries[1] + FRAME_HEADER_SIZE + 2),
        "prepared last entry": (PREPARED, entries[-1] + FRAME_HEADER_SIZE + 2),
        "predecessor header": (PREDECESSOR, 2),
        "predecessor middle entry": (PREDECESSOR, starts(before)[1] + FRAME_HEADER_SIZE + 2),
        "predecessor last entry": (PREDECESSOR, starts(before)[-1] + FRAME_HEADER_SIZE + 2),
        "predecessor last length": (PREDECESSOR, starts(before)[-1]),
    }
    if where == "predecessor longer":
        put(fs, PREDECESSOR, before + encode_frame(b"not in the link"))
        return PREDECESSOR
    path, position = positions[where]
    flip_at(fs, path, position)
    return path


DAMAGE = [
    "prepared header",
    "link frame",
    "link frame length",
    "prepared middle entry",
    "prepared last entry",
    "predecessor header",
    "predecessor middle entry",
    "predecessor last entry",
    "predecessor last length",
    "predecessor longer",
]


def test_a_kill_after_a_linked_roll_adopts_the_prepared_segment() -> None:
    fs = killed_after_a_linked_roll()
    got, report = replay(fs, DIR, 1)
    assert got == BEFORE + AFTER and report.segments == [1, 2]
    continues(fs, got)


@pytest.mark.parametrize("where", DAMAGE)
def test_damage_to_a_prepared_segment_or_its_predecessor_is_refused(where: str) -> None:
    fs = killed_after_a_linked_roll()
    path = damage(fs, where)
    on_disk = files(fs)
    with pytest.raises(CorruptionError) as caught:
        replay(fs, DIR, 1)
    assert caught.value.path == path
    assert path in str(caught.value) and "\n" not in str(caught.value)
    assert files(fs) == on_disk  # nothing removed, cut or renamed
    with pytest.raises(CorruptionError):  # and the next start says the same
        replay(fs, DIR, 1)


@pytest.mark.parametrize("where", DAMAGE)
def test_the_scrub_reports_the_damaged_file_once(where: str) -> None:
    fs = killed_after_a_linked_roll()
    path = damage(fs, where)
    on_disk = files(fs)
    report = scrub(fs)
    assert [d.path for d in report.damaged] == [path]
    assert files(fs) == on_disk


def test_the_scrub_reads_an_adopted_prepared_segment_as_the_newest() -> None:
    fs = killed_after_a_linked_roll()
    report = scrub(fs)
    assert report.damaged == [] and report.notes == []
    assert report.files == 2
    put(fs, PREPARED, fs.read_all(PREPARED)[:-3])  # a torn tail: noted, as at start
    report = scrub(fs)
    assert report.damaged == [] and [n.path for n in report.notes] == [PREPARED]


@pytest.mark.parametrize("cut", ["inside the link", "link zeros", "link and entries zeros"])
def test_a_prepared_segment_whose_link_is_torn_is_removed(cut: str) -> None:
    """The link is written after the header's fsync: a power cut may leave a prefix of
    it, or its sector unwritten, with nothing valid after it."""
    fs = killed_after_a_linked_roll()
    data = fs.read_all(PREPARED)
    if cut == "inside the link":
        torn = data[: HEADER_SIZE + 11]
    elif cut == "link zeros":
        torn = data[:HEADER_SIZE] + bytes(LINK_FRAME_SIZE)
    else:
        torn = data[:HEADER_SIZE] + bytes(len(data) - HEADER_SIZE)
    put(fs, PREPARED, torn)
    report = scrub(fs)
    assert report.damaged == [] and [n.path for n in report.notes] == [PREPARED]
    got, _ = replay(fs, DIR, 1)
    assert got == BEFORE
    assert not fs.exists(PREPARED)
    continues(fs, got)


def test_a_never_used_prepared_segment_is_removed() -> None:
    fs = killed_after_a_linked_roll()
    put(fs, PREPARED, fs.read_all(PREPARED)[:HEADER_SIZE])
    assert scrub(fs).damaged == []
    got, report = replay(fs, DIR, 1)
    assert got == BEFORE and report.segments == [1]
    continues(fs, got)


def test_a_prepared_segment_with_a_torn_last_entry_is_adopted_and_cut() -> None:
    fs = killed_after_a_linked_roll()
    put(fs, PREPARED, fs.read_all(PREPARED)[:-3])
    got, report = replay(fs, DIR, 1)
    assert got == BEFORE + AFTER[:-1] and report.truncated_segment == 2
    continues(fs, got)


@pytest.mark.parametrize("cut", ["shorter", "header only", "unwritten tail"])
def test_a_prepared_segment_whose_predecessor_lost_its_end_is_removed(cut: str) -> None:
    """A power cut before the predecessor's fsync: none/interval never reported its
    tail synced, nor anything after it. Its own torn tail is then cut by the replay."""
    fs = killed_after_a_linked_roll()
    before = fs.read_all(PREDECESSOR)
    last = starts(before)[-1]
    if cut == "shorter":
        put(fs, PREDECESSOR, before[:-4])
    elif cut == "header only":
        put(fs, PREDECESSOR, before[:HEADER_SIZE])
    else:  # the same size, its last frame's sector never written (reads as zeros)
        put(fs, PREDECESSOR, before[:last] + bytes(len(before) - last))
    report = scrub(fs)
    assert report.damaged == [] and PREPARED in [n.path for n in report.notes]
    got, _ = replay(fs, DIR, 1)
    assert got == (BEFORE[:-1] if cut != "header only" else [])
    assert not fs.exists(PREPARED)
    continues(fs, got)


def test_a_prepared_segment_superseded_by_its_final_segment_is_removed() -> None:
    """A ``resume`` writes a failed linked roll's entries into a fresh segment of the
    same number; a prepared file it could not remove is stale, whatever it holds."""
    fs = killed_after_a_linked_roll()
    stale = fs.read_all(PREPARED)
    got, _ = replay(fs, DIR, 1)  # adopted: segment 2 under its final name
    put(fs, PREPARED, stale)
    assert replay(fs, DIR, 1)[0] == got == BEFORE + AFTER
    assert not fs.exists(PREPARED)


def test_a_prepared_segment_whose_predecessor_is_gone_is_refused() -> None:
    fs = killed_after_a_linked_roll()
    fs.remove(PREDECESSOR)
    with pytest.raises(MissingFileError) as caught:
        replay(fs, DIR, 1)
    assert caught.value.path == PREDECESSOR
    assert fs.exists(PREPARED)
    assert [d.path for d in scrub(fs).damaged] == [PREDECESSOR]


# ------------------------------------------------------------------ an engine's start


def killed_engine() -> tuple[MemFS, str]:
    """What a kill -9 leaves of an engine (sync none) whose roll's IO waits on a busy
    sync thread, with a write after the roll in its prepared segment; that segment."""
    fs = MemFS()
    scheduler = HeldScheduler()
    options = EngineOptions(
        memtable_bytes=1024,
        wal=WalOptions(sync_mode=SyncMode.NONE),
        sync_scheduler=scheduler,
    )
    engine = Engine.open("/db", options, fs=fs)
    deadline = time.monotonic() + 10
    while not list_prepared(fs, "/db"):
        assert time.monotonic() < deadline, "no segment was prepared"
        time.sleep(0.001)
    scheduler.wait_idle()  # the job that prepared it has ended
    scheduler.hold = True
    write_past_a_rotation(engine)
    prepared = f"/db/{prepared_name(engine.wal.current_segment)}"
    image = killed_copy(fs)
    scheduler.release()
    engine.close()
    scheduler.shutdown()
    return image, prepared


def test_an_engine_refuses_a_damaged_prepared_segment_and_the_scrub_names_it() -> None:
    fs, prepared = killed_engine()
    data = fs.read_all(prepared)
    assert b"after-the-rotation" in data
    flip_at(fs, prepared, data.index(b"after-the-rotation"))
    on_disk = {name: fs.read_all(f"/db/{name}") for name in fs.listdir("/db")}
    report = ScrubReport()
    scrub_engine(fs, "/db", report)
    assert [d.path for d in report.damaged] == [prepared]
    with pytest.raises(CorruptionError) as caught:
        Engine.open("/db", EngineOptions(background=False), fs=fs)
    assert caught.value.path == prepared
    assert {name: fs.read_all(f"/db/{name}") for name in fs.listdir("/db")} == on_disk
