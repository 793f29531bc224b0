"""The partition log's passes, in their own modules: what retention and DeleteRecords
read (``retention_pass``), how far compaction may clean and how its pass stops
(``compaction_pass``), and what a clean close leaves for the next start
(``clean_shutdown``). Each over a real engine on the in-memory filesystem."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import pytest

from sentinel.clock import ManualClock
from sentinel.fs import MemFS
from sentinel.log.clean_shutdown import summary_agrees, summary_state
from sentinel.log.compaction_pass import PassOutcome, cleanable_end, run_pass
from sentinel.log.config import TopicConfig
from sentinel.log.partition_log import PartitionLog
from sentinel.log.retention_pass import batches_below, idle_memo, memo_now, retention_head
from sentinel.log.summary import LogSummary
from sentinel.log.types import LogOptions
from sentinel.record import build_batch
from sentinel.storage.compaction import CompactionOptions
from sentinel.storage.options import EngineOptions

T0 = 1_700_000_000_000


def three_record_batch(tag: bytes, ts: int = T0) -> bytes:
    return build_batch([(b"k%d" % i, tag, (), ts) for i in range(3)])


def log_of(batches: int, config: TopicConfig | None = None) -> PartitionLog:
    """A log of ``batches`` batches of 3 records each: batch n at offsets 3n..3n+2."""
    log = PartitionLog.open(
        MemFS(), "/p", config or TopicConfig(), ManualClock(),
        EngineOptions(background=False), name="t-0",
    )  # fmt: skip
    for n in range(batches):
        log.append(three_record_batch(b"v%d" % n, T0 + n))
    return log


def test_batches_below_an_offset_are_the_ones_wholly_below_it() -> None:
    log = log_of(4)
    assert [b.base_offset for b in batches_below(log.engine, 6)] == [0, 3]
    # The batch holding the offset stays (offset 7 lies in the batch at 6).
    assert [b.base_offset for b in batches_below(log.engine, 7)] == [0, 3]
    assert batches_below(log.engine, 0) == []
    log.close()


def test_retention_reads_only_batches_below_the_high_watermark_and_not_the_newest() -> None:
    config = TopicConfig(retention_ms=10)  # every batch is older than that at T0 + 100
    log = log_of(4, config)
    state = log._state
    doomed, first = retention_head(log.engine, state, config, 6, T0 + 100)
    assert [b.base_offset for b in doomed] == [0, 3]  # wholly below the watermark 6
    assert first is not None and first.base_offset == 0
    doomed, _ = retention_head(log.engine, state, config, 12, T0 + 100)
    assert [b.base_offset for b in doomed] == [0, 3, 6]  # never the newest (at 9)
    log.close()


def test_a_memo_holds_until_what_the_pass_saw_changes() -> None:
    config = TopicConfig(retention_ms=1_000)
    log = log_of(3, config)
    state = log._state
    memo, holds = memo_now(state, config, generation=0, high_watermark=9, seen=None, now_ms=T0)
    assert not holds  # nothing remembered
    _doomed, first = retention_head(log.engine, state, config, 9, T0)
    seen = idle_memo(memo, first)
    assert seen.head_timestamp == T0  # the head batch's max timestamp
    _, holds = memo_now(state, config, generation=0, high_watermark=9, seen=seen, now_ms=T0 + 10)
    assert holds
    # Until the head is old enough, or the stored batches changed otherwise.
    _, holds = memo_now(state, config, generation=0, high_watermark=9, seen=seen,
                        now_ms=T0 + 5_000)  # fmt: skip
    assert not holds
    _, holds = memo_now(state, config, generation=1, high_watermark=9, seen=seen, now_ms=T0 + 10)
    assert not holds
    log.close()


def test_compaction_cleans_below_the_batch_that_holds_the_high_watermark() -> None:
    log = log_of(4)  # bases 0, 3, 6, 9
    last_base = log._state.last_base
    assert last_base == 9
    assert cleanable_end(log.engine, last_base, 12) == 9  # never the newest batch
    assert cleanable_end(log.engine, last_base, 7) == 6  # the watermark inside batch 6
    assert cleanable_end(log.engine, last_base, 6) == 6
    assert cleanable_end(log.engine, last_base, 0) == 0
    log.close()


def test_a_pass_with_nothing_dirty_and_no_tombstones_installs_nothing() -> None:
    log = log_of(3, TopicConfig(cleanup_compact=True, cleanup_delete=False))
    calls: list[int | None] = []

    def install(chunk: list[object], clean: int | None) -> bool:
        calls.append(clean)
        return True

    outcome = run_pass(
        log.engine, 6, 6, options=LogOptions(), tombstones_pending=False,
        now_ms=lambda: T0, install=install,
    )  # fmt: skip
    assert outcome == PassOutcome(0, False)
    assert calls == []
    log.close()


def test_a_refused_chunk_stops_the_pass_and_keeps_what_it_knew() -> None:
    # Every batch holds k0..k2: each newer one supersedes the older ones.
    log = log_of(4, TopicConfig(cleanup_compact=True, cleanup_delete=False))
    cleans: list[int | None] = []

    def refuse(chunk: list[object], clean: int | None) -> bool:
        cleans.append(clean)
        return False  # the log changed since the pass began

    outcome = run_pass(
        log.engine, 0, 9, options=LogOptions(), tombstones_pending=True,
        now_ms=lambda: T0, install=refuse,
    )  # fmt: skip
    assert outcome == PassOutcome(0, True)  # nothing removed, pending flag unchanged
    assert cleans == [None]  # stopped at its first chunk, never recorded a clean offset
    log.close()


def test_a_summary_that_differs_from_the_data_is_reported_and_the_data_wins(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = log_of(2)
    stored = log._state
    right = LogSummary(log_start=0, log_end=6, size=stored.size, clean_offset=0,
                       head_timestamp=-1)  # fmt: skip
    assert summary_agrees("t-0", summary_state(right), stored)
    wrong = summary_state(replace(right, log_end=9))
    with caplog.at_level(logging.WARNING):
        assert not summary_agrees("t-0", wrong, stored)
    assert "t-0" in caplog.text and "serving the data" in caplog.text
    log.close()


def test_a_cancelled_sync_wait_keeps_the_files_until_the_fsync_ends(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A produce request cancelled while it waits for its fsync (a client gone, the
    # broker stopping) cancels the future it awaits: the engine must stay open for the
    # fsync under way, and its end must not raise into the sync thread's callbacks.
    log = log_of(1)
    lsn = log.append(three_record_batch(b"late"), wait=False).lsn
    waiters: list[Callable[[BaseException | None], None]] = []

    def when_durable(_lsn: int, waiter: Callable[[BaseException | None], None]) -> bool:
        waiters.append(waiter)  # the wave under way calls it when its fsync ends
        return True

    monkeypatch.setattr(log.engine, "when_durable", when_durable)
    waiting = log.sync_future(lsn)
    assert waiting.cancel()
    assert not log.release_files()  # still pinned: the fsync is under way
    with caplog.at_level(logging.ERROR):
        (waiter,) = waiters
        waiter(None)  # what the sync thread does at the fsync's end
    assert "exception calling callback" not in caplog.text
    assert "waiter of a sync failed" not in caplog.text
    assert log.high_watermark == 6  # the fsync covered the batch: the watermark moves
    assert log.release_files()  # and the files may go now
    log.close()


def test_the_log_data_moves_down_the_levels_instead_of_being_rewritten() -> None:
    # Checkpoints and time-index entries every few batches: without the log's table
    # families every flushed table would span the checkpoint keys and each merge out of
    # L0 would rewrite all of L1 (27 times the flushed bytes in the engine's own test).
    engine = EngineOptions(
        background=False,
        memtable_bytes=16 * 1024,
        compaction=CompactionOptions(l0_compaction_trigger=2),
    )
    options = LogOptions(checkpoint_interval_bytes=2048, time_index_interval_bytes=1024)
    log = PartitionLog.open(
        MemFS(), "/p", TopicConfig(), ManualClock(), engine, options=options, name="t-0"
    )
    for n in range(1500):
        log.append(three_record_batch(b"v%d" % n, T0 + n))
    log.engine.compact()
    stats = log.engine_stats()
    assert stats.flushes > 20
    assert stats.compaction_bytes_written < 1.5 * stats.flush_bytes_written
    assert [b.base_offset for b in batches_below(log.engine, 4500)] == list(range(0, 4500, 3))
    log.close()


def test_a_close_after_few_bytes_writes_no_checkpoint_and_reopens_the_same() -> None:
    fs = MemFS()
    options = LogOptions(close_checkpoint_min_bytes=2_000)

    def reopen() -> PartitionLog:
        return PartitionLog.open(
            fs, "/p", TopicConfig(), ManualClock(), EngineOptions(background=False),
            options=options, name="t-0",
        )  # fmt: skip

    log = reopen()
    for n in range(3):
        log.append(three_record_batch(b"v%d" % n, T0 + n))
    assert log._state.checkpoints == []
    log.close()  # ~300 bytes since the (absent) last checkpoint: none written
    log = reopen()
    assert log._state.checkpoints == []
    assert (log.log_end_offset, log.high_watermark) == (9, 9)
    assert [b.base_offset for b in batches_below(log.engine, 9)] == [0, 3, 6]
    for n in range(3, 60):
        log.append(three_record_batch(b"v%d" % n, T0 + n))
    log.close()  # past the threshold: the close checkpoints
    log = reopen()
    assert log._state.checkpoints == [180]
    assert log.log_end_offset == 180
    log.close()
