"""The producer's batching, ordering and retry rules, sans-IO.

``Accumulator`` owns every batch from its first record to its acknowledgement::

    append ──> open batch ──(full / linger expired* / flush)──> queue of its partition
                                                                    │ drain
           acknowledged <── in flight <─────────────────────────────┘
                                │ retriable failure: back into the queue, in order
                                └ otherwise: failed

(*) A batch whose linger is over is closed only when it can be sent at once (an
in-flight slot left after the batches queued ahead of it); until then it keeps taking
records, so under a full pipeline batches grow instead of queueing small ones.

It never reads a clock or touches a socket: callers pass ``now`` (monotonic seconds)
and act on what it returns. Not thread-safe: the producer guards it with one lock,
taken by ``send`` on the caller's thread and by the sender on the IO thread.

Ordering and idempotence (as Kafka's producer):

- A partition has at most ``max_in_flight`` batches in flight; while one of its
  batches is being retried, at most one, so retries go out in order. Retries back
  off exponentially from ``retry_backoff_s`` to ``MAX_RETRY_BACKOFF_S``.
- With idempotence every batch carries (producer id, epoch, base sequence). The
  sequence is assigned when the batch is first drained and kept across retries, so the
  broker recognises a retry of a batch it already stored and answers with the original
  offset instead of storing it twice.
- A batch, once sent, is *unresolved* until it is acknowledged or failed. While it is,
  its (epoch, sequence) never change: a send whose outcome is unknown (timeout,
  connection lost, broker died) may have been stored, and only the same numbering
  lets the broker recognise the retry (KIP-360).
- A sent batch that fails for good (a refusal, or retries exhausted) leaves a gap in
  the partition's sequence the broker may never see filled. The partition then needs a
  new epoch with sequence 0 (the broker accepts that from a known producer id), and
  takes it only once no sent batch of it is unresolved: until then the sent batches are
  retried in their own epoch and new batches wait. At the bump, batches never sent are
  re-numbered in the new epoch; so is a sent batch the broker answered
  OUT_OF_ORDER_SEQUENCE on every attempt (nothing of it was stored). A batch one of
  whose sends may have been stored is never re-numbered: when the broker will not take
  it in its epoch (out of order behind the gap), it is failed to the caller.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum

from sentinel.client.errors import DuplicateSequenceError, OutOfOrderSequenceError, never_sent
from sentinel.client.types import TopicPartition
from sentinel.codec.crc import crc32c
from sentinel.record import BatchBuilder, Compression

from ._future import BatchSink

__all__ = ["Accumulator", "Outcome", "ProducerBatch", "next_sequence"]

INT32_MAX = 2**31 - 1
INT16_MAX = 2**15 - 1
_PRODUCER_FIELDS = struct.Struct(">qhi")  # producerId, producerEpoch, baseSequence
_PRODUCER_OFFSET = 43
_CRC = struct.Struct(">I")
_CRC_OFFSET = 17
_CRC_START = 21
MAX_RETRY_BACKOFF_S = 1.0
_RECORD_OVERHEAD = 16  # a record's framing beyond key and value, roughly (varints, attrs)


def next_sequence(sequence: int, increment: int) -> int:
    """``sequence + increment``, wrapping after 2^31 - 1 to 0 as Kafka's sequences do."""
    if sequence > INT32_MAX - increment:
        return increment - (INT32_MAX - sequence) - 1
    return sequence + increment


def _producer_id(batch: bytes) -> int:
    producer_id: int = _PRODUCER_FIELDS.unpack_from(batch, _PRODUCER_OFFSET)[0]
    return producer_id


def stamp_producer(batch: bytes, producer_id: int, epoch: int, base_sequence: int) -> bytes:
    """``batch`` with its producer id, epoch and base sequence set, CRC recomputed."""
    buf = bytearray(batch)
    _PRODUCER_FIELDS.pack_into(buf, _PRODUCER_OFFSET, producer_id, epoch, base_sequence)
    _CRC.pack_into(buf, _CRC_OFFSET, crc32c(memoryview(buf)[_CRC_START:]))
    return bytes(buf)


@dataclass(slots=True, eq=False)
class ProducerBatch:
    """A batch of one partition, from its first record to its outcome."""

    tp: TopicPartition
    batch_id: int  # increasing per producer: the order of batches within a partition
    created: float
    builder: BatchBuilder | None
    sink: BatchSink
    count: int = 0
    size: int = 0  # bytes, uncompressed
    data: bytes | None = None  # the encoded batch, once drained
    epoch: int = -1
    base_sequence: int = -1  # -1: not idempotent
    encoded_as: tuple[int, int] = (-1, -1)  # the (epoch, base_sequence) ``data`` carries
    attempts: int = 0  # sends that failed and were retried
    retry_at: float = 0.0
    sent: bool = False  # sent under its current numbering, not yet acknowledged or failed
    maybe_written: bool = False  # a send of it ended without a refusal: it may be stored


