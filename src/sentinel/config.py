"""The broker's typed configuration, loaded from flags, a TOML file and the environment.

Every setting has one name (``SETTINGS``): the flag ``--data``, the TOML key ``data``
and the environment variable ``SENTINEL_DATA`` (dashes become underscores, upper case).
The dataclass field behind it may be named differently (``data_dir``); operators never
see field names.

Precedence: command-line flag > environment variable > TOML file (``--config``) > default.

The server owns the ``SENTINEL_`` prefix of the environment: a variable under it that
is no server setting is refused (a misspelled ``SENTINEL_DATA_DIR`` would otherwise be
silently ignored), except the variables of Sentinel's other tools (``OTHER_TOOLS_ENV``,
e.g. ``SENTINEL_BROKER`` of ``sentinel-cli``).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from sentinel.errors import InvalidArgumentError
from sentinel.storage.wal import SyncMode


class ConfigError(InvalidArgumentError):
    """A configuration value is missing, unknown or out of range."""


_MAX_HTTP2_SETTING = 2**31 - 1
"""The largest value gRPC takes for an HTTP/2 setting (a C int)."""
MAX_KAFKA_IN_FLIGHT = 1024
"""The most ``kafka_max_in_flight`` may be: each unanswered request is a decoded value the
broker holds (its bytes are bounded by ``max_request_bytes_in_flight`` anyway)."""


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 9092
    kafka_host: str = ""  # empty: --host
    kafka_port: int = 9093  # the Kafka protocol listener; 0: any free port
    data_dir: str = "./data"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9100  # 0: any free port
    metrics_enabled: bool = True
    node_id: int = 0
    advertised_host: str = ""  # empty: the host the server listens on
    # The cluster: every broker's id@host:port for broker-to-broker traffic; empty: one
    # broker alone, no replication.
    peers: str = ""
    cluster_id: str = ""  # empty: derived from --peers
    peer_listen: str = ""  # host:port this broker listens on for peers; empty: its --peers entry
    raft_tick_ms: int = 100  # the one Raft timer of a broker (election after 10-20 ticks)
    offsets_topic_partitions: int = 10  # of __consumer_offsets (Kafka: 50), at its creation
    auto_create_topics: bool = True
    default_partitions: int = 1
    default_replication_factor: int = 1
    sync_mode: str = "always"  # always | interval | none
    sync_interval_ms: int = 100
    memtable_mb: int = 16  # per partition
    # All partitions' memtables together (write buffer manager). Past it large values
    # are let go to their WAL, one fsync of that partition's WAL each: the smaller the
    # budget's share per busy partition, the more of those fsyncs (1,000 partitions at
    # ~130 MB/s: 64 MiB made ~6,700 per 1.2 GB, 128 MiB ~2,200, and ran ~10 % faster;
    # 256 MiB no faster than 128: docs/benchmarks.md, "Fifteenth session").
    memtable_budget_mb: int = 128
    block_cache_mb: int = 64  # one block cache shared by all partitions
    storage_threads: int = 2  # the worker pool: flushes, compactions (all partitions)
    sync_threads: int = 16  # fsyncs of one sync wave issued in parallel
    # Sync always: acks wait for one broker-wide journal's fsync wave, the partitions'
    # own WALs are synced in the background (storage/journal).
    journal: bool = True
    max_open_partitions: int = 0  # partitions with open files at once; 0: from RLIMIT_NOFILE
    # Partitions under production (appended to twice within 2 s) kept open beyond
    # max_open_partitions, up to this; 0: from RLIMIT_NOFILE if max_open_partitions is
    # derived too, else max_open_partitions (a strict bound) (log/open_files).
    max_active_partitions: int = 0
    max_request_bytes: int = 64 * 1024 * 1024  # one request (a produce) at most
    max_request_bytes_in_flight: int = 128 * 1024 * 1024  # queued.max.request.bytes
    # HTTP/2 streams (gRPC calls) one gRPC connection may have open at once (SETTINGS
    # MAX_CONCURRENT_STREAMS); a client queues the rest itself (server/app).
    grpc_max_concurrent_streams: int = 256
    # gRPC calls waiting, all connections together, for the server to take them (gRPC's
    # core; its default, 1,000, with random drops up to 3,000, dropped calls with a bare
    # CANCELLED once four connections flooded at the streams bound). Past it the core
    # refuses new calls so; each waiting call holds up to a 64 KiB stream window of its
    # message, outside --max-request-bytes-in-flight (server/app).
    grpc_max_pending_calls: int = 4096
    # A gRPC call's request message must arrive within this once its headers did; a
    # Produce's unread message holds --max-request-bytes for the hold, then 64 KiB
    # (server/grpc_admission).
    grpc_request_timeout_ms: int = 30_000
    grpc_request_hold_ms: int = 1_000
    # A Kafka frame's body must keep arriving: a client from which no byte of it came for
    # this long (the broker not holding it back) is disconnected.
    kafka_frame_timeout_ms: int = 30_000
    # A /metrics connection's request head must arrive within this of its opening (or of
    # its last answer, kept alive), and its client must read an answer within this of
    # its writing, else it is closed (server/metrics_http).
    metrics_read_timeout_ms: int = 10_000
    # Requests one Kafka connection may have unanswered; past it the broker stops
    # reading that connection. 64: a producer's acks=all requests to many partitions
    # share the journal's fsync waves (1,000 partitions: +10 % over 16); each holds its
    # bytes in --max-request-bytes-in-flight meanwhile (server/kafka/listener).
    kafka_max_in_flight: int = 64
    # Kafka connections open at once; one more is accepted and closed. 0: derived from
    # RLIMIT_NOFILE (half of it, at most 10,000; server/kafka/listener).
    max_connections: int = 0
    # A Kafka connection with nothing read or written for this long and no handler
    # running (unless its answers do not drain) is closed (Kafka's connections.max.idle.ms).
    connections_max_idle_ms: int = 600_000
    max_partitions: int = 0  # all topics together; 0: derived from RLIMIT_NOFILE
    max_auto_create_per_request: int = 10  # topics one produce / metadata / join may create
    retention_check_interval_s: float = 30.0
    group_initial_rebalance_delay_ms: int = 0
    group_min_session_timeout_ms: int = 6000
    group_max_session_timeout_ms: int = 1_800_000
    shutdown_grace_s: float = 8.0
    log_level: str = "info"
    log_format: str = "text"  # text | json (one JSON object per line)
    slow_fsync_ms: float = 1000.0  # a WAL fsync at least this long is logged
    # Start with a damaged partition offline (KAFKA_STORAGE_ERROR) instead of refusing.
    skip_damaged: bool = False

    def __post_init__(self) -> None:
        ports = (self.port, self.metrics_port, self.kafka_port)
        if not all(0 <= port <= 65535 for port in ports):
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
        if self.max_active_partitions < 0:
            raise ConfigError("max_active_partitions must be >= 0")
        if self.sync_interval_ms < 1:
            raise ConfigError("sync_interval_ms must be at least 1")
        if self.max_request_bytes < 1024:
            raise ConfigError("max_request_bytes must be at least 1024")
        if self.max_request_bytes_in_flight < self.max_request_bytes:
            raise ConfigError(
                f"max_request_bytes_in_flight ({self.max_request_bytes_in_flight}) must be at "
                f"least max_request_bytes ({self.max_request_bytes})"
            )
        if not 1 <= self.grpc_max_concurrent_streams <= _MAX_HTTP2_SETTING:
            raise ConfigError(
                f"grpc-max-concurrent-streams={self.grpc_max_concurrent_streams}: expected"
                f" 1..{_MAX_HTTP2_SETTING}"
            )
        if not 1 <= self.grpc_max_pending_calls <= _MAX_HTTP2_SETTING:
            raise ConfigError(
                f"grpc-max-pending-calls={self.grpc_max_pending_calls}: expected"
                f" 1..{_MAX_HTTP2_SETTING}"
            )
        if self.grpc_request_timeout_ms < 1:
            raise ConfigError(
                f"grpc-request-timeout-ms={self.grpc_request_timeout_ms}: expected at least 1"
            )
        if self.grpc_request_hold_ms < 1:
            raise ConfigError(
                f"grpc-request-hold-ms={self.grpc_request_hold_ms}: expected at least 1"
            )
        if self.grpc_request_hold_ms > self.grpc_request_timeout_ms:
            raise ConfigError(
                f"grpc-request-hold-ms ({self.grpc_request_hold_ms}) must not exceed"
                f" grpc-request-timeout-ms ({self.grpc_request_timeout_ms})"
            )
        if self.metrics_read_timeout_ms < 1:
            raise ConfigError("metrics_read_timeout_ms must be at least 1")
        if self.kafka_frame_timeout_ms < 1:
            raise ConfigError("kafka_frame_timeout_ms must be at least 1")
        if not 1 <= self.kafka_max_in_flight <= MAX_KAFKA_IN_FLIGHT:
            raise ConfigError(
                f"kafka-max-in-flight={self.kafka_max_in_flight}: expected"
                f" 1..{MAX_KAFKA_IN_FLIGHT}"
            )
        if self.max_connections < 0:
            raise ConfigError("max_connections must be >= 0")
        if self.connections_max_idle_ms < 1:
            raise ConfigError("connections_max_idle_ms must be at least 1")
        if self.max_partitions < 0 or self.max_auto_create_per_request < 0:
            raise ConfigError("max_partitions and max_auto_create_per_request must be >= 0")
        if not 10 <= self.raft_tick_ms <= 10_000:
            raise ConfigError("raft_tick_ms must be in 10..10000")
        if not 1 <= self.offsets_topic_partitions <= 1000:
            raise ConfigError("offsets_topic_partitions must be in 1..1000")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format={self.log_format!r}: expected text or json")
        if self.slow_fsync_ms < 0:
            raise ConfigError("slow_fsync_ms must be >= 0")
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

    @property
    def kafka_listen_host(self) -> str:
        return self.kafka_host or self.host

    @property
    def kafka_advertised(self) -> str:
        """The host Kafka clients are told to connect to (Metadata, DescribeCluster)."""
        return self.advertised_host or self.kafka_listen_host


ENV_PREFIX = "SENTINEL_"
#: Variables under ``ENV_PREFIX`` that belong to Sentinel's other tools: not refused.
OTHER_TOOLS_ENV = frozenset({"SENTINEL_BROKER"})
#: Settings whose name differs from their field (the field names were once exposed).
_NAME_OF_FIELD = {"data_dir": "data", "sync_mode": "sync", "metrics_enabled": "metrics"}


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: ``name`` is the flag (``--name``) and the TOML key."""

    name: str
    field: str
    kind: Any

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper().replace("-", "_")

    @property
    def flag(self) -> str:
        return f"--{self.name}"


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(_NAME_OF_FIELD.get(f.name, f.name.replace("_", "-")), f.name, f.type)
    for f in fields(BrokerConfig)
)
_BY_NAME = {s.name: s for s in SETTINGS}
_BY_FIELD = {s.field: s for s in SETTINGS}
_BY_ENV = {s.env: s for s in SETTINGS}


