"""Every Raft group's hard state of one broker in one small storage engine.

A broker replicating thousands of partitions changes many hard states per round (a
commit moved in each group that got entries). One ``HardStateFile`` per group costs
three fsyncs per change; here all the states of a round go into ONE write batch of one
``Engine`` (its WAL in sync mode ``always``): one WAL record, one fsync, atomic (a
crash keeps all of a ``store_many`` or none of it: the WAL record is CRC-checked and a
torn one is dropped at recovery).

Keys: ``b"g" + u64 big-endian group id``; values: ``hard_state_file.encode`` (73
bytes, magic, version and CRC of their own, checked again on every load).

``view(group)`` is a ``StateFile`` (``load`` / ``store``), so a ``PartitionRaftLog``
works over either a file or this store. Threads: the engine is thread-safe; a driver
calls ``store_many`` from a worker thread.
"""

from __future__ import annotations

import dataclasses
import posixpath
import struct
from collections.abc import Mapping

from sentinel.errors import CorruptionError
from sentinel.fs import FS
from sentinel.raft.hard_state_file import DurableState, decode, encode
from sentinel.storage.engine import Engine
from sentinel.storage.options import EngineOptions
from sentinel.storage.wal import SyncMode
from sentinel.storage.write_batch import WriteBatch

_PREFIX = b"g"
_KEY = struct.Struct(">Q")
_END = bytes([_PREFIX[0] + 1])


def _key(group: int) -> bytes:
    if group < 0:
        raise ValueError(f"group id {group} is negative")
    return _PREFIX + _KEY.pack(group)


class HardStateStore:
    """The hard states of one broker's Raft groups, key = group id."""

    def __init__(self, engine: Engine, directory: str) -> None:
        self._engine = engine
        self.directory = directory

    @classmethod
    def open(
        cls, fs: FS, directory: str, *, options: EngineOptions | None = None
    ) -> HardStateStore:
        """Open (or create) the store in ``directory``. ``options`` (tests: no
        background threads) always get the WAL sync mode ``always``."""
        base = options or EngineOptions(memtable_bytes=1 << 20, block_cache_bytes=1 << 20)
        opts = dataclasses.replace(
            base, wal=dataclasses.replace(base.wal, sync_mode=SyncMode.ALWAYS)
        )
        return cls(Engine.open(directory, opts, fs=fs), directory)

    def _name(self, group: int) -> str:
        return posixpath.join(self.directory, f"group {group}")

    def load(self, group: int) -> DurableState | None:
        value = self._engine.get(_key(group))
        return None if value is None else decode(value, self._name(group))

    def load_all(self) -> dict[int, DurableState]:
        """Every stored group's state (tests, tools)."""
        out: dict[int, DurableState] = {}
        for key, value in self._engine.scan(_PREFIX, _END):
            if len(key) != 1 + _KEY.size:
                raise CorruptionError(self.directory, "a key", f"{key!r} is not a group key")
            (group,) = _KEY.unpack_from(key, 1)
            out[group] = decode(value, self._name(group))
        return out

    def store_many(self, states: Mapping[int, DurableState], *, sync: bool = True) -> None:
        """Store every state in one atomic write; durable on return if ``sync`` (else
        at the next ``sync`` or synced write)."""
        if not states:
            return
        batch = WriteBatch()
        for group, state in states.items():
            batch.put(_key(group), encode(state))
        if sync:
            self._engine.write(batch)
        else:
            self._engine.write_nowait(batch)

    def sync(self) -> None:
        """Make every write so far durable."""
        self._engine.sync()

    def delete(self, group: int) -> None:
        """Forget a group (its partition was deleted); durable on return."""
        self._engine.write(WriteBatch().delete(_key(group)))

    def view(self, group: int) -> GroupState:
        return GroupState(self, group)

    def close(self) -> None:
        self._engine.close()


class GroupState:
    """One group's hard state in the store: a ``StateFile``."""

    def __init__(self, store: HardStateStore, group: int) -> None:
        self._store = store
        self.group = group

    @property
    def path(self) -> str:
        return self._store._name(self.group)

    def load(self) -> DurableState | None:
        return self._store.load(self.group)

    def store(self, state: DurableState) -> None:
        self._store.store_many({self.group: state})
