"""Injected filesystem: the OS one, and an in-memory twin that can simulate a crash.

Every file the storage engine touches goes through an ``FS``. Files are written only by
appending (and, for a torn WAL tail, truncating), which is all an LSM needs and what
makes the crash model simple and exact.

Durability contract (the same for both implementations):

- ``File.write`` appends; the bytes are visible at once, durable only after
  ``File.sync``.
- A new name (``create``, ``rename``) or a removed name is durable only after
  ``sync_dir`` of its directory.
- ``makedirs`` is durable when it returns (it syncs the parents it touched).

``MemFS.crash()`` turns that contract into a test: every file falls back to what was
synced (optionally keeping a random prefix of the unsynced tail, as a torn write does),
and every directory falls back to its last synced set of names. ``MemFS.fail_after(n)``
raises ``SimulatedCrash`` at the n-th mutating call, so a test can stop a flush or a
compaction at every step.
"""

from __future__ import annotations

import errno
import fcntl
import os
import posixpath
import random
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sentinel.errors import LockedError

Buffer = bytes | bytearray | memoryview


class File(Protocol):
    """An open file. Writes append; reads are positional."""

    @property
    def path(self) -> str: ...

    def write(self, data: Buffer) -> None: ...

    def writev(self, parts: Sequence[Buffer]) -> None:
        """Append the parts in order, as one write where the OS allows (no joining copy)."""
        ...

    def pread(self, offset: int, size: int) -> bytes: ...

    def size(self) -> int: ...

    def sync(self) -> None: ...

    def write_synced(self, parts: Sequence[Buffer]) -> None:
        """``writev(parts)`` then ``sync()``, in one call where the OS allows. Durable on
        return are these parts and anything the file had synced before, not bytes
        written earlier and left unsynced (the caller syncs those with ``sync``)."""
        ...

    def truncate(self, size: int) -> None: ...

    def close(self) -> None: ...


class DirLock(Protocol):
    def release(self) -> None: ...


