"""A partition log across a clean shutdown: the summary it leaves, and the deferred
log served from that summary until a call needs its engine.

``PartitionLog.close`` hands ``summary_payload`` to ``Engine.close``; a broker
restarting reads it back (``clean_marker.check``, the format is ``summary``) and builds
a deferred log (``PartitionLog.deferred``) whose state is ``summary_state`` until its
engine opens; then ``open_recovered`` loads the stored state, which wins over the
summary when they disagree (``summary_agrees`` says so, loudly).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sentinel.errors import DiskError, StorageUnavailableError
from sentinel.log.layout import DATA_TAG, data_key
from sentinel.log.producer_state import ProducerStateTable
from sentinel.log.recovery import recover
from sentinel.log.scanning import batch_infos, scanning
from sentinel.log.state import LogState
from sentinel.log.summary import LogSummary
from sentinel.storage.engine import Engine

_log = logging.getLogger(__name__)


def summary_state(summary: LogSummary) -> LogState:
    """A deferred log's state until its engine opens: only the offsets and sizes are
    read from it (every other use opens the engine first)."""
    return LogState(
        log_start=summary.log_start,
        log_end=summary.log_end,
        last_base=-1,
        size=summary.size,
        clean_offset=summary.clean_offset,
        max_timestamp=-1,
        producers=ProducerStateTable(),
        checkpoints=[],
    )


def open_recovered(opener: Callable[[], Engine], where: str) -> tuple[Engine, LogState, int]:
    """Open a deferred log's engine and load its state: (engine, state, batches
    replayed). The engine is closed again if its state cannot be loaded."""
    engine = opener()
    try:
        state, replayed = recover(engine, where)
    except BaseException:
        engine.close()
        raise
    return engine, state, replayed


def summary_agrees(name: str, shown: LogState, stored: LogState) -> bool:
    """Whether the offsets and size a deferred log served (``shown``) are those of its
    stored data; if not, a warning names the partition (the stored data wins: it is
    what a full open would serve)."""
    if (shown.log_start, shown.log_end, shown.size) == (
        stored.log_start, stored.log_end, stored.size
    ):  # fmt: skip
        return True
    _log.warning(
        "partition %s: its clean-shutdown summary (start %d, end %d, %d bytes) "
        "differs from its data (start %d, end %d, %d bytes); serving the data",
        name, shown.log_start, shown.log_end, shown.size,
        stored.log_start, stored.log_end, stored.size,
    )  # fmt: skip
    return False


def summary_payload(engine: Engine, state: LogState) -> bytes:
    """The figures a restart serves before it opens the engine (``summary``); empty
    when the head batch cannot be read (the next start then opens this partition)."""
    head = -1
    try:
        if state.last_base >= 0:
            scan = engine.scan(DATA_TAG, data_key(state.last_base))
            with scanning(scan) as found:
                first = next(batch_infos(found), None)
            if first is not None:
                head = first.max_timestamp
    except (DiskError, OSError, StorageUnavailableError):
        return b""
    return LogSummary(state.log_start, state.log_end, state.size, state.clean_offset, head).encode()


__all__ = ["open_recovered", "summary_agrees", "summary_payload", "summary_state"]
