"""A simulated node's disk as the real thing: ``PartitionLog`` + ``PartitionRaftLog`` on
its own ``MemFS``.

The log is the real partition log (LSM engine, WAL in sync mode ``none``, so the only
fsyncs are the Ready's: ``sync`` and the hard-state file), the hard state is the real
``hard_state_file``. A crash is ``MemFS.crash()``: the engine object is abandoned as a
killed process leaves it, everything not fsynced is lost, and the node reopens both
from what the filesystem kept.
"""

from __future__ import annotations

from sentinel.clock import ManualClock
from sentinel.fs import MemFS
from sentinel.log.config import TopicConfig
from sentinel.log.partition_log import PartitionLog
from sentinel.log.types import LogOptions
from sentinel.raft.hard_state_file import HardStateFile
from sentinel.raft.partition_log_adapter import PartitionRaftLog
from sentinel.raft.state import HardState
from sentinel.record import build_batch
from sentinel.storage.options import EngineOptions
from sentinel.storage.wal import SyncMode, WalOptions

ENGINE = EngineOptions(background=False, wal=WalOptions(sync_mode=SyncMode.NONE))
OPTIONS = LogOptions(auto_high_watermark=False)
T0 = 1_700_000_000_000


def payload(n: int, count: int) -> bytes:
    """Proposal ``n`` as a producer's batch of ``count`` records."""
    return build_batch([(b"k%d" % n, b"p%d.%d" % (n, i), (), T0 + n) for i in range(count)])


class PartitionStorage:
    """The ``SimStorage`` interface (log, hard, start_hash, sync, store_hard, crash)
    over the real partition log on one node's ``MemFS``."""

    def __init__(self) -> None:
        self.fs = MemFS()
        self.clock = ManualClock()
        self._hashes = {0: 0}  # the checker's hash of the prefix below each log start
        self.log = self._open()

    @property
    def start_hash(self) -> int:
        """The hash for the log start the log has now (after a crash: the old or the
        new start of a move in flight, whichever the disk kept)."""
        return self._hashes[self.log.log_start]

    @start_hash.setter
    def start_hash(self, value: int) -> None:
        self._hashes[self.log.log_start] = value

    def _open(self) -> PartitionRaftLog:
        plog = PartitionLog.open(
            self.fs, "/node/log", TopicConfig(), self.clock, ENGINE, options=OPTIONS
        )
        return PartitionRaftLog(plog, HardStateFile(self.fs, "/node"), self.clock)

    @property
    def hard(self) -> HardState:
        return self.log.hard_state

    def sync(self) -> None:
        self.log.sync()

    def store_hard(self, hard: HardState) -> None:
        self.log.store_hard_state(hard)

    def trim_points(self, applied: int) -> list[int]:
        """The batch boundaries retention may move the start to (all synced: the
        simulator moves starts between Readies)."""
        log = self.log
        return [e.end for e in log.entries(log.log_start, 1 << 30) if e.end <= applied]

    def trim(self, offset: int, start_hash: int) -> None:
        """Retention to the boundary ``offset``: durable at once (``advance_start``)."""
        moved = self.log.advance_start(offset)
        assert moved == offset, (moved, offset)
        self.start_hash = start_hash

    def crash(self) -> None:
        self.fs.crash()
        self.log = self._open()

    @property
    def high_watermark(self) -> int:
        return self.log.plog.high_watermark
