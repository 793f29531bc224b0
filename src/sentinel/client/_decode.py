"""Decoding a fetched batch straight into ``ConsumerRecord`` tuples.

``sentinel.record.decode_records`` builds a ``Record`` per record; the consumer would
then copy each into a ``ConsumerRecord`` with its topic and partition. At half a
million records a second those two objects per record are a quarter of the
consumer's time, so this module hands the codec's one record parser
(``sentinel.record.reader.decode_batch``) a builder of the tuples ``poll`` returns,
and the parser skips the records before the wanted offset.

The parser keeps the codec's guarantees: the batch is validated first (framing, CRC,
codec), decompression is bounded, every length is checked against its record's end
before slicing, and every record must use exactly the bytes it declares; anything else
raises ``CorruptRecordError``. The tests check it against ``decode_records`` on every
codec, with and without keys, values and headers.
"""

from __future__ import annotations

from typing import TypeAlias

from sentinel.client.types import ConsumerRecord, Headers
from sentinel.record.batch import parse_header
from sentinel.record.reader import decode_batch

__all__ = ["decode_consumer_records"]

Buffer: TypeAlias = bytes | bytearray | memoryview
_new = tuple.__new__


def decode_consumer_records(
    batch: Buffer, topic: str, partition: int, min_offset: int
) -> list[ConsumerRecord]:
    """The records of one batch at or after ``min_offset``, as ``ConsumerRecord``s; none
    from a control batch (a replicated partition's leader-change marker), as Kafka's
    consumers skip them."""
    if parse_header(batch).is_control:
        return []

    def make(
        offset: int,
        timestamp: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
    ) -> ConsumerRecord:
        return _new(ConsumerRecord, (topic, partition, offset, timestamp, key, value, headers))

    return decode_batch(batch, make, min_offset=min_offset)