class Outcome(Enum):
    """What the sender does with a batch after its response."""

    DONE = "done"  # acknowledged: complete its futures
    RETRY = "retry"  # back in its queue: nothing to do now
    FAILED = "failed"  # fail its futures with the error


def definitely_refused(error: BaseException) -> bool:
    """Whether a failed send certainly stored nothing: it never left the client (no
    connection), or the broker answered with a reason it gives before appending. A
    lost connection, a timeout or a storage error may come after the batch was written."""
    if isinstance(error, OutOfOrderSequenceError) or never_sent(error):
        return True
    reason = getattr(error, "reason", None)
    return reason is not None and reason not in _MAYBE_APPENDED


_MAYBE_APPENDED = frozenset({"KAFKA_STORAGE_ERROR", "REQUEST_TIMED_OUT"})
"""Reasons a broker may give after it appended the batch (a failed write; acks=all
that timed out waiting for the replicas)."""


@dataclass(slots=True)
class _PartitionState:
    queue: deque[ProducerBatch] = field(default_factory=deque)
    in_flight: int = 0
    retrying: int = 0  # batches of this partition queued or in flight for a retry
    epoch: int = 0
    next_seq: int = 0  # the sequence of the next batch to be drained
    # sent batches not yet acknowledged or failed (in flight or queued for a retry)
    unresolved: dict[int, ProducerBatch] = field(default_factory=dict)
    bump_epoch: bool = False  # a gap: start a new epoch once nothing is unresolved


