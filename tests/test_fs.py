"""The in-memory filesystem's crash model, and OsFS basics."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sentinel.errors import LockedError
from sentinel.fs import FS, MemFS, OsFS, SimulatedCrash


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
