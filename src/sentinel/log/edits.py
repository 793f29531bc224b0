"""Changes to a partition log other than appends, planned as (write batch, new state).

Each ``plan_*`` reads the engine and the current ``LogState`` and returns the
``WriteBatch`` that deletes or rewrites batches, cleans the time index and carries the
checkpoint of the resulting state, plus that state. The log writes the batch (one WAL
entry, so the change and its checkpoint are atomic) and then installs the state; a
crash leaves either the old log or the new one.
"""

from __future__ import annotations

from collections.abc import Sequence

from sentinel.errors import InvalidArgumentError
from sentinel.log.key_compaction import Rewrite
from sentinel.log.layout import (
    DATA_END,
    DATA_TAG,
    TIME_INDEX_END,
    TIME_INDEX_TAG,
    checkpoint_key,
    data_key,
    time_index_key,
)
from sentinel.log.producer_state import ProducerStateTable
from sentinel.log.recovery import last_batch, rebuild_producers
from sentinel.log.retention import BatchInfo
from sentinel.log.state import LogState, add_checkpoint
from sentinel.record import parse_header
from sentinel.storage.engine import Engine
from sentinel.storage.write_batch import WriteBatch


def check_boundary(engine: Engine, offset: int) -> None:
    """Refuse ``offset`` if a stored batch holds it past its first offset."""
    floor = engine.seek_floor(data_key(offset))
    if floor is None or not floor[0].startswith(DATA_TAG):
        return
    header = parse_header(floor[1])
    if header.base_offset != offset and header.next_offset > offset:
        raise InvalidArgumentError(
            f"cannot truncate to {offset}: it is inside the batch "
            f"[{header.base_offset}, {header.last_offset}]"
        )


def plan_truncation(
    engine: Engine, state: LogState, offset: int, kept: int, where: str,
    *, restart: bool = False,
) -> tuple[WriteBatch, LogState]:
    """Remove the batches at or after ``offset`` (all of them when ``offset`` is at or
    below the log start, or with ``restart`` (``offset`` at or past the log end): the
    log then restarts empty at ``offset``, its time index and checkpoints gone)."""
    full = restart or offset <= state.log_start
    if not full:
        check_boundary(engine, offset)
    wb = WriteBatch()
    removed = 0
    for key, value in engine.scan(DATA_TAG if full else data_key(offset), DATA_END):
        wb.delete(key)
        removed += len(value)
    index_from = TIME_INDEX_TAG if restart else time_index_key(offset + 1)
    for key, _ in engine.scan(index_from, TIME_INDEX_END):
        wb.delete(key)
    checkpoints = [] if restart else [o for o in state.checkpoints if o <= offset]
    for o in state.checkpoints[len(checkpoints) :]:
        wb.delete(checkpoint_key(o))
    if full:
        producers, max_ts = ProducerStateTable(), -1
    else:
        producers, max_ts = rebuild_producers(engine, checkpoints, offset, where)
    remaining = None if full else last_batch(engine, below=offset)
    new = LogState(
        log_start=offset if full else state.log_start,
        log_end=offset,
        last_base=-1 if remaining is None else remaining[0],
        size=0 if full else state.size - removed,
        clean_offset=offset if restart else min(state.clean_offset, offset),
        max_timestamp=max_ts,
        producers=producers,
        checkpoints=checkpoints,
    )
    add_checkpoint(wb, new, kept)
    return wb, new


def plan_head_deletion(
    engine: Engine, state: LogState, doomed: Sequence[BatchInfo], log_start: int, kept: int
) -> tuple[WriteBatch, LogState]:
    """Delete the head batches ``doomed`` and move the log start to ``log_start``."""
    wb = WriteBatch()
    for batch in doomed:
        wb.delete(data_key(batch.base_offset))
    for key, _ in engine.scan(TIME_INDEX_TAG, time_index_key(log_start)):
        wb.delete(key)
    emptied = bool(doomed) and doomed[-1].base_offset >= state.last_base
    new = state.evolve(
        log_start=log_start,
        size=state.size - sum(b.size for b in doomed),
        last_base=-1 if emptied else state.last_base,
    )
    add_checkpoint(wb, new, kept)
    return wb, new


def plan_rewrites(
    state: LogState, chunk: Sequence[Rewrite], clean_offset: int | None, kept: int
) -> tuple[WriteBatch, LogState]:
    """Install compacted batches (deleting the emptied ones); with ``clean_offset``,
    record that compaction has cleaned up to there."""
    wb = WriteBatch()
    size = state.size
    for rewrite in chunk:
        key = data_key(rewrite.base_offset)
        if rewrite.batch is None:
            wb.delete(key)
        else:
            wb.put(key, rewrite.batch)
        size += rewrite.new_size - rewrite.old_size
    new = state.evolve(
        size=size,
        clean_offset=state.clean_offset if clean_offset is None else clean_offset,
    )
    add_checkpoint(wb, new, kept)
    return wb, new