def setting_of_field(field: str) -> Setting:
    """The setting stored in ``BrokerConfig.<field>``."""
    return _BY_FIELD[field]


_FORMER_NAMES = {f.replace("_", "-"): n for f, n in _NAME_OF_FIELD.items()}


def _suggest(name: str) -> Setting | None:
    """The setting a former or misspelled name (``data-dir``) probably meant."""
    if name in _FORMER_NAMES:
        return _BY_NAME[_FORMER_NAMES[name]]
    close = difflib.get_close_matches(name, sorted(_BY_NAME), n=1)
    return _BY_NAME[close[0]] if close else None


def check_environment(env: Mapping[str, str]) -> None:
    """Refuse a ``SENTINEL_*`` variable that is no server setting (nor another tool's)."""
    for key in sorted(env):
        if key.startswith(ENV_PREFIX) and key not in _BY_ENV and key not in OTHER_TOOLS_ENV:
            meant = _suggest(key.removeprefix(ENV_PREFIX).lower().replace("_", "-"))
            hint = f" (did you mean {meant.env}?)" if meant else ""
            raise ConfigError(
                f"unknown environment variable {key}{hint}: {ENV_PREFIX}* variables are"
                " sentinel-server settings (sentinel-server --help lists them)"
            )


def _toml_setting(key: str, config_file: str) -> Setting:
    name = key.replace("_", "-")
    found = _BY_NAME.get(name)
    if found is None:
        meant = _suggest(name)
        hint = f" (did you mean {meant.name!r}?)" if meant else ""
        raise ConfigError(f"unknown setting {key!r} in {config_file}{hint}")
    return found


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
    """Merge the sources; ``flags`` (keyed by field) holds only the flags the user gave."""
    known = {f.name: f.type for f in fields(BrokerConfig)}
    env = os.environ if environ is None else environ
    check_environment(env)
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
            setting = _toml_setting(key, config_file)
            values[setting.field] = _coerce(setting.name, setting.kind, raw)
    for setting in SETTINGS:
        raw_env = env.get(setting.env)
        if raw_env is not None:
            values[setting.field] = _coerce(setting.env, setting.kind, raw_env)
    for name, raw in (flags or {}).items():
        if raw is None:
            continue
        if name not in known:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _coerce(_BY_FIELD[name].flag, known[name], raw)
    return replace(BrokerConfig(), **values)
