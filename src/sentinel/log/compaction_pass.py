"""Driving one key-compaction pass over a partition log (``PartitionLog.compact_keys``).

``key_compaction`` compacts batches; this module decides how far a pass may clean
(``cleanable_end``) and runs it: the offset map of the dirty batches, then the rewrites
of every batch below the end, in chunks. Each chunk goes to ``install``, which the log
runs under its write lock and which refuses the chunk when a truncation, retention or
DeleteRecords came in between; the pass then stops (the next one starts over). All the
reading and per-record work here is done outside the log's write lock, so appends
proceed meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sentinel.log.key_compaction import Rewrite, RewritePass, build_offset_map
from sentinel.log.layout import DATA_TAG, data_key, key_offset
from sentinel.log.scanning import next_offset, scanning
from sentinel.log.types import LogOptions
from sentinel.storage.engine import Engine

#: Install a chunk of rewrites (and, with an offset, record that the log is clean up
#: to it); False when the log changed since the pass began: the pass stops.
Install = Callable[[list[Rewrite], int | None], bool]


@dataclass(frozen=True, slots=True)
class PassOutcome:
    #: Records the installed chunks removed.
    removed: int
    #: Whether kept tombstones may be dropped by a later pass (which then runs even
    #: with no dirty batch); unchanged when the pass did not finish.
    tombstones_pending: bool


def cleanable_end(engine: Engine, last_base: int, high_watermark: int) -> int:
    """Compaction cleans the batches below the newest one and wholly below the high
    watermark: a record it lets supersede older ones must never be truncated (Kafka
    bounds its cleaner by the high watermark for the same reason)."""
    hw = high_watermark
    end = min(last_base, hw)
    if end == hw and hw > 0:
        floor = engine.seek_floor(data_key(hw - 1))
        if floor is not None and floor[0].startswith(DATA_TAG) and next_offset(floor[1]) > hw:
            end = key_offset(floor[0])
    return end


def run_pass(
    engine: Engine,
    clean: int,
    end: int,
    *,
    options: LogOptions,
    tombstones_pending: bool,
    now_ms: Callable[[], int],
    install: Install,
) -> PassOutcome:
    """Compact the batches below ``end`` (those from ``clean`` on are dirty), handing
    each chunk to ``install`` and, once all are in, the new clean offset."""
    offset_map: dict[bytes, int] = {}
    if clean < end:
        offset_map, end = build_offset_map(engine, clean, end, options.compaction_max_keys)
    elif not tombstones_pending:
        return PassOutcome(0, tombstones_pending)
    horizon = now_ms() - options.delete_retention_ms
    rewrites = RewritePass(engine, offset_map, end, horizon, options.compaction_write_bytes)
    removed = 0
    with scanning(rewrites.chunks()) as chunks:
        for chunk in chunks:
            if not install(chunk, None):
                return PassOutcome(removed, tombstones_pending)
            removed += sum(r.removed_records for r in chunk)
    if install([], end):
        tombstones_pending = rewrites.tombstones_kept > 0
    return PassOutcome(removed, tombstones_pending)


__all__ = ["Install", "PassOutcome", "cleanable_end", "run_pass"]
