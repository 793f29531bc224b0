"""Rebuilding a partition log's in-memory state from its engine.

On open: load the newest checkpoint (see ``layout``) and replay the batches stored at
or after its offset, reading only their headers. The log end is the next offset of the
newest batch, or the newest checkpoint's offset if greater (no batch left, or a gap).
The replay is bounded by the checkpoint interval, because the log writes a checkpoint
every ``checkpoint_interval_bytes`` of appends, after every head deletion, truncation
and compaction (in the same atomic write as the change), and on close.

After a truncation: producer state and the time index's running maximum are rebuilt
from the newest checkpoint at or below the new end, replaying the batches between;
with none, from the log start (producers whose batches retention already deleted are
then forgotten, as Kafka forgets them when it has no snapshot).
"""

from __future__ import annotations

from sentinel.errors import CorruptionError
from sentinel.log.layout import (
    CHECKPOINT_END,
    CHECKPOINT_TAG,
    DATA_END,
    DATA_TAG,
    Checkpoint,
    checkpoint_key,
    data_key,
    decode_checkpoint,
    key_offset,
)
from sentinel.log.producer_state import ProducerStateTable
from sentinel.log.state import LogState
from sentinel.record import parse_header
from sentinel.storage.engine import Engine


def checkpoint_offsets(engine: Engine) -> list[int]:
    return [key_offset(k) for k, _ in engine.scan(CHECKPOINT_TAG, CHECKPOINT_END)]


def load_checkpoint(engine: Engine, offset: int, where: str) -> Checkpoint:
    raw = engine.get(checkpoint_key(offset))
    if raw is None:
        raise CorruptionError(where, f"checkpoint {offset}", "listed but not found")
    return decode_checkpoint(raw, f"{where} checkpoint {offset}")


def last_batch(engine: Engine, below: int | None = None) -> tuple[int, int] | None:
    """(base offset, next offset) of the newest stored batch (based below ``below``)."""
    if below is not None and below <= 0:
        return None
    found = engine.seek_floor(DATA_END if below is None else data_key(below - 1))
    if found is None or not found[0].startswith(DATA_TAG):
        return None
    header = parse_header(found[1])
    return header.base_offset, header.next_offset


def recover(engine: Engine, where: str) -> tuple[LogState, int]:
    """The state of the log stored in ``engine``, and how many batches were replayed."""
    checkpoints = checkpoint_offsets(engine)
    last = last_batch(engine)
    cp = load_checkpoint(engine, checkpoints[-1], where) if checkpoints else None
    start = checkpoints[-1] if checkpoints else 0
    # A checkpoint is written at the log end of its time, and a truncation deletes the
    # ones above its point, so the newest one bounds the end from below: that keeps
    # the end when no batch is left, or when compaction deleted the batches before a
    # truncation point (a gap at the end).
    log_end = max(start, cp.log_start_offset if cp is not None else 0)
    if last is not None:
        log_end = max(log_end, last[1])
    state = LogState(
        log_start=cp.log_start_offset if cp is not None else -1,
        log_end=log_end,
        last_base=-1 if last is None else last[0],
        size=cp.size_bytes if cp is not None else 0,
        clean_offset=cp.clean_offset if cp is not None else 0,
        max_timestamp=cp.max_timestamp if cp is not None else -1,
        producers=ProducerStateTable({e.producer_id: e for e in cp.producers} if cp else None),
        checkpoints=checkpoints,
    )
    replayed = 0
    for _key, value in engine.scan(data_key(start), DATA_END):
        header = parse_header(value)
        if state.log_start < 0:
            state.log_start = header.base_offset
        state.size += len(value)
        state.max_timestamp = max(state.max_timestamp, header.max_timestamp)
        state.producers.replay(header)
        replayed += 1
    if state.log_start < 0:
        state.log_start = log_end
    return state, replayed


def rebuild_producers(
    engine: Engine, checkpoints: list[int], upto: int, where: str
) -> tuple[ProducerStateTable, int]:
    """Producer state and the running maximum timestamp of the batches below ``upto``,
    from the newest checkpoint in ``checkpoints`` at or below it."""
    usable = [o for o in checkpoints if o <= upto]
    if usable:
        cp = load_checkpoint(engine, usable[-1], where)
        producers = ProducerStateTable({e.producer_id: e for e in cp.producers})
        max_ts, start = cp.max_timestamp, usable[-1]
    else:
        producers, max_ts, start = ProducerStateTable(), -1, 0
    for _key, value in engine.scan(data_key(start), data_key(upto)):
        header = parse_header(value)
        max_ts = max(max_ts, header.max_timestamp)
        producers.replay(header)
    return producers, max_ts
