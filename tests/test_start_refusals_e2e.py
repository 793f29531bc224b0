"""A start that fails on the file system ends with one line that says what is wrong,
where, and what to do, and leaves what is in the way as it is: a file where the data directory (or a
directory in it) belongs, a directory where its lock file belongs, a read-only mount.

Before, each ended with a bare ``[Errno 17] File exists: '<path>'`` (or ``[Errno 21]``,
``[Errno 30]``), which named neither the data directory nor a way out.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker_process import BrokerProcess
from sentinel.cli.server import _START_FAILURES, _os_error_line
from tmpfs_mount import tmpfs

Start = Callable[..., BrokerProcess]


def run_server(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sentinel.cli.server", "--host", "127.0.0.1", "--port", "0",
         "--kafka-port", "0", "--metrics-port", "0", "--data", str(data_dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def refusal_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("sentinel-server:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root``: a file's bytes, None for a directory."""
    return {
        str(path.relative_to(root)): None if path.is_dir() else path.read_bytes()
        for path in sorted(root.rglob("*"))
    }


def test_a_file_where_the_data_directory_belongs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(b"not a directory")
    line = refusal_line(run_server(data))
    assert f"{data} is in the way of the data directory {data}" in line
    assert "move it aside, or start with another --data" in line
    assert data.read_bytes() == b"not a directory"


def test_a_file_where_a_parent_of_the_data_directory_belongs(tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    parent.write_bytes(b"x")
    line = refusal_line(run_server(parent / "data"))
    assert "is in the way of the data directory" in line and str(parent) in line


@pytest.mark.parametrize("name", ["topics", "journal"])
def test_a_file_where_a_directory_of_the_data_belongs(start_broker: Start, name: str) -> None:
    broker = start_broker()
    assert broker.stop() == 0
    target = broker.data_dir / name
    shutil.rmtree(target)
    target.write_bytes(b"junk")
    line = refusal_line(run_server(broker.data_dir))
    assert f"{target}" in line and "a directory belongs there" in line, line
    assert target.read_bytes() == b"junk"
    target.unlink()  # moved aside: the broker starts
    broker.start()
    assert broker.stop() == 0


def test_a_directory_where_the_lock_file_belongs(start_broker: Start) -> None:
    broker = start_broker()
    assert broker.stop() == 0
    lock = broker.data_dir / "LOCK"
    lock.unlink()
    lock.mkdir()
    before = snapshot(broker.data_dir)
    line = refusal_line(run_server(broker.data_dir))
    assert f"{lock} is in the way" in line and "a file belongs there" in line, line
    assert snapshot(broker.data_dir) == before


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Path | None]:
    """A read-only tmpfs (None if this process may not mount); always unmounted."""
    with tmpfs(tmp_path / "ro", "ro,size=1m") as disk:
        yield disk


def test_a_data_directory_on_a_read_only_file_system(read_only_mount: Path | None) -> None:
    if read_only_mount is None:
        pytest.skip("this process may not mount a tmpfs")
    for data in (read_only_mount, read_only_mount / "data"):
        line = refusal_line(run_server(data))
        assert f"the data directory {data} is on a read-only file system" in line, line
        assert "mount it read-write, or start with another --data" in line


@pytest.mark.parametrize("code", sorted(code for codes, _line in _START_FAILURES for code in codes))
def test_every_start_failure_of_the_table_names_what_and_where(code: int) -> None:
    # the codes a test cannot cause as root (EACCES, EMFILE, EIO ...) get their line too
    exc = OSError(code, os.strerror(code), "/d/topics")
    line = _os_error_line(exc, "/d")
    assert line.endswith(f"({exc})") and not line.endswith("(data directory /d)")
    assert "/d" in line and ": " in line  # what is wrong, then what to do


def test_any_other_os_error_names_the_data_directory() -> None:
    exc = OSError(errno.ENAMETOOLONG, "File name too long", "/d/x")
    assert _os_error_line(exc, "/d") == f"{exc} (data directory /d)"
