"""Topic names and per-topic configuration, validated as Kafka validates them.

Names: 1 to 249 characters of ``[a-zA-Z0-9._-]``, and neither ``.`` nor ``..``.
Configs use Kafka's keys, so ``kafka-topics --config retention.ms=...`` style maps work
unchanged: ``retention.ms``, ``retention.bytes``, ``max.message.bytes``,
``cleanup.policy`` (``delete`` | ``compact`` | ``compact,delete``),
``message.timestamp.type`` (``CreateTime`` | ``LogAppendTime``), ``segment.ms`` is
accepted and ignored (the LSM has no segments).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from sentinel.errors import CallerError

MAX_TOPIC_NAME = 249
_NAME = re.compile(r"^[a-zA-Z0-9._-]+$")
SEVEN_DAYS_MS = 7 * 24 * 3600 * 1000
MAX_PARTITIONS = 10_000


class InvalidTopicError(CallerError):
    """The topic name breaks Kafka's naming rules."""

    kafka_code = 17
    code_name = "INVALID_TOPIC"


class InvalidConfigError(CallerError):
    """A topic config key is unknown or its value is out of range."""

    kafka_code = 40
    code_name = "INVALID_CONFIG"


class InvalidPartitionsError(CallerError):
    """A partition count is out of range."""

    kafka_code = 37
    code_name = "INVALID_PARTITIONS"


def validate_topic_name(name: str) -> str:
    if not name:
        raise InvalidTopicError("topic name is empty")
    if len(name) > MAX_TOPIC_NAME:
        raise InvalidTopicError(
            f"topic name is {len(name)} characters; the limit is {MAX_TOPIC_NAME}"
        )
    if name in (".", ".."):
        raise InvalidTopicError(f"topic name {name!r} is not allowed")
    if not _NAME.match(name):
        raise InvalidTopicError(f"topic name {name!r} has characters outside [a-zA-Z0-9._-]")
    return name


def validate_partition_count(count: int) -> int:
    if not 1 <= count <= MAX_PARTITIONS:
        raise InvalidPartitionsError(f"partition count {count} is outside 1..{MAX_PARTITIONS}")
    return count


@dataclass(frozen=True, slots=True)
class TopicConfig:
    retention_ms: int = SEVEN_DAYS_MS  # -1: keep forever
    retention_bytes: int = -1  # per partition; -1: unlimited
    max_message_bytes: int = 1024 * 1024
    cleanup_delete: bool = True
    cleanup_compact: bool = False
    log_append_time: bool = False

    @property
    def cleanup_policy(self) -> str:
        parts = [
            p
            for p, on in (("compact", self.cleanup_compact), ("delete", self.cleanup_delete))
            if on
        ]
        return ",".join(parts)

    def to_map(self) -> dict[str, str]:
        return {
            "retention.ms": str(self.retention_ms),
            "retention.bytes": str(self.retention_bytes),
            "max.message.bytes": str(self.max_message_bytes),
            "cleanup.policy": self.cleanup_policy,
            "message.timestamp.type": "LogAppendTime" if self.log_append_time else "CreateTime",
        }

    def with_overrides(self, configs: Mapping[str, str]) -> TopicConfig:
        """A copy with Kafka-style ``configs`` applied; unknown keys or bad values raise."""
        result = self
        for key, raw in configs.items():
            result = _apply(result, key, raw)
        return result


def _int(key: str, raw: str, minimum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise InvalidConfigError(f"{key}={raw!r} is not an integer") from None
    if value < minimum:
        raise InvalidConfigError(f"{key}={value} is below the minimum {minimum}")
    return value


def _apply(config: TopicConfig, key: str, raw: str) -> TopicConfig:
    if key == "retention.ms":
        return replace(config, retention_ms=_int(key, raw, -1))
    if key == "retention.bytes":
        return replace(config, retention_bytes=_int(key, raw, -1))
    if key == "max.message.bytes":
        return replace(config, max_message_bytes=max(1, _int(key, raw, 1)))
    if key == "cleanup.policy":
        policies = {p.strip() for p in raw.split(",") if p.strip()}
        if not policies or not policies <= {"delete", "compact"}:
            raise InvalidConfigError(
                f"cleanup.policy={raw!r}: expected delete, compact or compact,delete"
            )
        return replace(
            config, cleanup_delete="delete" in policies, cleanup_compact="compact" in policies
        )
    if key == "message.timestamp.type":
        if raw not in ("CreateTime", "LogAppendTime"):
            raise InvalidConfigError(
                f"message.timestamp.type={raw!r}: expected CreateTime or LogAppendTime"
            )
        return replace(config, log_append_time=raw == "LogAppendTime")
    if key in ("segment.ms", "segment.bytes", "min.insync.replicas"):
        return config
    raise InvalidConfigError(f"unknown topic config {key!r}")
