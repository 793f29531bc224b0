"""The producer's settings (``ProducerConfig``, checked once) and the normalising of what
``send`` takes (bytes, headers)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from sentinel.client._channel import parse_bootstrap
from sentinel.client.errors import RecordTypeError
from sentinel.errors import InvalidArgumentError
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.record import Compression

__all__ = [
    "ACKS_PB",
    "Acks",
    "HeadersArg",
    "ProducerConfig",
    "as_bytes",
    "new_producer_id",
    "normalize_headers",
]

Acks = Literal[0, 1, -1, "all"]
HeadersArg = Sequence[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None
MAX_IDEMPOTENT_IN_FLIGHT = 5  # the broker remembers a producer's last five batches

ACKS_PB = {0: pb.ACKS_NONE, 1: pb.ACKS_LEADER, -1: pb.ACKS_ALL}
_COMPRESSION = {
    None: Compression.NONE,
    "none": Compression.NONE,
    "gzip": Compression.GZIP,
    "snappy": Compression.SNAPPY,
    "lz4": Compression.LZ4,
    "zstd": Compression.ZSTD,
}


def new_producer_id() -> int:
    """A random positive 63-bit producer id (the proto has no InitProducerId)."""
    return int.from_bytes(os.urandom(8), "big") & (2**63 - 1) or 1


@dataclass(frozen=True, slots=True)
class ProducerConfig:
    """A producer's settings, checked. See ``Producer`` for what each one means."""

    bootstrap: tuple[str, ...]
    acks: int
    linger_ms: float
    batch_size: int
    compression: Compression
    partitioner: str
    retries: int
    retry_backoff_ms: float
    enable_idempotence: bool
    max_in_flight: int
    request_timeout_ms: int
    buffer_memory: int
    max_block_ms: int
    auto_create_topics: bool

    @classmethod
    def build(
        cls,
        bootstrap: str | Sequence[str],
        *,
        acks: Acks,
        linger_ms: float,
        batch_size: int,
        compression: str | None,
        partitioner: str,
        retries: int,
        retry_backoff_ms: float,
        enable_idempotence: bool,
        max_in_flight: int,
        request_timeout_ms: int,
        buffer_memory: int,
        max_block_ms: int,
        auto_create_topics: bool,
    ) -> ProducerConfig:
        acks_value = -1 if acks == "all" else acks
        if acks_value not in ACKS_PB:
            raise InvalidArgumentError(f"acks must be 0, 1 or 'all', got {acks!r}")
        codec = _COMPRESSION.get(compression.lower() if compression else None)
        if codec is None:
            raise InvalidArgumentError(
                f"compression must be None, 'gzip', 'snappy', 'lz4' or 'zstd', got {compression!r}"
            )
        if partitioner not in ("murmur2", "sticky", "round_robin"):
            raise InvalidArgumentError(
                f"partitioner must be 'murmur2' or 'round_robin', got {partitioner!r}"
            )
        if batch_size < 1 or linger_ms < 0 or retries < 0 or retry_backoff_ms < 0:
            raise InvalidArgumentError(
                "batch_size must be >= 1; linger_ms, retries, retry_backoff_ms >= 0"
            )
        if max_in_flight < 1 or request_timeout_ms < 1 or buffer_memory < 1 or max_block_ms < 0:
            raise InvalidArgumentError(
                "max_in_flight, request_timeout_ms, buffer_memory must be >= 1, max_block_ms >= 0"
            )
        idempotent = enable_idempotence and acks_value != 0
        if idempotent and max_in_flight > MAX_IDEMPOTENT_IN_FLIGHT:
            raise InvalidArgumentError(
                f"an idempotent producer needs max_in_flight <= {MAX_IDEMPOTENT_IN_FLIGHT}"
            )
        return cls(
            bootstrap=tuple(parse_bootstrap(bootstrap)),
            acks=acks_value,
            linger_ms=linger_ms,
            batch_size=batch_size,
            compression=codec,
            partitioner=partitioner,
            retries=retries,
            retry_backoff_ms=retry_backoff_ms,
            enable_idempotence=idempotent,
            max_in_flight=max_in_flight,
            request_timeout_ms=request_timeout_ms,
            buffer_memory=buffer_memory,
            max_block_ms=max_block_ms,
            auto_create_topics=auto_create_topics,
        )


def normalize_headers(headers: HeadersArg) -> Sequence[tuple[str, bytes | None]]:
    """Headers as the codec takes them: (str key, bytes-or-None value) pairs."""
    if not headers:
        return ()
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: list[tuple[str, bytes | None]] = []
    for name, value in items:
        if not isinstance(name, str):
            raise RecordTypeError(f"a header key must be str, got {type(name).__name__}")
        out.append((name, as_bytes(value, "header value")))
    return out


def as_bytes(data: object, what: str) -> bytes | None:
    """``data`` as bytes (bytes-like is copied); None stays None; anything else:
    ``RecordTypeError`` (a ``TypeError``) naming the serializer option that would fit."""
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    kind = type(data).__name__
    if what in ("key", "value"):
        example = "str.encode" if isinstance(data, str) else "lambda v: json.dumps(v).encode()"
        hint = (
            f"; encode it, or make the producer with {what}_serializer= "
            f"(e.g. {what}_serializer={example})"
        )
    else:
        hint = "; encode it" if isinstance(data, str) else ""
    raise RecordTypeError(f"a record {what} must be bytes or None, got {kind}{hint}")
