"""What the Kafka door moved, for the broker-wide traffic counters that the gRPC door
also feeds (``sentinel_messages_produced_total``, ``sentinel_bytes_produced_total``,
``sentinel_messages_fetched_total``, ``sentinel_bytes_consumed_total``).

Counted from a request and its answer after the fact, from batch headers (never per
record): a produce counts the partitions the answer accepted (an idempotent producer's
retried duplicate counts again: the answer does not tell it apart); a fetch counts the
records at or after each partition's fetch offset.
"""

from __future__ import annotations

import struct
from typing import Any

from sentinel.errors import SentinelError
from sentinel.protocol.kafka.messages.fetch import FetchRequest, FetchResponse
from sentinel.protocol.kafka.messages.produce import ProduceRequest, ProduceResponse
from sentinel.protocol.kafka.wire import Pieces
from sentinel.record.batch import HEADER_SIZE, LOG_OVERHEAD, iter_batches, parse_header
from sentinel.server.metrics import Metrics

__all__ = ["fetched", "produced", "record_traffic"]

PRODUCE = 0
FETCH = 1


def _records(batches: bytes | memoryview | Pieces, from_offset: int = 0) -> int:
    count = 0
    for part in batches.parts if isinstance(batches, Pieces) else (batches,):
        for view in iter_batches(part, allow_partial_tail=True):
            header = parse_header(view)
            first = max(header.base_offset, from_offset)
            if header.last_offset >= first:
                count += header.last_offset - first + 1
    return count


_BASE_LENGTH = struct.Struct(">qi")  # baseOffset, batchLength
_LAST_OFFSET_DELTA = struct.Struct(">i")
_LAST_OFFSET_DELTA_AT = 23


def _produced_records(batches: bytes | memoryview) -> int:
    """``_records(batches)`` for batches the broker accepted (so sound v2 batches), read
    from three header fields in place: a produce request carries dozens of batches, and
    a header object for each cost as much as storing it (docs/benchmarks.md, "Broker
    alone"). Stops at a partial tail, as ``_records`` does, and at a length
    below the minimum (where ``_records`` raises)."""
    base_length = _BASE_LENGTH.unpack_from
    delta_of = _LAST_OFFSET_DELTA.unpack_from
    end = len(batches)
    count = pos = 0
    while end - pos >= HEADER_SIZE:
        base, length = base_length(batches, pos)
        if length < HEADER_SIZE - LOG_OVERHEAD or pos + LOG_OVERHEAD + length > end:
            break
        (delta,) = delta_of(batches, pos + _LAST_OFFSET_DELTA_AT)
        first = max(base, 0)
        if base + delta >= first:
            count += base + delta - first + 1
        pos += LOG_OVERHEAD + length
    return count


def produced(request: ProduceRequest, response: ProduceResponse) -> dict[str, tuple[int, int]]:
    """Records and bytes appended, by topic."""
    accepted = {
        (t.name, p.index)
        for t in response.responses
        for p in t.partition_responses
        if p.error_code == 0
    }
    out: dict[str, tuple[int, int]] = {}
    for topic in request.topic_data:
        for part in topic.partition_data:
            if part.records and (topic.name, part.index) in accepted:
                records, size = out.get(topic.name, (0, 0))
                # Batch offsets in a produce request start at 0: the count is exact.
                count = _produced_records(part.records)
                out[topic.name] = (records + count, size + len(part.records))
    return out


def fetched(request: FetchRequest, response: FetchResponse) -> dict[str, tuple[int, int]]:
    """Records (at or after the offsets asked for) and bytes sent, by topic."""
    asked = {(t.topic, p.partition): p.fetch_offset for t in request.topics for p in t.partitions}
    out: dict[str, tuple[int, int]] = {}
    for topic in response.responses:
        for part in topic.partitions:
            if part.records:
                records, size = out.get(topic.topic, (0, 0))
                count = _records(part.records, asked.get((topic.topic, part.partition_index), 0))
                out[topic.topic] = (records + count, size + len(part.records))
    return out


def record_traffic(metrics: Metrics, api_key: int, request: Any, response: Any) -> None:
    """Add a Produce's or Fetch's traffic to the counters; other APIs move no records."""
    try:
        if api_key == PRODUCE:
            for topic, (records, size) in produced(request, response).items():
                metrics.count_produced(topic, records, size)
        elif api_key == FETCH:
            for topic, (records, size) in fetched(request, response).items():
                metrics.count_fetched(topic, records, size)
    except SentinelError:  # batches the broker accepted or stored: never expected
        return
