"""The manifest: golden bytes, round trips, torn and corrupt files, rotation, and a crash at
every filesystem operation."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest

from sentinel.codec.crc import crc32c
from sentinel.errors import (
    ClosedError,
    CorruptionError,
    NotAnEngineDirectoryError,
    StateError,
    UnsupportedFormatError,
)
from sentinel.fs import FS, MemFS, OsFS, SimulatedCrash
from sentinel.storage.files import CURRENT_NAME, TableMeta, manifest_name, table_name
from sentinel.storage.manifest import (
    Manifest,
    RecoveredState,
    decode_edit,
    encode_edit,
    encode_header,
    encode_record,
    is_engine_dir,
    read_current,
    recover,
)
from sentinel.storage.version import InvariantError, Version, VersionEdit

D = "/db"


def meta(number: int, low: bytes, high: bytes, size: int = 1000) -> TableMeta:
    return TableMeta(file_number=number, size=size, entry_count=10, min_key=low, max_key=high)


def new_fs() -> MemFS:
    fs = MemFS()
    fs.makedirs(D)
    return fs


def manifest_bytes(fs: FS, state: RecoveredState | Manifest) -> bytes:
    return fs.read_all(f"{D}/{manifest_name(state.manifest_number)}")


# ------------------------------------------------------------------- golden


def test_header_golden_bytes() -> None:
    prefix = b"SNTLMANI" + struct.pack("<I", 1)
    assert encode_header() == prefix + struct.pack("<I", crc32c(prefix))
    assert len(encode_header()) == 16


def test_edit_record_golden_bytes() -> None:
    edit = VersionEdit(
        added=((1, meta(7, b"ab", b"xyz", size=4096)),),
        removed=((0, 5),),
        next_file_number=8,
    )
    payload = (
        struct.pack("<BB", 2, 0b10)  # EDIT, next_file_number only
        + struct.pack("<Q", 8)
        + struct.pack("<I", 1)
        + struct.pack("<BQ", 0, 5)
        + struct.pack("<I", 1)
        + struct.pack("<BQQQ", 1, 7, 4096, 10)
        + struct.pack("<I", 2)
        + b"ab"
        + struct.pack("<I", 3)
        + b"xyz"
    )
    assert encode_edit(edit) == payload
    length = struct.pack("<I", len(payload))
    expected = length + struct.pack("<II", crc32c(length), crc32c(payload)) + payload
    assert encode_record(payload) == expected
    decoded = decode_edit(payload)
    assert decoded.edit == edit
    assert decoded.snapshot_levels is None


def test_snapshot_payload_golden_bytes() -> None:
    edit = VersionEdit(added=((0, meta(3, b"a", b"b")),), log_number=2, next_file_number=4)
    payload = (
        struct.pack("<BBB", 1, 7, 0b11)
        + struct.pack("<QQ", 2, 4)
        + struct.pack("<I", 0)
        + struct.pack("<I", 1)
        + struct.pack("<BQQQ", 0, 3, 1000, 10)
        + struct.pack("<I", 1)
        + b"a"
        + struct.pack("<I", 1)
        + b"b"
    )
    assert encode_edit(edit, snapshot_levels=7) == payload
    assert decode_edit(payload).snapshot_levels == 7


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x03\x00",  # unknown kind
        b"\x02\x04" + struct.pack("<II", 0, 0),  # unknown flag
        b"\x02\x00" + struct.pack("<II", 0, 0) + b"x",  # trailing byte
        b"\x02\x00" + struct.pack("<II", 0, 1),  # table missing
        b"\x01\x07\x01" + struct.pack("<Q", 1) + struct.pack("<II", 0, 0),  # snapshot w/o next
    ],
)
def test_malformed_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(ValueError):
        decode_edit(payload)


# --------------------------------------------------------------- round trips


def base_version() -> Version:
    return Version.empty().apply(
        VersionEdit(
            added=((0, meta(3, b"a", b"m")), (2, meta(1, b"a", b"c")), (2, meta(2, b"d", b"f")))
        )
    )


def test_create_then_recover() -> None:
    fs = new_fs()
    m = Manifest.create(fs, D, 5, base_version(), log_number=4, next_file_number=6)
    assert fs.read_all(f"{D}/{CURRENT_NAME}") == (manifest_name(5) + "\n").encode()
    state = recover(fs, D)
    assert state.version == base_version()
    assert (state.log_number, state.next_file_number, state.manifest_number) == (4, 6, 5)
    assert state.records == 1
    assert not state.torn
    m.close()


def test_appends_are_replayed_in_order() -> None:
    fs = new_fs()
    m = Manifest.create(fs, D, 5, base_version(), 4, 6)
    m.append(VersionEdit(added=((0, meta(6, b"k", b"z")),), log_number=6, next_file_number=7))
    m.append(
        VersionEdit(removed=((0, 3), (0, 6)), added=((1, meta(7, b"a", b"z")),), next_file_number=8)
    )
    v = m.append(VersionEdit(removed=((1, 7),), added=((6, meta(7, b"a", b"z")),)))
    assert v == m.version
    state = recover(fs, D)
    assert state.version == m.version
    assert [t.file_number for t in state.version.levels[6]] == [7]
    assert (state.log_number, state.next_file_number, state.records) == (6, 8, 4)
    assert m.size == fs.file_size(f"{D}/{manifest_name(5)}")


def test_create_replaces_the_old_manifest_and_refuses_the_live_number() -> None:
    fs = new_fs()
    Manifest.create(fs, D, 5, base_version(), 4, 6).close()
    with pytest.raises(StateError):
        Manifest.create(fs, D, 5, Version.empty(), 1, 6)
    state = recover(fs, D)
    assert state.version == base_version()
    m = Manifest.create(fs, D, state.next_file_number, state.version, 4, 7)
    assert sorted(n for n in fs.listdir(D) if n.startswith("MANIFEST")) == [manifest_name(6)]
    assert read_current(fs, D) == 6
    assert recover(fs, D).version == base_version()
    m.close()


def test_resume_appends_to_a_clean_manifest_and_refuses_a_torn_or_big_one() -> None:
    fs = new_fs()
    m = Manifest.create(fs, D, 5, base_version(), 4, 6)
    m.append(VersionEdit(added=((0, meta(6, b"k", b"z")),), log_number=6, next_file_number=7))
    stale = fs.create(f"{D}/{manifest_name(3)}")  # left by a crash in a create
    stale.write(b"an older manifest")
    stale.close()
    state = recover(fs, D)

    resumed = Manifest.resume(fs, D, state, next_file_number=9)
    assert resumed is not None and resumed.manifest_number == 5
    assert (resumed.version, resumed.log_number, resumed.next_file_number) == (
        state.version, 6, 9,
    )  # fmt: skip
    assert sorted(n for n in fs.listdir(D) if n.startswith("MANIFEST")) == [manifest_name(5)]
    v = resumed.append(VersionEdit(added=((0, meta(9, b"a", b"b")),), next_file_number=10))
    again = recover(fs, D)
    assert (again.version, again.manifest_number, again.records) == (v, 5, 3)
    assert resumed.size == fs.file_size(f"{D}/{manifest_name(5)}")

    # A torn last record stays on disk: never appended after (a new manifest is made).
    handle = fs.open_append(f"{D}/{manifest_name(5)}")
    handle.write(encode_record(encode_edit(VersionEdit(next_file_number=11)))[:-3])
    handle.close()
    assert Manifest.resume(fs, D, recover(fs, D), next_file_number=11) is None
    # Nor one that has grown past its rotation size: rewritten, as a rotation would.
    clean = Manifest.create(fs, D, 11, again.version, 6, 12)
    assert Manifest.resume(fs, D, recover(fs, D), 12, rotate_bytes=clean.size) is None


def test_invalid_edits_write_nothing() -> None:
    fs = new_fs()
    m = Manifest.create(fs, D, 5, base_version(), 4, 6)
    size = m.size
    for edit in [
        VersionEdit(removed=((0, 99),)),
        VersionEdit(added=((0, meta(6, b"a", b"b")),)),  # next_file_number not advanced
        VersionEdit(added=((1, meta(9, b"a", b"b")),), next_file_number=9),
        VersionEdit(log_number=3),  # goes back
    ]:
        with pytest.raises(InvariantError):
            m.append(edit)
    assert m.size == size == fs.file_size(m.path)
    m.append(VersionEdit(log_number=9))  # still usable
    with pytest.raises(InvariantError):
        Manifest.create(fs, D, 20, base_version(), 4, next_file_number=3)


def test_a_failed_write_rotates_away_from_the_broken_file_and_close_is_final() -> None:
    fs = new_fs()
    m = Manifest.create(fs, D, 5, base_version(), 4, 6)
    fs.fail_after(1)  # the write goes through, the fsync fails
    with pytest.raises(SimulatedCrash):
        m.append(VersionEdit(log_number=5))
    m.append(VersionEdit(log_number=6))  # a new manifest, without the failed edit
    assert m.manifest_number > 5
    assert not fs.exists(f"{D}/{manifest_name(5)}")
    assert recover(fs, D).log_number == 6
    m.close()
    with pytest.raises(ClosedError):
        m.append(VersionEdit(log_number=6))


def test_os_filesystem_round_trip(tmp_path: Path) -> None:
    fs, directory = OsFS(), str(tmp_path / "db")
    fs.makedirs(directory)
    m = Manifest.create(fs, directory, 1, base_version(), 1, 4, rotate_bytes=200)
    for i in range(10):
        m.append(VersionEdit(log_number=2 + i, next_file_number=4 + i))
    m.close()
    state = recover(fs, directory)
    assert state.version == base_version()
    assert state.log_number == 11
    assert state.manifest_number == m.manifest_number > 1


# -------------------------------------------------------------------- rotation


def test_rotation_starts_a_new_manifest_with_a_snapshot() -> None:
    fs = new_fs()
    m = Manifest.create(fs, D, 5, base_version(), 4, 6, rotate_bytes=300)
    snapshot_size = m.size
    numbers = {m.manifest_number}
    version = m.version
    for i in range(40):
        number = 6 + i
        # Add a table, or take the last one away: the version stays small.
        if i % 2 == 0:
            edit = VersionEdit(added=((0, meta(number, b"k", b"z")),), next_file_number=number + 1)
        else:
            edit = VersionEdit(removed=((0, number - 1),), log_number=number)
        version = m.append(edit)
        numbers.add(m.manifest_number)
        assert m.size < 300 + 2 * snapshot_size
        assert m.next_file_number > m.manifest_number  # the engine never reuses its number
    assert len(numbers) > 3
    manifests = [n for n in fs.listdir(D) if n.startswith("MANIFEST")]
    assert manifests == [manifest_name(m.manifest_number)]
    state = recover(fs, D)
    assert state.version == version == base_version()
    assert state.log_number == 45
    assert state.manifest_number == m.manifest_number
    assert state.next_file_number > state.manifest_number


def test_a_large_version_does_not_rotate_at_every_append() -> None:
    fs = new_fs()
    big = Version.empty().apply(
        VersionEdit(
            added=tuple(
                (1, meta(i, bytes([i // 256, i % 256]), bytes([i // 256, i % 256])))
                for i in range(1, 200)
            )
        )
    )
    m = Manifest.create(fs, D, 500, big, 1, 501, rotate_bytes=100)
    rotations = 0
    for i in range(800):
        before = m.manifest_number
        m.append(VersionEdit(log_number=2 + i))
        rotations += m.manifest_number != before
    assert 0 < rotations < 10


# --------------------------------------------------------- damaged manifests


def three_edits(fs: MemFS) -> tuple[Manifest, list[Version]]:
    m = Manifest.create(fs, D, 5, base_version(), 4, 6)
    versions = [m.version]
    versions.append(m.append(VersionEdit(added=((0, meta(6, b"k", b"z")),), next_file_number=7)))
    versions.append(m.append(VersionEdit(removed=((0, 3),), added=((1, meta(3, b"a", b"m")),))))
    versions.append(m.append(VersionEdit(added=((0, meta(7, b"a", b"b")),), next_file_number=8)))
    return m, versions


def rewrite(fs: MemFS, path: str, data: bytes) -> None:
    handle = fs.create(path)
    handle.write(data)
    handle.sync()


def record_ends(data: bytes) -> list[int]:
    ends, pos = [], 16
    while pos < len(data):
        (length,) = struct.unpack_from("<I", data, pos)
        pos += 12 + length
        ends.append(pos)
    return ends


def test_truncation_at_every_length() -> None:
    fs = new_fs()
    m, versions = three_edits(fs)
    data = fs.read_all(m.path)
    ends = record_ends(data)
    assert len(ends) == 4
    for cut in range(len(data) + 1):
        rewrite(fs, m.path, data[:cut])
        if cut < ends[0]:
            with pytest.raises(CorruptionError):
                recover(fs, D)
            continue
        state = recover(fs, D)
        complete = sum(1 for end in ends if end <= cut)
        assert state.version == versions[complete - 1]
        assert state.records == complete
        assert state.torn_bytes == cut - ends[complete - 1]


def test_every_flipped_byte_is_caught() -> None:
    fs = new_fs()
    m, _versions = three_edits(fs)
    data = fs.read_all(m.path)
    outcomes = set()
    for pos in range(len(data)):
        for bit in (0x01, 0x80):
            damaged = bytearray(data)
            damaged[pos] ^= bit
            rewrite(fs, m.path, bytes(damaged))
            try:
                state = recover(fs, D)
            except UnsupportedFormatError:
                assert 8 <= pos < 12  # the version field
                outcomes.add("unsupported")
                continue
            except CorruptionError:
                outcomes.add("corrupt")
                continue
            raise AssertionError(f"a flip at {pos} read as {state}")
    # A flip in the whole last record is not a torn write either (it used to be read as
    # one, and the edit skipped): refused like any other.
    assert outcomes == {"unsupported", "corrupt"}


def test_a_last_record_whose_end_was_never_written_is_torn() -> None:
    # Zeros from a sector boundary to the end of the last record: sectors a crash left
    # unwritten (a file system that extends the file before it writes the data).
    fs = new_fs()
    m, versions = three_edits(fs)
    long_key = b"k" * 700  # the last record crosses a 512-byte boundary
    edit = VersionEdit(added=((0, meta(8, long_key, long_key)),), next_file_number=9)
    versions.append(m.append(edit))
    data = fs.read_all(m.path)
    last_start = record_ends(data)[-2]
    boundaries = [b for b in range(512, len(data), 512) if last_start + 12 < b]
    assert boundaries
    for boundary in boundaries:
        rewrite(fs, m.path, data[:boundary] + bytes(len(data) - boundary))
        state = recover(fs, D)
        assert state.torn and state.version == versions[-2]
    damaged = bytearray(data)
    damaged[boundaries[0] + 3] ^= 0x10  # the same place changed, not zeroed: damage
    rewrite(fs, m.path, bytes(damaged))
    with pytest.raises(CorruptionError, match="changed after they were written"):
        recover(fs, D)


def test_a_bad_record_followed_by_good_ones_is_corruption() -> None:
    fs = new_fs()
    m, _ = three_edits(fs)
    data = bytearray(fs.read_all(m.path))
    second_record = record_ends(bytes(data))[0]
    data[second_record + 20] ^= 0xFF
    rewrite(fs, m.path, bytes(data))
    with pytest.raises(CorruptionError, match="records follow"):
        recover(fs, D)


def test_a_zero_filled_tail_is_torn() -> None:
    fs = new_fs()
    m, versions = three_edits(fs)
    data = fs.read_all(m.path)
    rewrite(fs, m.path, data + bytes(100))
    state = recover(fs, D)
    assert state.version == versions[-1]
    assert state.torn_bytes == 100


def test_newer_format_is_unsupported_and_leaves_files_untouched() -> None:
    fs = new_fs()
    m, _ = three_edits(fs)
    data = bytearray(fs.read_all(m.path))
    struct.pack_into("<I", data, 8, 2)
    rewrite(fs, m.path, bytes(data))
    before = {name: fs.read_all(f"{D}/{name}") for name in fs.listdir(D)}
    with pytest.raises(UnsupportedFormatError):
        recover(fs, D)
    assert {name: fs.read_all(f"{D}/{name}") for name in fs.listdir(D)} == before


@pytest.mark.parametrize(
    "header",
    [b"", b"SNTLMAN", b"XXXXXXXX" + encode_header()[8:], encode_header()[:12] + b"\0\0\0\0"],
)
def test_bad_headers_are_corruption(header: bytes) -> None:
    fs = new_fs()
    m, _ = three_edits(fs)
    data = fs.read_all(m.path)
    rewrite(fs, m.path, header + data[16:] if len(header) == 16 else header)
    with pytest.raises(CorruptionError):
        recover(fs, D)


def test_header_without_snapshot_is_corruption() -> None:
    fs = new_fs()
    m, _ = three_edits(fs)
    rewrite(fs, m.path, encode_header())
    with pytest.raises(CorruptionError, match="no snapshot"):
        recover(fs, D)


def test_edits_before_a_snapshot_or_a_second_snapshot_are_corruption() -> None:
    fs = new_fs()
    m, _ = three_edits(fs)
    edit = encode_record(encode_edit(VersionEdit(log_number=9)))
    snapshot = encode_record(encode_edit(Version.empty().snapshot_edit(1, 2), snapshot_levels=7))
    for body in (edit + snapshot, snapshot + snapshot + edit):
        rewrite(fs, m.path, encode_header() + body)
        with pytest.raises(CorruptionError):
            recover(fs, D)


def test_an_edit_that_does_not_apply_is_corruption() -> None:
    fs = new_fs()
    m, _ = three_edits(fs)
    data = fs.read_all(m.path)
    bad = encode_record(encode_edit(VersionEdit(removed=((0, 99),))))
    rewrite(fs, m.path, data + bad)
    with pytest.raises(CorruptionError, match="not in L0"):
        recover(fs, D)


def test_current_problems() -> None:
    fs = new_fs()
    assert not is_engine_dir(fs, D)
    assert not is_engine_dir(fs, "/nowhere")
    with pytest.raises(NotAnEngineDirectoryError):
        recover(fs, D)
    m, _ = three_edits(fs)
    assert is_engine_dir(fs, D)
    current = f"{D}/{CURRENT_NAME}"
    for text in (b"", b"MANIFEST-5\n", b"garbage\n", manifest_name(5).encode()):
        rewrite(fs, current, text)
        with pytest.raises(CorruptionError):
            recover(fs, D)
    rewrite(fs, current, (manifest_name(77) + "\n").encode())
    with pytest.raises(CorruptionError, match="does not exist"):
        recover(fs, D)
    fs.remove(current)
    assert not is_engine_dir(fs, D)  # a manifest alone: the first create never finished
    rewrite(fs, f"{D}/{table_name(3)}", b"table")
    with pytest.raises(CorruptionError, match="tables exist"):
        is_engine_dir(fs, D)
    with pytest.raises(CorruptionError, match="tables exist"):
        recover(fs, D)
    m.close()


# ---------------------------------------------------------- crash at every op


@dataclass
class Run:
    states: list[tuple[Version, int, int]]  # after create, then after each append
    acked: int  # appends that returned (-1: create did not return)


def scenario(fs: MemFS, crash_at: int | None, edits: int = 14) -> Run:
    """create, then appends with a rotation or two; stop at the crash_at-th mutating op."""
    fs.fail_after(crash_at)
    run = Run(states=[], acked=-1)
    version = base_version()
    run.states.append((version, 4, 6))
    try:
        m = Manifest.create(fs, D, 5, version, 4, 6, rotate_bytes=250)
        run.acked = 0
        next_number = 6
        for i in range(edits):
            if i % 4 == 3:  # move the newest L0 table down to L6 (a trivial move)
                top = version.levels[0][0]
                edit = VersionEdit(removed=((0, top.file_number),), added=((6, top),))
            else:
                low = bytes([i + 100])
                edit = VersionEdit(
                    added=((0, meta(next_number, low, low)),),
                    log_number=next_number,
                    next_file_number=next_number + 1,
                )
                next_number += 1
            version = version.apply(edit)
            run.states.append(
                (version, m.log_number if edit.log_number is None else edit.log_number, next_number)
            )
            m.append(edit)
            run.acked += 1
    except SimulatedCrash:
        pass
    else:
        fs.fail_after(None)
    return run


def check_recovery(fs: MemFS, run: Run) -> RecoveredState | None:
    if not is_engine_dir(fs, D):
        assert run.acked == -1  # only the very first create can leave no CURRENT
        return None
    state = recover(fs, D)
    allowed = run.states[max(run.acked, 0) : run.acked + 2]
    assert (state.version, state.log_number) in [(v, log) for v, log, _ in allowed], (
        f"acked {run.acked}, recovered {state.records} records"
    )
    expected_next = next(
        n for v, log, n in allowed if v == state.version and log == state.log_number
    )
    assert state.next_file_number >= expected_next
    assert state.next_file_number > state.manifest_number
    return state


def total_ops() -> int:
    fs = new_fs()
    start = fs.ops
    run = scenario(fs, None)
    assert run.acked == 14
    return fs.ops - start


@pytest.mark.parametrize("torn_writes", [False, True])
def test_crash_at_every_operation(torn_writes: bool) -> None:
    ops = total_ops()
    assert ops > 40
    rng = random.Random(7)
    for crash_at in range(ops + 1):
        fs = new_fs()
        run = scenario(fs, crash_at)
        fs.crash(rng if torn_writes else None)
        state = check_recovery(fs, run)
        # The engine's next open: a new manifest from what was recovered, then more edits.
        if state is None:
            continue
        number = state.next_file_number
        m = Manifest.create(fs, D, number, state.version, state.log_number, number + 1)
        edit = VersionEdit(
            added=((0, meta(number + 1, b"\xff", b"\xff")),), next_file_number=number + 2
        )
        after = m.append(edit)
        fs.crash(rng if torn_writes else None)
        again = recover(fs, D)
        assert again.version == after
        assert not again.torn
