"""What every engine of a broker shares: one worker pool (flushes, compactions, the
memtable budget's flush requests), one sync pipeline (``SyncScheduler``), one block
cache bounded in bytes and one memtable budget (``WriteBufferManager``). The broker
makes one ``SharedResources`` at start, hands ``engine_options`` to every partition
and ``close``s it after the last engine closed.

Threads, whatever the number of partitions: ``workers`` + 1 + ``sync_threads``
(created on first use).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sentinel.storage.block_cache import BlockCache
from sentinel.storage.options import EngineOptions
from sentinel.storage.sync_scheduler import SyncScheduler
from sentinel.storage.workers import WorkerPool
from sentinel.storage.write_buffer import WriteBufferManager

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ResourceSizes:
    workers: int = 2
    sync_threads: int = 16
    block_cache_bytes: int = 64 * MiB
    memtable_budget_bytes: int = 128 * MiB


class SharedResources:
    def __init__(self, sizes: ResourceSizes | None = None) -> None:
        self.sizes = sizes = sizes or ResourceSizes()
        self.pool = WorkerPool(sizes.workers, "sentinel-worker")
        self.sync = SyncScheduler(sizes.sync_threads, "sentinel-sync")
        self.block_cache = BlockCache(sizes.block_cache_bytes)
        self.write_buffer = WriteBufferManager(sizes.memtable_budget_bytes, self.pool)

    def engine_options(self, base: EngineOptions) -> EngineOptions:
        """``base`` wired to the shared pool, sync pipeline, cache and budget."""
        return dataclasses.replace(
            base,
            workers=self.pool,
            sync_scheduler=self.sync,
            block_cache=self.block_cache,
            write_buffer=self.write_buffer,
        )

    def close(self) -> None:
        """After every engine closed: finish the waves asked for, stop the threads."""
        self.sync.shutdown()
        self.pool.shutdown()