class FS(Protocol):
    """The filesystem operations the engine uses. Paths are '/'-separated strings."""

    def create(self, path: str) -> File:
        """A new empty file for appending (an existing one is truncated)."""
        ...

    def open_append(self, path: str) -> File:
        """An existing file (or a new one) for appending at its end."""
        ...

    def open_read(self, path: str) -> File: ...

    def read_all(self, path: str) -> bytes: ...

    def exists(self, path: str) -> bool: ...

    def is_dir(self, path: str) -> bool: ...

    def listdir(self, path: str) -> list[str]: ...

    def makedirs(self, path: str) -> None: ...

    def remove(self, path: str) -> None: ...

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace ``dst`` with ``src``."""
        ...

    def sync_dir(self, path: str) -> None: ...

    def file_size(self, path: str) -> int: ...

    def remove_tree(self, path: str) -> None:
        """Remove a directory and everything below it (durable when it returns)."""
        ...

    def lock(self, path: str) -> DirLock:
        """Take an exclusive lock on the lock file ``path``; raise ``LockedError`` if held."""
        ...


# --------------------------------------------------------------------------- OS


class DsyncWrites:
    """pwritev2's RWF_DSYNC flag while it works here (Linux 4.7 and later; None on other
    systems, or once a kernel or filesystem refused it: then ``writev`` and ``sync``)."""

    flag: int | None = getattr(os, "RWF_DSYNC", None)


def _iov_max() -> int:
    try:
        return max(16, os.sysconf("SC_IOV_MAX"))
    except (AttributeError, ValueError, OSError):  # not named on this system
        return 1024


_IOV_MAX = _iov_max()


class OsFile:
    __slots__ = ("_fd", "_path")

    def __init__(self, path: str, flags: int) -> None:
        self._path = path
        self._fd = os.open(path, flags, 0o644)

    @property
    def path(self) -> str:
        return self._path

    def write(self, data: Buffer) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def writev(self, parts: Sequence[Buffer]) -> None:
        total = sum(len(p) for p in parts)
        written = os.writev(self._fd, parts)
        if written < total:  # a short write (rare): finish the rest piece by piece
            self.write(b"".join(bytes(p) for p in parts)[written:])

    def pread(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def write_synced(self, parts: Sequence[Buffer]) -> None:
        # One system call, pwritev2 with RWF_DSYNC (Linux): the write returns once its
        # data is durable, as an fdatasync after it would make it. A sync thread then
        # hands the interpreter back and waits to take it again once per sync, not
        # twice: with a busy event loop and many partitions syncing at once, that
        # wait was most of an ack's sync (2.1 ms measured in Python against 0.5 ms of
        # fdatasync in the kernel). Offset -1: at the file's end (O_APPEND).
        flag = DsyncWrites.flag
        if flag is None or len(parts) > _IOV_MAX:
            for start in range(0, len(parts), _IOV_MAX):
                self.writev(parts[start : start + _IOV_MAX])
            self.sync()
            return
        total = sum(len(p) for p in parts)
        try:
            written = os.pwritev(self._fd, parts, -1, flag)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            DsyncWrites.flag = None  # a kernel or filesystem without it: two calls now
            self.write_synced(parts)
            return
        if written < total:  # a short write (rare): the rest, then a sync of it all
            self.write(b"".join(bytes(p) for p in parts)[written:])
            self.sync()

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _OsLock:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


class OsFS:
    """The real filesystem."""

    def create(self, path: str) -> File:
        return OsFile(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC)

    def open_append(self, path: str) -> File:
        return OsFile(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC)

    def open_read(self, path: str) -> File:
        return OsFile(path, os.O_RDONLY | os.O_CLOEXEC)

    def read_all(self, path: str) -> bytes:
        # os.open and os.read, not open(): a buffered file object costs five more
        # system calls (fstat, ioctl, two lseeks, fstat), and an engine's open reads
        # its CURRENT, its manifest and its WAL segments so.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            data = os.read(fd, size + 1)
            if len(data) == size:  # all of it, as fstat said: the common case, one read
                return data
            chunks = [data]  # it grew or shrank meanwhile (or a short read): to its end
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def makedirs(self, path: str) -> None:
        if os.path.isdir(path):  # the common case, in one system call
            return
        missing: list[str] = []
        current = os.path.abspath(path)
        while not os.path.exists(current):
            missing.append(current)
            current = os.path.dirname(current)
        os.makedirs(path, exist_ok=True)
        for created in reversed(missing):
            self.sync_dir(os.path.dirname(created))

    def remove(self, path: str) -> None:
        os.remove(path)

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def file_size(self, path: str) -> int:
        return os.path.getsize(path)

    def remove_tree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=False)
        self.sync_dir(os.path.dirname(os.path.abspath(path)))

    def lock(self, path: str) -> DirLock:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise LockedError(f"{path} is locked by another process") from exc
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return _OsLock(fd)


# ----------------------------------------------------------------------- memory


class SimulatedCrash(Exception):  # noqa: N818 - it is an event, not an error of ours
    """Raised by ``MemFS`` at the operation chosen with ``fail_after``."""


def caused_by_crash(exc: BaseException | None) -> bool:
    """Whether ``exc`` is the simulated crash, or was raised because of it (the storage
    error it became): its chain of causes and contexts, followed a bounded way."""
    for _ in range(32):
        if exc is None:
            return False
        if isinstance(exc, SimulatedCrash):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@dataclass(eq=False)
class _Inode:
    data: bytearray = field(default_factory=bytearray)
    synced: bytearray = field(default_factory=bytearray)
    # Lowest index changed since the last sync: sync copies only from there.
    dirty_from: int = 0


class MemFile:
    __slots__ = ("_closed", "_epoch", "_fs", "_inode", "_path", "_writable")

    def __init__(self, fs: MemFS, path: str, inode: _Inode, writable: bool) -> None:
        self._fs = fs
        self._path = path
        self._inode = inode
        self._writable = writable
        self._epoch = fs.epoch
        self._closed = False

    @property
    def path(self) -> str:
        return self._path

    def _check(self, mutating: bool) -> None:
        if self._closed or self._epoch != self._fs.epoch:
            raise OSError(errno.EBADF, "file handle is closed or did not survive a crash")
        if mutating and not self._writable:
            raise OSError(errno.EBADF, "file is open for reading only")

    def write(self, data: Buffer) -> None:
        with self._fs.mutex:
            self._check(True)
            self._fs.tick()
            inode = self._inode
            inode.dirty_from = min(inode.dirty_from, len(inode.data))
            inode.data += data

    def writev(self, parts: Sequence[Buffer]) -> None:
        self.write(b"".join(bytes(p) for p in parts))

    def pread(self, offset: int, size: int) -> bytes:
        with self._fs.mutex:
            self._check(False)
            return bytes(self._inode.data[offset : offset + size])

    def size(self) -> int:
        with self._fs.mutex:
            self._check(False)
            return len(self._inode.data)

    def sync(self) -> None:
        with self._fs.mutex:
            self._check(False)
            self._fs.tick()
            inode = self._inode
            del inode.synced[inode.dirty_from :]
            inode.synced += inode.data[inode.dirty_from :]
            inode.dirty_from = len(inode.data)

    def write_synced(self, parts: Sequence[Buffer]) -> None:
        with self._fs.mutex:
            self._check(True)
            inode = self._inode
            if inode.dirty_from < len(inode.data):
                # RWF_DSYNC makes this write's bytes durable, not earlier unsynced ones:
                # a caller that relies on it for those has a bug the crash tests see.
                raise ValueError(
                    f"{self._path}: write_synced after unsynced writes (sync them first)"
                )
        self.writev(parts)  # a crash may fall between the two, as between the calls
        self.sync()

    def truncate(self, size: int) -> None:
        with self._fs.mutex:
            self._check(True)
            self._fs.tick()
            inode = self._inode
            if size < len(inode.data):
                del inode.data[size:]
            else:
                inode.data += bytes(size - len(inode.data))
            inode.dirty_from = min(inode.dirty_from, size)

    def close(self) -> None:
        self._closed = True


class _MemLock:
    def __init__(self, fs: MemFS, path: str) -> None:
        self._fs = fs
        self._path = path

    def release(self) -> None:
        with self._fs.mutex:
            self._fs.locks.discard(self._path)


class MemFS:
    """An in-memory filesystem with an exact crash model (see the module docstring)."""

    def __init__(self) -> None:
        self.mutex = threading.RLock()
        self.files: dict[str, _Inode] = {}
        self.durable_files: dict[str, _Inode] = {}
        self.dirs: set[str] = {"/"}
        self.locks: set[str] = set()
        self.epoch = 0
        self.ops = 0
        self._fail_at: int | None = None

    # -- fault injection

    def fail_after(self, count: int | None) -> None:
        """Raise ``SimulatedCrash`` on the ``count``-th mutating call from now (0 = next)."""
        with self.mutex:
            self._fail_at = None if count is None else self.ops + count

    def tick(self) -> None:
        self.ops += 1
        if self._fail_at is not None and self.ops > self._fail_at:
            self._fail_at = None
            raise SimulatedCrash(f"simulated crash at operation {self.ops}")

    def kill(self) -> None:
        """The process dies (kill -9): its handles and locks go, and what it wrote
        stays, synced or not, as the page cache keeps it; a ``crash`` after it (a
        power cut) still loses what nobody synced."""
        with self.mutex:
            self._fail_at = None
            self.epoch += 1
            self.locks.clear()

    def crash(self, rng: random.Random | None = None) -> None:
        """Lose everything not synced. With ``rng``, keep a random part of each unsynced
        tail, as a power cut during a write does."""
        with self.mutex:
            self._fail_at = None
            self.epoch += 1
            self.locks.clear()
            self.files = dict(self.durable_files)
            for inode in set(self.files.values()):
                kept = bytearray(inode.synced)
                if rng is not None and len(inode.data) > len(kept):
                    same_prefix = inode.data[: len(kept)] == kept
                    if same_prefix:
                        extra = rng.randint(0, len(inode.data) - len(kept))
                        kept += inode.data[len(kept) : len(kept) + extra]
                inode.data = kept
                inode.synced = bytearray(kept)
                inode.dirty_from = len(kept)

    # -- paths

    @staticmethod
    def _norm(path: str) -> str:
        return posixpath.normpath("/" + path)

    def _require_parent(self, path: str) -> None:
        parent = posixpath.dirname(path)
        if parent not in self.dirs:
            raise FileNotFoundError(errno.ENOENT, "no such directory", parent)

    def _inode(self, path: str) -> _Inode:
        inode = self.files.get(path)
        if inode is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        return inode

    # -- FS

    def create(self, path: str) -> File:
        with self.mutex:
            norm = self._norm(path)
            self._require_parent(norm)
            self.tick()
            inode = _Inode()
            self.files[norm] = inode
            return MemFile(self, path, inode, writable=True)

    def open_append(self, path: str) -> File:
        with self.mutex:
            norm = self._norm(path)
            if norm not in self.files:
                return self.create(path)
            return MemFile(self, path, self.files[norm], writable=True)

    def open_read(self, path: str) -> File:
        with self.mutex:
            return MemFile(self, path, self._inode(self._norm(path)), writable=False)

    def read_all(self, path: str) -> bytes:
        with self.mutex:
            return bytes(self._inode(self._norm(path)).data)

    def exists(self, path: str) -> bool:
        with self.mutex:
            norm = self._norm(path)
            return norm in self.files or norm in self.dirs

    def is_dir(self, path: str) -> bool:
        with self.mutex:
            return self._norm(path) in self.dirs

    def listdir(self, path: str) -> list[str]:
        with self.mutex:
            norm = self._norm(path)
            if norm not in self.dirs:
                raise FileNotFoundError(errno.ENOENT, "no such directory", path)
            names = {posixpath.basename(p) for p in self.files if posixpath.dirname(p) == norm}
            names |= {
                posixpath.basename(d)
                for d in self.dirs
                if d != "/" and posixpath.dirname(d) == norm
            }
            return sorted(names)

    def makedirs(self, path: str) -> None:
        with self.mutex:
            norm = self._norm(path)
            while norm not in self.dirs:
                self.dirs.add(norm)
                norm = posixpath.dirname(norm)

    def remove(self, path: str) -> None:
        with self.mutex:
            norm = self._norm(path)
            self._inode(norm)
            self.tick()
            del self.files[norm]

    def rename(self, src: str, dst: str) -> None:
        with self.mutex:
            src_norm, dst_norm = self._norm(src), self._norm(dst)
            inode = self._inode(src_norm)
            self._require_parent(dst_norm)
            self.tick()
            del self.files[src_norm]
            self.files[dst_norm] = inode

    def sync_dir(self, path: str) -> None:
        with self.mutex:
            norm = self._norm(path)
            if norm not in self.dirs:
                raise FileNotFoundError(errno.ENOENT, "no such directory", path)
            self.tick()
            for name in [p for p in self.durable_files if posixpath.dirname(p) == norm]:
                if name not in self.files:
                    del self.durable_files[name]
            for name, inode in self.files.items():
                if posixpath.dirname(name) == norm:
                    self.durable_files[name] = inode

    def file_size(self, path: str) -> int:
        with self.mutex:
            return len(self._inode(self._norm(path)).data)

    def remove_tree(self, path: str) -> None:
        with self.mutex:
            norm = self._norm(path)
            if norm not in self.dirs:
                raise FileNotFoundError(errno.ENOENT, "no such directory", path)
            self.tick()
            prefix = norm.rstrip("/") + "/"
            for table in (self.files, self.durable_files):
                for name in [p for p in table if p.startswith(prefix)]:
                    del table[name]
            self.dirs = {d for d in self.dirs if d != norm and not d.startswith(prefix)}

    def lock(self, path: str) -> DirLock:
        with self.mutex:
            norm = self._norm(path)
            if norm in self.locks:
                raise LockedError(f"{path} is locked by another process")
            self.locks.add(norm)
            return _MemLock(self, norm)
