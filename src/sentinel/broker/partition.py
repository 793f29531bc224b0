"""A partition of this broker: append, the durability wait of each acks level, the high
watermark, and the wake-up of the consumers waiting on it.

This is the one place that knows when a write is acknowledged (etcd's driver habit:
persist, then acknowledge, then let readers see). Above it the service and the front
doors only say which ``Acks`` a producer asked for; below it ``PartitionLog`` stores
batches and keeps the watermark of what is durable. Replication replaces the inside of
``append`` (wait for a majority, move the high watermark from the commit index) and
nothing above it changes.

When a produce is answered, by acks level and WAL sync mode::

    sync mode   acks 0                   acks 1 / all
    always      at once; fsync follows   after the WAL fsync that covers the batch
    interval    at once                  at once (the OS has it; the timer syncs)
    none        at once                  at once (the OS has it)

acks 0 never waits, but under ``always`` the fsync still happens (the high watermark,
and with it what consumers see, waits for it). acks all equals acks 1 on one broker.

Consumers see a batch once the high watermark covers it: at the append under
``interval`` / ``none``, after its fsync under ``always``. ``hw_signal`` fires only when
the high watermark moves, never for an append that consumers cannot read yet.
``appended_signal`` fires after every append: the in-order wait of idempotent producers
(``producer_order``) waits for the predecessor's append, not its fsync.

Everything runs on the broker's event loop, and no file is opened or fsynced on it:
a log not opened yet (or whose files were released) is opened in a worker thread first
(``open_files``); ``_sync_to`` is the one call that waits for the WAL: it awaits the
broker-wide sync pipeline (``PartitionLog.sync_future``), whose
waves fsync every partition written since the last one, so the appends of many requests
and many partitions share one wave. Replication will replace this wait.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass

from sentinel.broker.arrivals import Arrivals, Place
from sentinel.broker.producer_order import is_ahead, wait_for_turn
from sentinel.broker.signal import Signal
from sentinel.broker.validation import Acks
from sentinel.errors import InvalidArgumentError, StorageUnavailableError
from sentinel.log.leader_epochs import check_current_epoch, epoch_end_offset
from sentinel.log.partition_log import PartitionLog
from sentinel.log.types import ReadResult
from sentinel.loop_wakeups import LoopWakeups
from sentinel.record import iter_batches

log = logging.getLogger(__name__)

__all__ = ["AppendOutcome", "Partition"]


@dataclass(frozen=True, slots=True)
class AppendOutcome:
    """What a produce to one partition answers (Kafka's ProduceResponse partition)."""

    base_offset: int
    log_append_time_ms: int
    log_start_offset: int
    duplicate: bool
    records: int
    #: The high watermark when the answer was made (what consumers can read).
    high_watermark: int


class Partition:
    """Partition ``index`` of ``topic`` over its log. Use from the event loop only."""

    def __init__(
        self,
        topic: str,
        index: int,
        plog: PartitionLog,
        *,
        sync_always: bool,
    ) -> None:
        self.topic = topic
        self.index = index
        self.log = plog
        self.name = f"{topic}-{index}"
        self._sync_always = sync_always
        #: Fires when the high watermark moves: consumers wait on it.
        self.hw_signal = Signal()
        #: Fires after every append: producers waiting for their turn wait on it.
        self.appended_signal = Signal()
        self._announced_hw = plog.high_watermark
        self._unawaited: set[asyncio.Future[None]] = set()
        self._opening: asyncio.Future[None] | None = None
        #: The appends of requests in the order they arrived (``arrivals``).
        self.arrivals = Arrivals()

    # ------------------------------------------------------------------ reads

    @property
    def high_watermark(self) -> int:
        return self.log.high_watermark

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self.log.log_end_offset

    def read(self, offset: int, max_bytes: int) -> ReadResult:
        """Whole batches below the high watermark from the one holding ``offset``."""
        return self.log.read(offset, max_bytes)

    def check_leader(self) -> None:
        """A broker alone leads every partition: nothing to check (a replicated
        partition raises NOT_LEADER_OR_FOLLOWER at a follower)."""

    @property
    def leader_epoch(self) -> int:
        """The epoch this broker stamps on the batches it appends now: a broker alone
        is always the leader of epoch 0."""
        return 0

    def end_offset_for_epoch(self, requested: int, current: int = -1) -> tuple[int, int]:
        """Kafka's OffsetForLeaderEpoch (``log/leader_epochs``): a broker alone
        stamps every batch with leader epoch 0, so its one epoch spans the whole log."""
        check_current_epoch(self.name, current, 0)
        log = self.log
        return epoch_end_offset((log.log_start_offset,), (0,), log.log_end_offset, requested)

    # ----------------------------------------------------------------- append

    async def append(
        self, batches: bytes | memoryview, acks: Acks, place: Place | None = None
    ) -> AppendOutcome:
        """Append the concatenated RecordBatch v2 ``batches`` (all or none, one WAL
        entry) and return once they are as durable as ``acks`` asks. ``place``: the
        request's place in this partition's queue of appends (``arrivals``), taken when
        the request arrived; None: taken now. It is left in any case.

        Errors: the log's refusals of the batches (``InvalidRecordError`` and its kin,
        ``OutOfOrderSequenceError``, ``InvalidProducerEpochError``), and
        ``StorageUnavailableError`` naming this partition when the disk cannot take it.
        """
        if place is None:
            place = self.arrivals.enter()
        try:
            views = list(iter_batches(batches))
            if not views:
                raise InvalidArgumentError("the produce request carries no record batch")
            await self.take_turn(views[0], place)
            # No await from here to the append: nothing of this partition slips in between.
            try:
                results = self.log.append_many(views, wait=False)
            except StorageUnavailableError as exc:
                raise self._offline(exc) from exc
        finally:
            place.leave()
        self.appended_signal.fire()
        self._announce()  # interval / none: the watermark moved with the append
        if self._sync_always:
            lsn = max(r.lsn for r in results)
            if acks is Acks.NONE:
                # Not waited for; stop() waits for it, and its failure is logged once.
                synced = asyncio.ensure_future(self._durable(lsn))
                self._unawaited.add(synced)
                synced.add_done_callback(self._forget)
            else:
                await self._durable(lsn)
        first = results[0]
        return AppendOutcome(
            first.base_offset,
            first.log_append_time_ms,
            self.log.log_start_offset,
            first.duplicate,
            sum(r.last_offset - r.base_offset + 1 for r in results),
            self.log.high_watermark,
        )

    async def take_turn(
        self, first_batch: memoryview | bytes, place: Place, *, open_files: bool = True
    ) -> None:
        """Return once it is ``place``'s turn to append (every request that arrived
        before it has appended or given up: ``arrivals``), with the log's files open. An
        idempotent producer's request that overtook its predecessor waits for it out of
        the queue, bounded (``producer_order``), then at its end: its batches reach the
        log in sequence order, and the requests behind it do not wait for it meanwhile."""
        await place.turn()
        if open_files:
            await self.open_files()
        if is_ahead(first_batch, self.log.producer_state):
            place.leave()
            await wait_for_turn(first_batch, self.log.producer_state, self.appended_signal)
            place.rejoin()
            await place.turn()
            if open_files:
                await self.open_files()

    async def open_files(self) -> None:
        """Before a call that needs the log's engine: if it is not opened yet (a
        partition that closed cleanly, its first use since the start), open it in a
        worker thread, so that the event loop never waits for that IO (a replay, the
        new WAL segment's and manifest's fsyncs); concurrent callers share one opening.
        A log whose files were released reopens them here (one ``open``, the WAL
        segment), unless a release of it is running (then in the worker too). A
        failure names the partition."""
        if self.log.files_open:
            return
        if self._opening is None:
            # A released log reopens its WAL segment inline (one ``open``), no hop.
            try:
                if self.log.reopen_files_now():
                    return
            except StorageUnavailableError as exc:
                raise self._offline(exc) from exc
            opening = asyncio.ensure_future(asyncio.to_thread(self.log.open_files))
            self._opening = opening
            opening.add_done_callback(self._opened)
        try:
            await asyncio.shield(self._opening)
        except StorageUnavailableError as exc:
            raise self._offline(exc) from exc

    def _opened(self, future: asyncio.Future[None]) -> None:
        self._opening = None
        if not future.cancelled():
            future.exception()  # retrieved: each waiter raises it

    async def _durable(self, lsn: int) -> None:
        """Wait until WAL entry ``lsn`` is durable, then wake consumers if the high
        watermark moved (it follows the fsync)."""
        try:
            await self._sync_to(lsn)
        except StorageUnavailableError as exc:
            raise self._offline(exc) from exc
        finally:
            self._announce()

    async def _sync_to(self, lsn: int) -> None:
        """The one call that waits for the WAL: a wave of the broker-wide sync pipeline
        (no thread of ours waits). The wave's end wakes the loop once for all the
        partitions it made durable (``loop_wakeups``)."""
        wakeups = LoopWakeups.of_running_loop()
        future, waiter = wakeups.waiter(functools.partial(self._synced, lsn))
        if self.log.when_durable(lsn, waiter, finish=False):
            await future
        else:
            self._announce()

    def _synced(self, lsn: int, error: BaseException | None) -> None:
        """(on the loop, before the waiter hears of it) The end of a sync wave for
        ``lsn``: the log moves its high watermark and unpins, and the consumers are
        woken, even if the request that waited was cancelled meanwhile."""
        self.log.finish_durable(lsn, error)
        self._announce()

    def _announce(self) -> None:
        """Fire ``hw_signal`` if the high watermark moved since it last fired."""
        hw = self.log.high_watermark
        if hw != self._announced_hw:
            self._announced_hw = hw
            self.hw_signal.fire()

    def _offline(self, exc: StorageUnavailableError) -> StorageUnavailableError:
        """The storage error of a produce, naming the partition (KAFKA_STORAGE_ERROR)."""
        return StorageUnavailableError(
            f"partition {self.name} cannot take writes now: {exc}", self.name
        )

    def _forget(self, future: asyncio.Future[None]) -> None:
        self._unawaited.discard(future)
        error = None if future.cancelled() else future.exception()
        # A storage failure was logged once by the engine when it began; not per request.
        if error is not None and not isinstance(error, StorageUnavailableError):
            log.error("fsync after an acks=0 produce to %s failed: %r", self.name, error)

    # -------------------------------------------------------------- lifecycle

    async def settle(self) -> None:
        """Wait for the fsyncs of acks=0 appends still under way."""
        if self._unawaited:
            await asyncio.gather(*list(self._unawaited), return_exceptions=True)

    def wake_all(self) -> None:
        """Wake every waiter (the partition is going away or the broker stops)."""
        self.hw_signal.fire()
        self.appended_signal.fire()
