"""Raft's hard state on disk: one small file per group, replaced atomically.

§5.2 / figure 2: "currentTerm ... votedFor ... (Updated on stable storage before
responding to RPCs)". The file is rewritten whole: write ``raft-state.tmp``, fsync it,
rename it over ``raft-state``, fsync the directory. A crash at any point leaves either
the old file or the new one, never a mix (the rename is atomic, and the directory
fsync makes the rename itself durable before the caller sends anything).

Layout (little-endian, 73 bytes):

    offset  size  field
    0       4     magic  b"RHS\\0"
    4       1     version (1)
    5       8     term          u64
    13      8     vote          i64 (-1: none)
    21      8     commit        u64 (a prefix end: the high watermark)
    29      8     start         u64 | the log start and the term of the batch that
    37      8     start_term    u64 | ended at ``start - 1`` (removed from the log)
    45      8     prev_start    u64 | the pair before it
    53      8     prev_term     u64 |
    61      8     (reserved, 0)
    69      4     crc32 of bytes [0, 69)

The start pairs let ``term_at(log_start - 1)`` answer after a reset removed that batch
(Kafka keeps the same fact in its leader-epoch checkpoint). The adapter writes the new
pair *before* it moves the log start, keeping the old one beside it: whichever start
the log has after a crash, one of the two pairs names its term.
"""

from __future__ import annotations

import posixpath
import struct
import zlib
from dataclasses import dataclass
from typing import Protocol

from sentinel.errors import CorruptionError, UnsupportedFormatError
from sentinel.fs import FS
from sentinel.raft.state import HardState

MAGIC = b"RHS\0"
VERSION = 1
NAME = "raft-state"
_BODY = struct.Struct("<4sBQqQQQQQQ")
_CRC = struct.Struct("<I")
SIZE = _BODY.size + _CRC.size


@dataclass(frozen=True, slots=True)
class DurableState:
    hard: HardState
    start: int = 0
    start_term: int = 0
    prev_start: int = 0
    prev_term: int = 0

    def term_before(self, log_start: int) -> int | None:
        """The term of the batch ending at ``log_start - 1``, if this state knows it."""
        if log_start == 0:
            return 0
        if log_start == self.start:
            return self.start_term
        if log_start == self.prev_start:
            return self.prev_term
        return None


def encode(state: DurableState) -> bytes:
    h = state.hard
    vote = -1 if h.vote is None else h.vote
    body = _BODY.pack(
        MAGIC, VERSION, h.term, vote, h.commit, state.start, state.start_term,
        state.prev_start, state.prev_term, 0,
    )
    return body + _CRC.pack(zlib.crc32(body))


def decode(data: bytes, path: str) -> DurableState:
    if len(data) != SIZE:
        raise CorruptionError(path, "the whole file", f"{len(data)} bytes, expected {SIZE}")
    (crc,) = _CRC.unpack_from(data, _BODY.size)
    if zlib.crc32(data[: _BODY.size]) != crc:
        raise CorruptionError(path, "the whole file", "CRC mismatch")
    magic, version, term, vote, commit, start, start_term, prev_start, prev_term, _ = (
        _BODY.unpack_from(data)
    )
    if magic != MAGIC:
        raise CorruptionError(path, "the magic", f"{magic!r} is not {MAGIC!r}")
    if version != VERSION:
        raise UnsupportedFormatError(f"{path}: hard-state version {version}, this build reads 1")
    if vote < -1:
        raise CorruptionError(path, "the vote", f"vote {vote} is not a node id")
    hard = HardState(term, None if vote == -1 else vote, commit)
    return DurableState(hard, start, start_term, prev_start, prev_term)


class StateFile(Protocol):
    """Where one group's hard state lives: a ``HardStateFile`` or a view of the
    broker's ``HardStateStore`` (``hard_state_store``)."""

    @property
    def path(self) -> str:
        """How errors name the stored state."""
        ...

    def load(self) -> DurableState | None: ...

    def store(self, state: DurableState) -> None:
        """Replace the stored state; durable when this returns."""
        ...


class HardStateFile:
    """The hard state of one Raft group in ``directory`` on the injected ``FS``."""

    def __init__(self, fs: FS, directory: str) -> None:
        self._fs = fs
        self._dir = directory
        self.path = posixpath.join(directory, NAME)
        self._tmp = self.path + ".tmp"

    def load(self) -> DurableState | None:
        """The stored state, or None when there is none yet (a new group). A leftover
        temporary file is a write that never got renamed: ignored."""
        if not self._fs.exists(self.path):
            return None
        return decode(self._fs.read_all(self.path), self.path)

    def store(self, state: DurableState) -> None:
        """Replace the stored state; durable when this returns."""
        self._fs.makedirs(self._dir)
        f = self._fs.create(self._tmp)
        try:
            f.write(encode(state))
            f.sync()
        finally:
            f.close()
        self._fs.rename(self._tmp, self.path)
        self._fs.sync_dir(self._dir)
