"""The in-memory filesystem's crash model, and OsFS basics."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest

from sentinel.errors import LockedError
from sentinel.fs import FS, DsyncWrites, MemFS, OsFS, SimulatedCrash


def test_unsynced_data_is_lost_on_crash() -> None:
    fs = MemFS()
    fs.makedirs("/d")
    f = fs.create("/d/a")
    f.write(b"hello")
    f.sync()
    fs.sync_dir("/d")
    f.write(b" world")
    fs.crash()
    assert fs.read_all("/d/a") == b"hello"


def test_new_name_needs_dir_sync() -> None:
    fs = MemFS()
    fs.makedirs("/d")
    f = fs.create("/d/a")
    f.write(b"x")
    f.sync()
    fs.crash()
    assert not fs.exists("/d/a")


def test_remove_without_dir_sync_comes_back() -> None:
    fs = MemFS()
    fs.makedirs("/d")
    f = fs.create("/d/a")
    f.write(b"x")
    f.sync()
    fs.sync_dir("/d")
    fs.remove("/d/a")
    assert not fs.exists("/d/a")
    fs.crash()
    assert fs.read_all("/d/a") == b"x"


def test_rename_is_durable_after_dir_sync() -> None:
    fs = MemFS()
    fs.makedirs("/d")
    f = fs.create("/d/tmp")
    f.write(b"new")
    f.sync()
    fs.rename("/d/tmp", "/d/cur")
    fs.sync_dir("/d")
    fs.crash()
    assert fs.listdir("/d") == ["cur"]
    assert fs.read_all("/d/cur") == b"new"


def test_truncate_then_crash_restores_synced() -> None:
    fs = MemFS()
    fs.makedirs("/d")
    f = fs.create("/d/a")
    f.write(b"abcdef")
    f.sync()
    fs.sync_dir("/d")
    f.truncate(2)
    f.write(b"XY")
    assert fs.read_all("/d/a") == b"abXY"
    fs.crash()
    assert fs.read_all("/d/a") == b"abcdef"


def test_torn_tail_keeps_a_prefix() -> None:
    fs = MemFS()
    fs.makedirs("/d")
    f = fs.create("/d/a")
    f.write(b"base")
    f.sync()
    fs.sync_dir("/d")
    f.write(b"0123456789")
    fs.crash(random.Random(7))
    data = fs.read_all("/d/a")
    assert data.startswith(b"base")
    assert b"base0123456789".startswith(data)


def test_fail_after_raises_at_the_chosen_step() -> None:
    fs = MemFS()
    fs.makedirs("/d")
    f = fs.create("/d/a")
    fs.fail_after(2)
    f.write(b"1")
    f.write(b"2")
    with pytest.raises(SimulatedCrash):
        f.write(b"3")
    assert fs.read_all("/d/a") == b"12"


def test_handles_die_with_the_crash() -> None:
    fs = MemFS()
    fs.makedirs("/d")
    f = fs.create("/d/a")
    fs.crash()
    with pytest.raises(OSError):
        f.write(b"x")


@pytest.mark.parametrize("kind", ["os", "mem"])
def test_fs_roundtrip_and_lock(kind: str, tmp_path: Path) -> None:
    fs: FS = OsFS() if kind == "os" else MemFS()
    root = str(tmp_path) if kind == "os" else "/root"
    fs.makedirs(root + "/x/y")
    f = fs.create(root + "/x/y/f")
    f.write(b"abc")
    f.write(memoryview(b"def"))
    f.sync()
    f.close()
    assert fs.read_all(root + "/x/y/f") == b"abcdef"
    r = fs.open_read(root + "/x/y/f")
    assert r.pread(2, 3) == b"cde"
    assert r.size() == 6
    r.close()
    assert fs.listdir(root + "/x") == ["y"]
    lock = fs.lock(root + "/LOCK")
    if kind == "mem":
        with pytest.raises(LockedError):
            fs.lock(root + "/LOCK")
    lock.release()
    fs.lock(root + "/LOCK").release()


@pytest.mark.parametrize("kind", ["mem", "os"])
def test_write_synced_appends_the_parts_and_makes_them_durable(
    kind: str, tmp_path: Path
) -> None:
    """``write_synced`` is ``writev`` then ``sync`` (on Linux one ``pwritev2`` with
    RWF_DSYNC, at the end of a file opened for appending): the parts land in order after
    what the file held, memoryviews included, and on the in-memory filesystem they
    survive a crash."""
    fs: FS = MemFS() if kind == "mem" else OsFS()
    base = str(tmp_path) if kind == "os" else "/d"
    fs.makedirs(base)
    path = f"{base}/f"
    file = fs.create(path)
    file.write(b"head|")
    file.sync()
    file.close()
    fs.sync_dir(base)
    file = fs.open_append(path)
    file.write_synced([b"a", bytearray(b"bc"), memoryview(b"xdefx")[1:4]])
    file.write_synced([b"g"] * 1500)  # more parts than one vectored write takes
    file.close()
    expected = b"head|abcdef" + b"g" * 1500
    assert fs.read_all(path) == expected
    if isinstance(fs, MemFS):
        fs.crash()
        assert fs.read_all(path) == expected


def test_write_synced_refuses_to_follow_unsynced_writes() -> None:
    """RWF_DSYNC covers the bytes of its own write, not earlier unsynced ones: the
    in-memory filesystem refuses that use, so a caller relying on it fails its tests."""
    fs = MemFS()
    fs.makedirs("/d")
    file = fs.create("/d/f")
    file.write(b"unsynced")
    with pytest.raises(ValueError, match="unsynced"):
        file.write_synced([b"x"])
    file.sync()
    file.write_synced([b"x"])
    assert fs.read_all("/d/f") == b"unsyncedx"


def test_write_synced_falls_back_where_the_os_refuses_rwf_dsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel or filesystem without RWF_DSYNC refuses the flag (EOPNOTSUPP, EINVAL):
    the write goes as ``writev`` then ``sync``, and so do the next ones."""
    calls: list[int] = []

    def refuse(fd: int, buffers: object, offset: int, flags: int = 0) -> int:
        calls.append(flags)
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(DsyncWrites, "flag", 0x2)
    monkeypatch.setattr(os, "pwritev", refuse)
    fs = OsFS()
    path = str(tmp_path / "f")
    file = fs.create(path)
    file.write_synced([b"a", b"b"])
    file.write_synced([b"c"])
    file.close()
    assert fs.read_all(path) == b"abc"
    assert calls == [0x2] and DsyncWrites.flag is None  # tried once, then not again


def test_write_synced_is_one_dsync_write_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Linux the parts go out in one ``pwritev2`` with RWF_DSYNC, no separate sync."""
    seen: list[int] = []
    real = os.pwritev

    def record(fd: int, buffers: list[bytes], offset: int, flags: int = 0) -> int:
        seen.append(flags)
        return real(fd, buffers, offset, flags)

    monkeypatch.setattr(os, "pwritev", record)
    monkeypatch.setattr(os, "fdatasync", lambda fd: pytest.fail("a separate sync"))
    monkeypatch.setattr(DsyncWrites, "flag", os.RWF_DSYNC)
    fs = OsFS()
    path = str(tmp_path / "f")
    file = fs.create(path)
    file.write_synced([b"one", b"two"])
    file.close()
    assert seen == [os.RWF_DSYNC] and fs.read_all(path) == b"onetwo"