class Accumulator:
    """Open batches, per-partition queues, in-flight counts and sequence numbers."""

    def __init__(
        self,
        *,
        batch_size: int,
        linger_s: float,
        compression: Compression,
        max_in_flight: int,
        retries: int,
        retry_backoff_s: float,
        producer_id: int = -1,
        sink_factory: Callable[[str, int], BatchSink],
    ) -> None:
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.compression = compression
        self.max_in_flight = max_in_flight
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.producer_id = producer_id
        self._sink_factory = sink_factory
        self._open: dict[TopicPartition, ProducerBatch] = {}
        self._partitions: dict[TopicPartition, _PartitionState] = {}
        self._ready: set[TopicPartition] = set()  # partitions with a queued batch
        self._incomplete: dict[int, ProducerBatch] = {}
        self._next_id = 0
        self.buffered_bytes = 0
        self.closed_batches: list[ProducerBatch] = []  # closed since the caller last looked

    @property
    def idempotent(self) -> bool:
        return self.producer_id >= 0

    # --- the send side ---------------------------------------------------------------

    def append(  # noqa: PLR0917 - the hot path: positional is cheaper
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]],
        timestamp: int,
        now: float,
    ) -> tuple[ProducerBatch, int, bool]:
        """Add a record to the partition's open batch, starting one as needed.

        Returns the batch, the record's offset delta in it, and whether a new batch was
        started (the sender may need a wake-up for its linger deadline). Batches closed
        on the way (full) are appended to ``closed_batches``.
        """
        batch = self._open.get((topic, partition))  # type: ignore[call-overload]
        if batch is not None:
            need = _RECORD_OVERHEAD + (len(value) if value else 0) + (len(key) if key else 0)
            if batch.size + need > self.batch_size:
                self._close(batch)
                batch = None
        started = batch is None
        if batch is None:
            batch = self._new_batch(TopicPartition(topic, partition), now)
        builder = batch.builder
        assert builder is not None
        delta = builder.append(key, value, headers, timestamp)
        size = builder.size_estimate
        self.buffered_bytes += size - batch.size
        batch.size = size
        batch.count = delta + 1
        if size >= self.batch_size:
            self._close(batch)
        return batch, delta, started

    def _new_batch(self, tp: TopicPartition, now: float) -> ProducerBatch:
        self._next_id += 1
        if self.idempotent:
            # The sequence is known now: earlier batches of the partition are closed.
            state = self._state(tp)
            builder = BatchBuilder(
                compression=self.compression,
                producer_id=self.producer_id,
                producer_epoch=state.epoch,
                base_sequence=state.next_seq,
            )
            batch = ProducerBatch(tp, self._next_id, now, builder, self._sink_factory(*tp))
            batch.epoch = state.epoch
            batch.base_sequence = state.next_seq
            batch.encoded_as = (state.epoch, state.next_seq)
        else:
            builder = BatchBuilder(compression=self.compression)
            batch = ProducerBatch(tp, self._next_id, now, builder, self._sink_factory(*tp))
        batch.size = builder.size_estimate
        self.buffered_bytes += batch.size
        self._open[tp] = batch
        self._incomplete[batch.batch_id] = batch
        return batch

    def _state(self, tp: TopicPartition) -> _PartitionState:
        state = self._partitions.get(tp)
        if state is None:
            state = self._partitions[tp] = _PartitionState()
        return state

    def _close(self, batch: ProducerBatch) -> None:
        del self._open[batch.tp]
        state = self._state(batch.tp)
        if self.idempotent:
            state.next_seq = next_sequence(batch.base_sequence, batch.count)
        state.queue.append(batch)
        self._ready.add(batch.tp)
        self.closed_batches.append(batch)

    def close_open(self) -> None:
        """Close every open batch: they are sent at the next drain (flush, close)."""
        for batch in list(self._open.values()):
            self._close(batch)

    def incomplete(self) -> list[ProducerBatch]:
        """Every batch not yet acknowledged or failed, oldest first."""
        return list(self._incomplete.values())

    def __len__(self) -> int:
        return len(self._incomplete)

    # --- the sender side -------------------------------------------------------------

    def drain(self, now: float) -> tuple[list[ProducerBatch], float | None]:
        """The batches to send now (in flight from here on), and when to drain next.

        The time is None when nothing will become ready by itself: the sender waits
        for a record, a response or a flush. ``encode`` each batch, without the lock.
        """
        wake: float | None = None
        linger = self.linger_s
        for batch in list(self._open.values()):
            due = batch.created + linger
            if due <= now:
                if self._sendable(batch.tp):
                    self._close(batch)
                # else it stays open, taking records, until a response frees a slot
            elif wake is None or due < wake:
                wake = due
        out: list[ProducerBatch] = []
        for tp in list(self._ready):
            state = self._partitions[tp]
            queue = state.queue
            if state.bump_epoch and not state.unresolved:
                self._new_epoch(state, tp)
            limit = 1 if state.retrying else self.max_in_flight
            index = 0
            while index < len(queue) and state.in_flight < limit:
                head = queue[index]
                if state.bump_epoch and not head.sent:
                    index += 1  # waits for the new epoch; sent batches are retried first
                    continue
                if head.retry_at > now:
                    if wake is None or head.retry_at < wake:
                        wake = head.retry_at
                    break
                del queue[index]
                state.in_flight += 1
                head.sent = True
                state.unresolved[head.batch_id] = head
                out.append(head)
            if not queue:
                self._ready.discard(tp)
        return out, wake

    def _sendable(self, tp: TopicPartition) -> bool:
        """Whether a batch of ``tp`` closed now would be sent now: an in-flight slot is
        left for it after the batches queued ahead of it. If not, a batch whose linger is over stays
        open and keeps taking records (as Kafka's tail batch does) instead of queueing
        as one more small request: while the partition is at its in-flight limit the
        round trip sets the batch size, and a backlog of linger-sized batches (each a
        round trip, at a rate the slots cannot carry) never builds."""
        state = self._partitions.get(tp)
        if state is None:
            return True
        limit = 1 if state.retrying else self.max_in_flight
        return state.in_flight + len(state.queue) < limit

    @staticmethod
    def encode(batch: ProducerBatch) -> bytes:
        """The batch's bytes, built once and re-stamped if it was renumbered since.

        Needs no lock: a drained batch is in flight, and nothing else touches an
        in-flight batch until its response.
        """
        data = batch.data
        if data is None:
            assert batch.builder is not None
            data = batch.builder.build()
            batch.builder = None
        if batch.base_sequence >= 0 and batch.encoded_as != (batch.epoch, batch.base_sequence):
            data = stamp_producer(data, _producer_id(data), batch.epoch, batch.base_sequence)
            batch.encoded_as = (batch.epoch, batch.base_sequence)
        batch.data = data
        return data

    def _new_epoch(self, state: _PartitionState, tp: TopicPartition) -> None:
        """A new epoch for the partition: its sequences start again at 0. Called only
        when no sent batch is unresolved, so every batch re-numbered here is one the
        broker has not stored (never sent, or refused out of order on every send)."""
        state.bump_epoch = False
        state.epoch = state.epoch + 1 if state.epoch < INT16_MAX else 0
        state.next_seq = 0
        waiting = list(state.queue)
        assert not any(batch.sent for batch in waiting), "a sent batch would be re-numbered"
        open_batch = self._open.get(tp)
        if open_batch is not None:
            waiting.append(open_batch)
        for batch in waiting:  # oldest first: the queue is in batch order
            batch.epoch = state.epoch
            batch.base_sequence = state.next_seq
            if batch is not open_batch:
                state.next_seq = next_sequence(state.next_seq, batch.count)

    def on_response(self, batch: ProducerBatch) -> None:
        """Bookkeeping common to every outcome: the batch is no longer in flight."""
        state = self._partitions[batch.tp]
        state.in_flight -= 1

    def succeeded(self, batch: ProducerBatch) -> Outcome:
        """The broker stored ``batch`` (or had it already)."""
        self.on_response(batch)
        return self._succeeded_after_failure(batch, self._partitions[batch.tp])

    def failed(self, batch: ProducerBatch, error: BaseException, now: float) -> Outcome:
        """The send of ``batch`` failed with ``error``: retry it, or give up on it."""
        self.on_response(batch)
        state = self._partitions[batch.tp]
        if isinstance(error, DuplicateSequenceError):
            return self._succeeded_after_failure(batch, state)
        if not definitely_refused(error):
            batch.maybe_written = True
        out_of_order = isinstance(error, OutOfOrderSequenceError)
        retriable = getattr(error, "retriable", False) or out_of_order
        if out_of_order and self.idempotent and (state.bump_epoch or self._oldest(batch, state)):
            # Nothing before it can still fill the gap the broker sees (a batch failed
            # for good, or the broker lost track of us): only a new epoch gets past it.
            state.bump_epoch = True
            if batch.maybe_written:
                retriable = False  # it may be stored: never re-sent under a new number
            else:
                batch.sent = False  # nothing of it was stored: re-numbered at the bump
                del state.unresolved[batch.batch_id]
        if retriable and batch.attempts < self.retries:
            if not batch.attempts:
                state.retrying += 1
            batch.attempts += 1
            batch.retry_at = now + self.backoff(batch.attempts)
            self._requeue(batch, state)
            return Outcome.RETRY
        if batch.attempts:
            state.retrying -= 1
        if self.idempotent and batch.sent:
            state.bump_epoch = True  # its sequence range may stay a gap for the broker
        self._forget(batch)
        return Outcome.FAILED

    @staticmethod
    def _oldest(batch: ProducerBatch, state: _PartitionState) -> bool:
        """Whether no batch sent before ``batch`` is unresolved."""
        return batch.batch_id == min(state.unresolved, default=batch.batch_id)

    def backoff(self, attempt: int) -> float:
        """Seconds before retry ``attempt`` (1, 2, ...): doubling from
        ``retry_backoff_s`` up to ``MAX_RETRY_BACKOFF_S`` (as Kafka's
        retry.backoff.max.ms), so a broker restart is ridden out."""
        base = self.retry_backoff_s
        return min(base * (1 << min(attempt - 1, 16)), max(base, MAX_RETRY_BACKOFF_S))

    def _succeeded_after_failure(self, batch: ProducerBatch, state: _PartitionState) -> Outcome:
        if batch.attempts:
            state.retrying -= 1
        self._forget(batch)
        return Outcome.DONE

    def abandon(self, batch: ProducerBatch) -> None:
        """Forget an in-flight batch without a response (acks=0, shutdown)."""
        self.on_response(batch)
        self._forget(batch)

    def _requeue(self, batch: ProducerBatch, state: _PartitionState) -> None:
        queue = state.queue
        index = 0
        for index, queued in enumerate(queue):  # noqa: B007 - the position is the result
            if queued.batch_id > batch.batch_id:
                break
        else:
            index = len(queue)
        queue.insert(index, batch)
        self._ready.add(batch.tp)

    def _forget(self, batch: ProducerBatch) -> None:
        state = self._partitions.get(batch.tp)
        if state is not None:
            state.unresolved.pop(batch.batch_id, None)
        if self._incomplete.pop(batch.batch_id, None) is not None:
            self.buffered_bytes -= batch.size

    def fail_all(self) -> Iterator[ProducerBatch]:
        """Take every batch not in flight out (shutdown): the caller fails them."""
        self.close_open()
        for state in self._partitions.values():
            while state.queue:
                batch = state.queue.popleft()
                self._forget(batch)
                yield batch
        self._ready.clear()

    def in_flight(self) -> int:
        """Batches sent and not answered."""
        return sum(state.in_flight for state in self._partitions.values())
