"""Moved to ``sentinel.log.config`` (the log owns its topic configuration, as Kafka's
LogConfig lives in storage); this name stays for existing imports."""

from sentinel.log.config import (
    MAX_PARTITIONS,
    MAX_TOPIC_NAME,
    SEVEN_DAYS_MS,
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidTopicError,
    TopicConfig,
    validate_partition_count,
    validate_topic_name,
)

__all__ = [
    "MAX_PARTITIONS",
    "MAX_TOPIC_NAME",
    "SEVEN_DAYS_MS",
    "InvalidConfigError",
    "InvalidPartitionsError",
    "InvalidTopicError",
    "TopicConfig",
    "validate_partition_count",
    "validate_topic_name",
]
