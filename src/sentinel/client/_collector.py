"""The application's side of the consumer: buffered fetch answers decoded into records.

``Collector.collect`` (called by ``poll`` on the application's thread) decodes the
buffered batches of each partition one at a time and hands out records from the
partition's position, skipping those before it (an answer starts with the batch holding
the fetch offset), advancing the position as it goes. The partitions are taken in turn
(the start rotates), paused ones skipped. A partition's pending error is raised once.

Locking: the fetcher's ``lock`` is taken to read the generation, take a chunk and move a
position; decoding runs without it, on the collector's own fields of ``PartitionFetch``
(valid while ``decode_gen`` is the partition's generation: a seek starts it over). One
application thread at a time (as Kafka's consumer, not polled from several at once).
``room(tp)`` tells the fetch driver that ``tp`` may be fetched again (its buffer fell
below ``fetch_max_bytes``, or its error was raised); it is called on this thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection

from sentinel.client._decode import decode_consumer_records
from sentinel.client._partition_fetch import PartitionFetch
from sentinel.client.types import ConsumerRecord, TopicPartition
from sentinel.record import iter_batches, parse_header

__all__ = ["Collector"]


class Collector:
    """Records out of the buffered answers of ``partitions`` (the fetcher's own dict)."""

    def __init__(
        self,
        lock: threading.Lock,
        partitions: dict[TopicPartition, PartitionFetch],
        max_bytes: int,
        room: Callable[[TopicPartition], None],
    ) -> None:
        self.lock = lock
        self.partitions = partitions
        self._max_bytes = max_bytes
        self._room = room
        self._rotation = 0

    def collect(
        self, max_records: int, only: Collection[TopicPartition] = ()
    ) -> list[ConsumerRecord]:
        """Up to ``max_records`` buffered records, from the partitions (``only`` these,
        if given) in turn.

        Raises a partition's pending error (offset out of range with no reset policy,
        a non-retriable fetch error) once; the partition then stays stopped until a
        seek.
        """
        out: list[ConsumerRecord] = []
        with self.lock:
            parts = list(self.partitions.values())
        if only:
            parts = [part for part in parts if part.tp in only]
        if not parts:
            return out
        self._rotation = (self._rotation + 1) % len(parts)
        for part in parts[self._rotation :] + parts[: self._rotation]:
            if len(out) >= max_records:
                break
            if part.error is not None:
                with self.lock:
                    error, part.error = part.error, None
                if error is not None:
                    if out:
                        part.error = error  # report it next time; deliver these first
                        break
                    self._room(part.tp)  # the driver fetches it again (until a seek)
                    raise error
            if not part.paused:
                self._collect_partition(part, out, max_records)
        return out

    def _collect_partition(
        self, part: PartitionFetch, out: list[ConsumerRecord], max_records: int
    ) -> None:
        with self.lock:
            generation = part.generation
        if part.decode_gen != generation:
            part.reset_decoding(generation)
        while len(out) < max_records:
            records = part.records
            if part.index < len(records):
                take = records[part.index : part.index + max_records - len(out)]
                with self.lock:
                    if part.generation != generation:
                        return  # a seek or reset meanwhile: these are stale
                    part.position = take[-1].offset + 1
                out.extend(take)
                part.index += len(take)
                continue
            if part.batch_end >= 0:
                with self.lock:
                    if part.generation != generation:
                        return
                    if part.position is not None and part.batch_end > part.position:
                        part.position = part.batch_end
                part.batch_end = -1
            if not self._next_batch(part, generation):
                return

    def _next_batch(self, part: PartitionFetch, generation: int) -> bool:
        """Decode the partition's next buffered batch into ``records``; False if none."""
        while True:
            if part.batches is not None:
                view = next(part.batches, None)
                if view is not None:
                    self._decode(part, view)
                    return True
                part.batches = None
            with self.lock:
                if not part.chunks or part.generation != generation:
                    return False
                chunk = part.chunks.popleft()
                full = part.buffered >= self._max_bytes
                part.buffered -= len(chunk)
                wake = full and part.buffered < self._max_bytes  # room again
            if wake:
                self._room(part.tp)
            part.batches = iter_batches(chunk, allow_partial_tail=True)

    def _decode(self, part: PartitionFetch, view: memoryview) -> None:
        position = part.position if part.position is not None else 0
        header = parse_header(view)
        part.index = 0
        part.records = []
        part.batch_end = header.next_offset
        if header.next_offset <= position or header.is_control:
            return
        part.records = decode_consumer_records(view, part.tp.topic, part.tp.partition, position)

    def has_buffered(self, only: Collection[TopicPartition] = ()) -> bool:
        """Whether ``collect`` (from ``only`` these, if given) would find something
        (lock held or not: a hint). Paused partitions' data does not count."""
        for part in self.partitions.values():
            if only and part.tp not in only:
                continue
            if part.error is not None:
                return True
            if part.paused:
                continue
            if part.chunks:
                return True
            if part.decode_gen == part.generation and (
                part.index < len(part.records) or part.batches is not None
            ):
                return True
        return False
