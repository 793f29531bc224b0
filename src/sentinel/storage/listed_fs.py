"""An engine directory's names, listed once while the engine opens.

Opening an engine asks about its directory again and again: is it there, is it a
directory, which WAL segments, prepared segments, tables, temporary files and markers it
holds. Each question was a system call of its own: ten listings and nine stats an open
(`strace` of a start after kill -9), each listing four calls. A start after kill -9 opens
every partition written since the retention passes last marked it clean, and at 10,000
partitions those calls, each a hand-off of the interpreter between the recovery threads,
were a third of the start.

``ListedFS`` wraps the engine's ``FS``. While it is *listing* (from its creation until
``settle()``, which ``Engine.open`` calls once the engine is open) it answers
``listdir``, ``exists`` and ``is_dir`` about the directory and its direct children from
one listing, read at the first such question, and keeps that listing up to date with
every creation, rename and removal made through it. Nothing else changes an engine's
directory while it opens (the engine holds its LOCK from its first write on). A change
through it to a path it cannot place (a spelling of the directory it does not know)
drops the listing, to be read again at the next question: a stale answer is never given,
at worst a system call more. After ``settle()`` every call goes straight to the wrapped
``FS``, so a directory changed under a running engine (a test's damage, an operator) is
seen as it is.
"""

from __future__ import annotations

import posixpath
import threading
from collections.abc import Callable
from typing import TypeVar

from sentinel.fs import FS, DirLock, File

T = TypeVar("T")


class ListedFS:
    """``fs`` with ``directory``'s names read once until ``settle()`` (module doc)."""

    def __init__(self, fs: FS, directory: str) -> None:
        self._fs = fs
        self._dir = posixpath.normpath(directory)
        self._listing = True
        self._names: set[str] | None = None  # None: not read (or dropped) yet
        self._mutex = threading.Lock()

    def settle(self) -> None:
        """From now on, every call goes to the wrapped ``FS``."""
        with self._mutex:
            self._listing = False
            self._names = None

    # ----------------------------------------------------------------- the listing

    def _child(self, norm: str) -> str | None:
        """The name of ``norm`` (a normalized path) if it is directly in the directory."""
        parent, name = posixpath.split(norm)
        return name if parent == self._dir and name else None

    def _loaded(self) -> set[str] | None:
        """The listing (read now if need be), or None if not listing or unreadable."""
        if not self._listing:
            return None
        if self._names is None:
            try:
                self._names = set(self._fs.listdir(self._dir))
            except OSError:  # absent, or not a directory: the wrapped FS answers
                return None
        return self._names

    def _changed(self, path: str, *, present: bool) -> None:
        """``path`` was created (``present``) or removed through this FS."""
        if self._names is None:
            return
        norm = posixpath.normpath(path)
        if norm == self._dir:
            if not present:  # the directory itself removed: read it again if asked
                self._names = None
            return  # (made while listed: it was there already, its names unchanged)
        name = self._child(norm)
        if name is None:
            if not norm.startswith(self._dir + "/"):
                self._names = None  # a path it cannot place (module doc)
            elif present:  # deeper down: made under (maybe with) the child it is in
                self._names.add(norm[len(self._dir) + 1 :].split("/", 1)[0])
        elif present:
            self._names.add(name)
        else:
            self._names.discard(name)

    # ------------------------------------------------------------------- answers

    def listdir(self, path: str) -> list[str]:
        if not self._listing:  # settled: straight through, nothing more per call
            return self._fs.listdir(path)
        with self._mutex:
            if posixpath.normpath(path) == self._dir:
                names = self._loaded()
                if names is not None:
                    return sorted(names)
        return self._fs.listdir(path)

    def exists(self, path: str) -> bool:
        there = self._listed(path) if self._listing else None
        return self._fs.exists(path) if there is None else there

    def is_dir(self, path: str) -> bool:
        there = self._listed(path) if self._listing else None
        if there is False:
            return False  # not there, so not a directory either
        if there and posixpath.normpath(path) == self._dir:
            return True
        return self._fs.is_dir(path)  # a name there: a file or a directory?

    def _listed(self, path: str) -> bool | None:
        """Whether ``path`` (the directory or a name in it) is there, as the listing
        says; None if the listing cannot say (not read, unreadable, another path)."""
        norm = posixpath.normpath(path)
        with self._mutex:
            if norm == self._dir:
                return True if self._loaded() is not None else None
            name = self._child(norm)
            names = self._loaded() if name is not None else None
            return None if names is None else name in names

    # ------------------------------------------------------------------ changes

    def create(self, path: str) -> File:
        return self._through(self._fs.create, path, present=True)

    def open_append(self, path: str) -> File:
        return self._through(self._fs.open_append, path, present=True)

    def remove(self, path: str) -> None:
        self._through(self._fs.remove, path, present=False)

    def rename(self, src: str, dst: str) -> None:
        if not self._listing:
            self._fs.rename(src, dst)
            return
        try:
            self._fs.rename(src, dst)
        except BaseException:
            self._drop()
            raise
        with self._mutex:
            self._changed(src, present=False)
            self._changed(dst, present=True)

    def makedirs(self, path: str) -> None:
        self._through(self._fs.makedirs, path, present=True)

    def remove_tree(self, path: str) -> None:
        self._through(self._fs.remove_tree, path, present=False)

    def lock(self, path: str) -> DirLock:
        # A lock may be a file (the OS's) or not (the in-memory FS's): asked, not assumed.
        held = self._through(self._fs.lock, path, present=False)
        if self._listing and self._fs.exists(path):
            with self._mutex:
                self._changed(path, present=True)
        return held

    def _through(self, call: Callable[[str], T], path: str, *, present: bool) -> T:
        """``call(path)``, then the listing brought in line with it. A call that
        failed may have done part of its work: the listing is dropped then."""
        if not self._listing:
            return call(path)
        try:
            result = call(path)
        except BaseException:
            self._drop()
            raise
        with self._mutex:
            self._changed(path, present=present)
        return result

    def _drop(self) -> None:
        with self._mutex:
            self._names = None

    # ---------------------------------------------------------- straight through

    def open_read(self, path: str) -> File:
        return self._fs.open_read(path)

    def read_all(self, path: str) -> bytes:
        return self._fs.read_all(path)

    def sync_dir(self, path: str) -> None:
        self._fs.sync_dir(path)

    def file_size(self, path: str) -> int:
        return self._fs.file_size(path)
