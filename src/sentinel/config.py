"""The broker's typed configuration, loaded from flags, a TOML file and the environment.

Precedence: command-line flag > environment variable (``SENTINEL_<NAME>``) > TOML file
(``--config``; keys are the field names below) > default.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from sentinel.errors import InvalidArgumentError
from sentinel.storage.wal import SyncMode


class ConfigError(InvalidArgumentError):
    """A configuration value is missing, unknown or out of range."""


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 9092
    data_dir: str = "./data"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9100  # 0: any free port
    metrics_enabled: bool = True
    node_id: int = 0
    advertised_host: str = ""  # empty: the host the server listens on
    auto_create_topics: bool = True
    default_partitions: int = 1
    default_replication_factor: int = 1
    sync_mode: str = "always"  # always | interval | none
    sync_interval_ms: int = 100
    memtable_mb: int = 16  # per partition
    memtable_budget_mb: int = 256  # all partitions' memtables together (write buffer manager)
    block_cache_mb: int = 64  # one block cache shared by all partitions
    storage_threads: int = 2  # the worker pool: flushes, compactions (all partitions)
    sync_threads: int = 16  # fsyncs of one sync wave issued in parallel
    max_open_partitions: int = 0  # partitions with open files at once; 0: from RLIMIT_NOFILE
    max_request_bytes: int = 64 * 1024 * 1024  # one request (a produce) at most
    max_request_bytes_in_flight: int = 128 * 1024 * 1024  # queued.max.request.bytes
    max_partitions: int = 0  # all topics together; 0: derived from RLIMIT_NOFILE
    max_auto_create_per_request: int = 10  # topics one produce / metadata / join may create
    retention_check_interval_s: float = 30.0
    group_initial_rebalance_delay_ms: int = 0
    group_min_session_timeout_ms: int = 6000
    group_max_session_timeout_ms: int = 1_800_000
    shutdown_grace_s: float = 8.0
    log_level: str = "info"
    # Start with a damaged partition offline (KAFKA_STORAGE_ERROR) instead of refusing.
    skip_damaged: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535 or not 0 <= self.metrics_port <= 65535:
            raise ConfigError("ports must be in 0..65535")
        if self.sync_mode not in {m.value for m in SyncMode}:
            raise ConfigError(f"sync_mode={self.sync_mode!r}: expected always, interval or none")
        if self.default_partitions < 1:
            raise ConfigError("default_partitions must be at least 1")
        if self.memtable_mb < 1:
            raise ConfigError("memtable_mb must be at least 1")
        if self.memtable_budget_mb < 1 or self.block_cache_mb < 0:
            raise ConfigError("memtable_budget_mb must be >= 1 and block_cache_mb >= 0")
        if self.storage_threads < 1 or self.sync_threads < 1:
            raise ConfigError("storage_threads and sync_threads must be at least 1")
        if self.max_open_partitions < 0:
            raise ConfigError("max_open_partitions must be >= 0")
        if self.sync_interval_ms < 1:
            raise ConfigError("sync_interval_ms must be at least 1")
        if self.max_request_bytes < 1024:
            raise ConfigError("max_request_bytes must be at least 1024")
        if self.max_request_bytes_in_flight < self.max_request_bytes:
            raise ConfigError(
                f"max_request_bytes_in_flight ({self.max_request_bytes_in_flight}) must be at "
                f"least max_request_bytes ({self.max_request_bytes})"
            )
        if self.max_partitions < 0 or self.max_auto_create_per_request < 0:
            raise ConfigError("max_partitions and max_auto_create_per_request must be >= 0")
        if not 0 < self.group_min_session_timeout_ms <= self.group_max_session_timeout_ms:
            raise ConfigError(
                "need 0 < group_min_session_timeout_ms <= group_max_session_timeout_ms"
            )

    @property
    def wal_sync_mode(self) -> SyncMode:
        return SyncMode(self.sync_mode)

    @property
    def advertised(self) -> str:
        return self.advertised_host or self.host


def _coerce(name: str, kind: Any, raw: Any) -> Any:
    try:
        if kind in (bool, "bool"):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
        return str(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind}") from None


def load_config(
    flags: Mapping[str, Any] | None = None,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> BrokerConfig:
    """Merge the sources; ``flags`` holds only the flags the user actually gave."""
    known = {f.name: f.type for f in fields(BrokerConfig)}
    values: dict[str, Any] = {}
    if config_file:
        try:
            with open(config_file, "rb") as handle:
                table = tomllib.load(handle)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
        for key, raw in table.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(f"unknown setting {key!r} in {config_file}")
            values[name] = _coerce(name, known[name], raw)
    env = os.environ if environ is None else environ
    for name, kind in known.items():
        raw_env = env.get(f"SENTINEL_{name.upper()}")
        if raw_env is not None:
            values[name] = _coerce(name, kind, raw_env)
    for name, raw in (flags or {}).items():
        if raw is None:
            continue
        if name not in known:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _coerce(name, known[name], raw)
    return replace(BrokerConfig(), **values)
