"""The names a Kafka user brings: ``bootstrap_servers=`` beside the positional address,
and a confluent-kafka style config dict (``Producer({"bootstrap.servers": ...})``)
translated to the client's keyword options.

Pure functions over plain values: ``resolve(kind, first, bootstrap_servers, options)``
takes what a constructor was given and returns the bootstrap address and the options,
with the dict's keys mapped (``acks`` -> ``acks``, ``linger.ms`` -> ``linger_ms``, ...)
and their values converted from the strings confluent-kafka accepts (``"5"``,
``"true"``). A key that is not known is refused naming it (and the nearest known key);
a key that is known but not supported here (``transactional.id``, SASL, TLS,
``isolation.level=read_committed``) is refused saying why. Everything is refused with
``ClientConfigError``, a ``ValueError``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sentinel.client.errors import ClientConfigError

__all__ = ["ADMIN_KEYS", "CONSUMER_KEYS", "DEFAULT_BOOTSTRAP", "PRODUCER_KEYS", "resolve"]

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"

Convert = Callable[[str, object], object]


def _int(key: str, value: object) -> int:
    if isinstance(value, bool):
        raise ClientConfigError(f"config {key!r} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ClientConfigError(f"config {key!r} must be an integer, got {value!r}")


def _float(key: str, value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ClientConfigError(f"config {key!r} must be a number, got {value!r}")


def _bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ClientConfigError(f"config {key!r} must be true or false, got {value!r}")


def _str(key: str, value: object) -> str:
    if isinstance(value, str):
        return value
    raise ClientConfigError(f"config {key!r} must be a string, got {value!r}")


def _servers(key: str, value: object) -> object:
    if isinstance(value, str) or (
        isinstance(value, Sequence) and all(isinstance(v, str) for v in value)
    ):
        return value
    raise ClientConfigError(f"config {key!r} must be 'host:port,...' or a list, got {value!r}")


def _callable(key: str, value: object) -> object:
    if callable(value):
        return value
    raise ClientConfigError(f"config {key!r} must be a callable, got {value!r}")


def _acks(key: str, value: object) -> object:
    text = str(value).lower()
    if text in ("all", "-1"):
        return "all"
    if text in ("0", "1"):
        return int(text)
    raise ClientConfigError(f"config {key!r} must be 0, 1 or 'all', got {value!r}")


def _choice(mapping: Mapping[str, object]) -> Convert:
    def convert(key: str, value: object) -> object:
        text = str(value).lower()
        if text in mapping:
            return mapping[text]
        raise ClientConfigError(
            f"config {key!r} must be one of {', '.join(sorted(mapping))}, got {value!r}"
        )

    return convert


_COMPRESSION = _choice({c: c for c in ("none", "gzip", "snappy", "lz4", "zstd")})
_PARTITIONER = _choice({"murmur2": "murmur2", "murmur2_random": "murmur2",
                        "round_robin": "round_robin"})  # fmt: skip
# librdkafka's synonyms: smallest/beginning, largest/end; "error" is Kafka's "none"
_OFFSET_RESET = _choice({"earliest": "earliest", "smallest": "earliest",
                         "beginning": "earliest", "latest": "latest", "largest": "latest",
                         "end": "latest", "none": "none", "error": "none"})  # fmt: skip
_ASSIGNOR = _choice({"roundrobin": "roundrobin", "range": "range"})
_ISOLATION = _choice({"read_uncommitted": None})  # read_committed: see _ONLY_VALUE

_COMMON: dict[str, tuple[str, Convert]] = {
    "bootstrap.servers": ("bootstrap_servers", _servers),
    "metadata.broker.list": ("bootstrap_servers", _servers),
    "client.id": ("client_id", _str),
    "request.timeout.ms": ("request_timeout_ms", _int),
    "retry.backoff.ms": ("retry_backoff_ms", _float),
}

PRODUCER_KEYS: dict[str, tuple[str, Convert]] = {
    **_COMMON,
    "acks": ("acks", _acks),
    "request.required.acks": ("acks", _acks),
    "linger.ms": ("linger_ms", _float),
    "queue.buffering.max.ms": ("linger_ms", _float),
    "batch.size": ("batch_size", _int),
    "compression.type": ("compression", _COMPRESSION),
    "compression.codec": ("compression", _COMPRESSION),
    "enable.idempotence": ("enable_idempotence", _bool),
    "retries": ("retries", _int),
    "message.send.max.retries": ("retries", _int),
    "max.in.flight.requests.per.connection": ("max_in_flight", _int),
    "max.in.flight": ("max_in_flight", _int),
    "buffer.memory": ("buffer_memory", _int),
    "max.block.ms": ("max_block_ms", _int),
    "partitioner": ("partitioner", _PARTITIONER),
    "allow.auto.create.topics": ("auto_create_topics", _bool),
    "key.serializer": ("key_serializer", _callable),
    "value.serializer": ("value_serializer", _callable),
}

CONSUMER_KEYS: dict[str, tuple[str, Convert]] = {
    **_COMMON,
    "group.id": ("group_id", _str),
    "auto.offset.reset": ("auto_offset_reset", _OFFSET_RESET),
    "enable.auto.commit": ("enable_auto_commit", _bool),
    "auto.commit.interval.ms": ("auto_commit_interval_ms", _int),
    "session.timeout.ms": ("session_timeout_ms", _int),
    "heartbeat.interval.ms": ("heartbeat_interval_ms", _int),
    "max.poll.interval.ms": ("rebalance_timeout_ms", _int),  # Kafka's rebalance timeout
    "max.poll.records": ("max_poll_records", _int),
    # one Fetch reads one partition: both limits are the same one here
    "fetch.max.bytes": ("fetch_max_bytes", _int),
    "max.partition.fetch.bytes": ("fetch_max_bytes", _int),
    "fetch.max.wait.ms": ("fetch_max_wait_ms", _int),
    "fetch.wait.max.ms": ("fetch_max_wait_ms", _int),
    "partition.assignment.strategy": ("assignor", _ASSIGNOR),
    "isolation.level": ("", _ISOLATION),
    "allow.auto.create.topics": ("allow_auto_create_topics", _bool),
    "group.instance.id": ("group_instance_id", _str),
    "key.deserializer": ("key_deserializer", _callable),
    "value.deserializer": ("value_deserializer", _callable),
}

ADMIN_KEYS: dict[str, tuple[str, Convert]] = {
    "bootstrap.servers": _COMMON["bootstrap.servers"],
    "metadata.broker.list": _COMMON["metadata.broker.list"],
    "client.id": _COMMON["client.id"],
    "request.timeout.ms": _COMMON["request.timeout.ms"],
}

_UNSUPPORTED = {
    "transactional.id": "transactions are not supported",
    "transaction.timeout.ms": "transactions are not supported",
    "delivery.timeout.ms": "delivery is bounded by retries, retry.backoff.ms and "
    "request.timeout.ms instead",
    "message.timeout.ms": "delivery is bounded by retries, retry.backoff.ms and "
    "request.timeout.ms instead",
    "enable.auto.offset.store": "positions are stored as records are returned",
    "sasl.mechanism": "the client speaks plaintext gRPC only (no SASL)",
    "sasl.mechanisms": "the client speaks plaintext gRPC only (no SASL)",
    "sasl.username": "the client speaks plaintext gRPC only (no SASL)",
    "sasl.password": "the client speaks plaintext gRPC only (no SASL)",
}
_UNSUPPORTED_PREFIXES = {"ssl.": "the client speaks plaintext gRPC only (no TLS)",
                         "sasl.": "the client speaks plaintext gRPC only (no SASL)"}  # fmt: skip
# keys accepted with one value only (what the client does anyway)
_ONLY_VALUE = {
    "security.protocol": ("plaintext", "the client speaks plaintext gRPC only"),
    "isolation.level": ("read_uncommitted", "transactions are not supported, so "
                        "read_uncommitted is the only level"),
}  # fmt: skip

_KINDS = {"producer": PRODUCER_KEYS, "consumer": CONSUMER_KEYS, "admin": ADMIN_KEYS}


def _unsupported(key: str, value: object) -> str | None:
    """Why ``key = value`` cannot be honoured here, or None if it can."""
    if key in _ONLY_VALUE:
        only, why = _ONLY_VALUE[key]
        return None if str(value).lower() == only else f"only {only!r} is supported: {why}"
    if key in _UNSUPPORTED:
        return _UNSUPPORTED[key]
    for prefix, why in _UNSUPPORTED_PREFIXES.items():
        if key.startswith(prefix):
            return why
    return None


def map_config(kind: str, config: Mapping[str, object]) -> dict[str, object]:
    """A confluent-style dict -> the client's keyword options (``"linger.ms": "5"`` ->
    ``linger_ms=5.0``). Refuses unknown and unsupported keys, all of them at once."""
    known = _KINDS[kind]
    out: dict[str, object] = {}
    origin: dict[str, str] = {}
    unknown: list[str] = []
    problems: list[str] = []
    for key, value in config.items():
        if not isinstance(key, str):
            unknown.append(repr(key))
            continue
        why = _unsupported(key, value)
        if why is not None:
            problems.append(f"{key}={value!r} is not supported: {why}")
            continue
        if key in _ONLY_VALUE and key not in known:
            continue  # e.g. security.protocol=plaintext: what the client does
        if key not in known:
            unknown.append(_with_hint(key, known))
            continue
        name, convert = known[key]
        converted = convert(key, value)
        if not name:
            continue  # accepted, nothing to set (isolation.level=read_uncommitted)
        if name in out and out[name] != converted:
            problems.append(f"{origin[name]!r} and {key!r} both set {name}, differently")
        out[name] = converted
        origin[name] = key
    if unknown:
        problems.insert(0, f"unknown {kind} config key(s): {', '.join(unknown)}")
    if problems:
        raise ClientConfigError("; ".join(problems))
    return out


def _with_hint(key: str, known: Mapping[str, object]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    return f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key)


def resolve(
    kind: str,
    first: object,
    bootstrap_servers: str | Sequence[str] | None,
    options: dict[str, Any],
    defaults: Mapping[str, Any],
) -> tuple[str | Sequence[str], dict[str, Any]]:
    """The bootstrap address and the options a constructor was given.

    ``first`` is the positional argument: an address (``"h:p,h2:p2"`` or a list), a
    confluent-style config dict, or None. ``options`` are the keyword options as
    passed, ``defaults`` their defaults: a dict key that sets an option also passed as
    a keyword with another value is refused, so neither silently wins.
    """
    addresses: list[tuple[str, str | Sequence[str]]] = []
    merged = dict(options)
    if isinstance(first, Mapping):
        mapped = map_config(kind, first)
        servers = mapped.pop("bootstrap_servers", None)
        if servers is not None:
            addresses.append(("'bootstrap.servers'", servers))  # type: ignore[arg-type]
        for name, value in mapped.items():
            given = options.get(name, defaults.get(name))
            if name in options and given != defaults.get(name) and given != value:
                raise ClientConfigError(
                    f"{name} is set twice: {value!r} in the config dict, {given!r} as {name}="
                )
            merged[name] = value
    elif first is not None:
        if not isinstance(first, str | Sequence):
            raise ClientConfigError(
                f"the {kind}'s first argument is a bootstrap address ('host:port', a list "
                f"of them) or a config dict, got {type(first).__name__}"
            )
        addresses.append(("the bootstrap address", first))
    if bootstrap_servers is not None:
        addresses.append(("bootstrap_servers=", bootstrap_servers))
    if len(addresses) == 2 and _norm(addresses[0][1]) != _norm(addresses[1][1]):
        raise ClientConfigError(
            f"two bootstrap addresses: {addresses[0][1]!r} as {addresses[0][0]} and "
            f"{addresses[1][1]!r} as {addresses[1][0]}; give one"
        )
    return (addresses[0][1] if addresses else DEFAULT_BOOTSTRAP), merged


def _norm(servers: str | Sequence[str]) -> list[str]:
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    return [s.strip() for s in items if s.strip()]
