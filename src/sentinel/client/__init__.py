"""The Python client of Sentinel's gRPC API (``proto/sentinel.proto``).

- ``Producer`` / ``AsyncProducer``: batching, partitioning, acks, idempotent retries.
- ``Consumer`` / ``AsyncConsumer``: poll, seek, commit, consumer groups.
- ``Admin`` / ``AsyncAdmin``: topics, offsets, groups, cluster metadata.

The ``Async*`` flavours run on the caller's asyncio loop; the others run their IO on a
background thread of their own and may be used from any thread.
"""

from sentinel.client import errors
from sentinel.client.admin import Admin, AsyncAdmin
from sentinel.client.consumer import AsyncConsumer, Consumer
from sentinel.client.errors import SentinelClientError
from sentinel.client.producer import AsyncProducer, Producer
from sentinel.client.types import (
    ConsumerRecord,
    OffsetAndTimestamp,
    RecordMetadata,
    TopicPartition,
)

__all__ = [
    "Admin",
    "AsyncAdmin",
    "AsyncConsumer",
    "AsyncProducer",
    "Consumer",
    "ConsumerRecord",
    "OffsetAndTimestamp",
    "Producer",
    "RecordMetadata",
    "SentinelClientError",
    "TopicPartition",
    "errors",
]
