"""Moving a partition log's start: the head batches a retention pass or a DeleteRecords
removes, read from the partition's engine.

``retention`` is the policy over a stream of head batches; this module feeds it from
the engine (only batches wholly below the high watermark, never the newest one) and
keeps the memo that lets the next pass skip the scan while nothing it depended on has
changed (``RetentionMemo``). The partition log holds its write lock around these calls,
then commits the head deletion (``edits.plan_head_deletion``); nothing here writes.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import takewhile

from sentinel.log.config import TopicConfig
from sentinel.log.layout import DATA_TAG, data_key
from sentinel.log.retention import BatchInfo, FirstSeen, RetentionMemo, plan_retention
from sentinel.log.scanning import batch_infos, scanning
from sentinel.log.state import LogState
from sentinel.storage.engine import Engine


def memo_now(
    state: LogState,
    config: TopicConfig,
    *,
    generation: int,
    high_watermark: int,
    seen: RetentionMemo | None,
    now_ms: int,
) -> tuple[RetentionMemo, bool]:
    """What a pass sees now, and whether ``seen`` (the last pass's memo) says it
    deletes nothing."""
    memo = RetentionMemo(
        generation, state.log_start, config.retention_ms, high_watermark, state.last_base
    )
    return memo, seen is not None and seen.holds(memo, now_ms, config.retention_bytes, state.size)


def retention_head(
    engine: Engine, state: LogState, config: TopicConfig, high_watermark: int, now_ms: int
) -> tuple[list[BatchInfo], BatchInfo | None]:
    """The head batches retention deletes now, oldest first, and the first head batch
    it looked at (None: no batch but the newest is wholly below the high watermark)."""
    with scanning(engine.scan(DATA_TAG, data_key(state.last_base))) as scan:
        head = FirstSeen(takewhile(lambda b: b.next_offset <= high_watermark, batch_infos(scan)))
        doomed = plan_retention(
            head,
            now_ms=now_ms,
            retention_ms=config.retention_ms,
            retention_bytes=config.retention_bytes,
            total_bytes=state.size,
        )
    return doomed, head.first


def idle_memo(memo: RetentionMemo, first: BatchInfo | None) -> RetentionMemo:
    """The memo of a pass that deleted nothing and saw ``first`` at the head."""
    return replace(memo, head_timestamp=None if first is None else first.max_timestamp)


def batches_below(engine: Engine, offset: int) -> list[BatchInfo]:
    """The stored batches wholly below ``offset``, oldest first (what a DeleteRecords
    to ``offset`` deletes; the batch holding it stays)."""
    with scanning(engine.scan(DATA_TAG, data_key(offset))) as scan:
        return list(takewhile(lambda b: b.next_offset <= offset, batch_infos(scan)))


__all__ = ["batches_below", "idle_memo", "memo_now", "retention_head"]
