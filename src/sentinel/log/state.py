"""The partition log's bookkeeping, as one value: what a checkpoint persists.

Appends update a ``LogState`` in place (under the log's write lock). Every other change
is planned as a new ``LogState`` plus the ``WriteBatch`` that makes it so (``edits``);
the log writes the batch (one atomic WAL entry, which also carries the checkpoint of
the new state) and only then installs the state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sentinel.log.layout import Checkpoint, checkpoint_key, encode_checkpoint
from sentinel.log.producer_state import ProducerStateTable
from sentinel.storage.write_batch import WriteBatch


@dataclass(slots=True)
class LogState:
    log_start: int
    log_end: int
    #: Base offset of the newest stored batch; -1 when none is stored.
    last_base: int
    #: Bytes of the stored batches.
    size: int
    #: Key compaction has cleaned every batch below this offset.
    clean_offset: int
    #: The greatest maxTimestamp of the batches stored (the time index's running max).
    max_timestamp: int
    producers: ProducerStateTable
    #: Offsets of the checkpoints stored, ascending.
    checkpoints: list[int]

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(
            self.log_start,
            self.size,
            self.clean_offset,
            self.max_timestamp,
            tuple(self.producers),
        )

    def evolve(self, **changes: object) -> LogState:
        """A copy with ``changes`` (the producer table is shared unless replaced)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def add_checkpoint(wb: WriteBatch, state: LogState, kept: int) -> None:
    """Put the checkpoint of ``state`` (under its log end) into ``wb``, delete the
    oldest beyond ``kept``, and record the result in ``state.checkpoints``."""
    wb.put(checkpoint_key(state.log_end), encode_checkpoint(state.checkpoint()))
    offsets = sorted({*state.checkpoints, state.log_end})
    while len(offsets) > kept:
        wb.delete(checkpoint_key(offsets.pop(0)))
    state.checkpoints = offsets
