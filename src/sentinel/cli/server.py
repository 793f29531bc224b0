"""``sentinel-server``: run one broker.

    sentinel-server --port 9092 --data ./data --metrics-port 9100
    sentinel-server --data ./data --verify   # scrub every stored file, start nothing

Damaged or missing stored data stops the start with one line naming the file (see
README, "When the broker refuses to start"); ``--skip-damaged`` starts with the damaged
partitions offline instead.

Every setting has one name: the flag ``--data``, the environment variable
``SENTINEL_DATA`` and the TOML key ``data`` (``--config broker.toml``); ``--help`` shows
each one's variable. Flags win over the environment, the environment over the file. A
``SENTINEL_*`` variable that is no setting is refused (``SENTINEL_BROKER``, the CLI's, is
let through).
"""

from __future__ import annotations

import asyncio
import errno
import faulthandler
import signal
import sys
from typing import Any

import click

import sentinel
from sentinel.broker.limits import raise_open_files_limit
from sentinel.config import BrokerConfig, load_config, setting_of_field
from sentinel.errors import DamagedDataError, SentinelError
from sentinel.fs import OsFS
from sentinel.server.app import SentinelApp
from sentinel.server.logs import configure_logging

_DEFAULTS = BrokerConfig()


def _run(config: BrokerConfig) -> None:
    app = SentinelApp(config)
    try:
        import uvloop
    except ImportError:  # uvloop is optional (not on every platform)
        asyncio.run(app.run_until_signalled())
    else:
        uvloop.run(app.run_until_signalled())


def refusal_line(exc: DamagedDataError) -> str:
    """The one line an operator reads when the start is refused for damaged data."""
    detail = " ".join(str(exc).split())  # one line, whatever the cause said
    if exc.advice:
        advice = exc.advice
    elif exc.quarantinable:
        advice = (
            "start with --skip-damaged to run with that partition offline, "
            "or restore the file (sentinel-server --verify lists every damaged file)"
        )
    else:
        advice = "the meta store cannot be skipped: restore the data directory from a backup"
    return f"data damaged: {detail}; {advice}"


def _verify(data_dir: str) -> int:
    from sentinel.broker.verify import verify_data_dir

    report = verify_data_dir(OsFS(), data_dir)
    for damage in report.damaged:
        click.echo(f"DAMAGED {damage.path}: {damage.detail}")
    for note in report.notes:
        click.echo(f"note {note.path}: {note.detail}")
    state = "clean" if not report.damaged else f"{len(report.damaged)} damaged"
    click.echo(f"verified {report.files} files in {data_dir}: {state}")
    return 1 if report.damaged else 0


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(sentinel.__version__, "--version", prog_name="sentinel-server")
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), help="TOML file of settings."
)
@click.option("--host", default=None, help=f"Address to listen on. [default: {_DEFAULTS.host}]")
@click.option(
    "--port",
    type=int,
    default=None,
    help=f"gRPC port (0: any free port). [default: {_DEFAULTS.port}]",
)
@click.option(
    "--kafka-host",
    default=None,
    help="Address of the Kafka protocol listener. [default: --host]",
)
@click.option(
    "--kafka-port",
    type=int,
    default=None,
    help="Kafka protocol port, for Kafka clients (0: any free port)."
    f" [default: {_DEFAULTS.kafka_port}]",
)
@click.option(
    "--data", "data_dir", default=None, help=f"Data directory. [default: {_DEFAULTS.data_dir}]"
)
@click.option(
    "--metrics-host", default=None, help=f"Address of /metrics. [default: {_DEFAULTS.metrics_host}]"
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help=f"Port of /metrics (0: any free port). [default: {_DEFAULTS.metrics_port}]",
)
@click.option(
    "--metrics/--no-metrics",
    "metrics_enabled",
    default=None,
    help="Serve Prometheus metrics at /metrics. [default: on]",
)
@click.option(
    "--metrics-read-timeout-ms",
    type=int,
    default=None,
    help="A /metrics connection whose request head has not arrived this long after it"
    " opened (or after its last answer), or whose answer is not read this long, is closed."
    f" [default: {_DEFAULTS.metrics_read_timeout_ms}]",
)
@click.option(
    "--node-id", type=int, default=None, help=f"This broker's id. [default: {_DEFAULTS.node_id}]"
)
@click.option(
    "--advertised-host", default=None, help="Host clients are told to connect to. [default: --host]"
)
@click.option(
    "--kafka-frame-timeout-ms",
    type=int,
    default=None,
    help="A Kafka request's body must keep arriving: a client from which no byte of it"
    " came for this long is disconnected."
    f" [default: {_DEFAULTS.kafka_frame_timeout_ms}]",
)
@click.option(
    "--kafka-max-in-flight",
    type=int,
    default=None,
    help="Requests one Kafka connection may have unanswered; past it the broker stops"
    " reading that connection until one is answered (1..1024)."
    f" [default: {_DEFAULTS.kafka_max_in_flight}]",
)
@click.option(
    "--max-connections",
    type=int,
    default=None,
    help="Kafka connections open at once; one more is accepted and closed at once."
    " 0: derived from the open-files limit (RLIMIT_NOFILE / 2, at most 10,000)."
    " [default: 0]",
)
@click.option(
    "--connections-max-idle-ms",
    type=int,
    default=None,
    help="A Kafka connection with nothing read or written for this long and no request"
    " being handled (unless it does not read its answers) is"
    f" closed (Kafka's connections.max.idle.ms). [default: {_DEFAULTS.connections_max_idle_ms}]",
)
@click.option(
    "--peers",
    default=None,
    help="Every broker of the cluster as id@host:port (broker-to-broker addresses),"
    " comma-separated, this one included. [default: none: a single broker]",
)
@click.option(
    "--cluster-id",
    default=None,
    help="The cluster's id, kept in the data directory. [default: derived from --peers]",
)
@click.option(
    "--peer-listen",
    default=None,
    help="host:port to listen on for other brokers. [default: this broker's --peers entry]",
)
@click.option(
    "--raft-tick-ms",
    type=int,
    default=None,
    help="Period of the broker's Raft timer; elections start after 10-20 ticks of"
    f" silence. [default: {_DEFAULTS.raft_tick_ms}]",
)
@click.option(
    "--offsets-topic-partitions",
    type=int,
    default=None,
    help="Partitions of the internal topic __consumer_offsets (a cluster's committed"
    " offsets; a group's coordinator leads its partition), fixed when the cluster first"
    f" forms. [default: {_DEFAULTS.offsets_topic_partitions}]",
)
@click.option(
    "--sync",
    "sync_mode",
    type=click.Choice(["always", "interval", "none"]),
    default=None,
    help="WAL fsync policy: always (before the ack, group commit), interval, none."
    f" [default: {_DEFAULTS.sync_mode}]",
)
@click.option(
    "--sync-interval-ms",
    type=int,
    default=None,
    help=f"fsync period for --sync interval. [default: {_DEFAULTS.sync_interval_ms}]",
)
@click.option(
    "--auto-create-topics/--no-auto-create-topics",
    default=None,
    help="Create an unknown topic on a produce, a metadata request that allows it, or a"
    " subscription whose consumer asks. [default: on]",
)
@click.option(
    "--max-auto-create-per-request",
    type=int,
    default=None,
    help="Most topics one request may create implicitly; more: POLICY_VIOLATION."
    f" [default: {_DEFAULTS.max_auto_create_per_request}]",
)
@click.option(
    "--default-replication-factor",
    type=int,
    default=None,
    help="Replication factor of a topic created without one."
    f" [default: {_DEFAULTS.default_replication_factor}]",
)
@click.option(
    "--max-partitions",
    type=int,
    default=None,
    help="Most partitions of all topics together; creation beyond: POLICY_VIOLATION"
    " (recovery opens whatever is on disk). 0: derived from the open-files limit"
    " (RLIMIT_NOFILE, soft raised to hard at start). [default: 0]",
)
@click.option(
    "--default-partitions",
    type=int,
    default=None,
    help=f"Partitions of an auto-created topic. [default: {_DEFAULTS.default_partitions}]",
)
@click.option(
    "--memtable-mb",
    type=int,
    default=None,
    help=f"Memtable size per partition, MiB. [default: {_DEFAULTS.memtable_mb}]",
)
@click.option(
    "--memtable-budget-mb",
    type=int,
    default=None,
    help="Memtables of all partitions together, MiB; past it the largest let their large"
    " values go to their WAL, or are flushed."
    f" [default: {_DEFAULTS.memtable_budget_mb}]",
)
@click.option(
    "--block-cache-mb",
    type=int,
    default=None,
    help=f"One block cache for all partitions, MiB. [default: {_DEFAULTS.block_cache_mb}]",
)
@click.option(
    "--storage-threads",
    type=int,
    default=None,
    help="Worker threads for flushes and compactions of all partitions."
    f" [default: {_DEFAULTS.storage_threads}]",
)
@click.option(
    "--sync-threads",
    type=int,
    default=None,
    help="Threads issuing the fsyncs of one sync wave (all partitions) in parallel."
    f" [default: {_DEFAULTS.sync_threads}]",
)
@click.option(
    "--journal/--no-journal",
    default=None,
    help="With --sync always: copy every append to one broker-wide journal and"
    " acknowledge after its fsync wave (one fsync for all partitions that appended"
    " meanwhile); each partition's own WAL is synced in the background. --no-journal:"
    " each partition's WAL is fsynced for its acks. [default: on]",
)
@click.option(
    "--max-open-partitions",
    type=int,
    default=None,
    help="Partitions whose files are open at once; idle ones beyond are closed and"
    " reopened on demand. 0: derived from the open-files limit (RLIMIT_NOFILE), at most"
    " 256. [default: 0]",
)
@click.option(
    "--max-active-partitions",
    type=int,
    default=None,
    help="Partitions under production (appended to twice within 2 s) kept open beyond"
    " --max-open-partitions, up to this. 0: derived from the open-files limit,"
    " (RLIMIT_NOFILE - reserve) / 2, when --max-open-partitions is derived too; equal"
    " to --max-open-partitions (a strict bound) when that is set. [default: 0]",
)
@click.option(
    "--max-request-bytes",
    type=int,
    default=None,
    help="Largest request accepted (gRPC's receive limit): what one produce may carry."
    f" [default: {_DEFAULTS.max_request_bytes}]",
)
@click.option(
    "--max-request-bytes-in-flight",
    type=int,
    default=None,
    help="Request bytes the broker holds at once (Kafka's queued.max.request.bytes); a"
    " request that does not fit waits up to its deadline (30 s at most), then"
    f" THROTTLING_QUOTA_EXCEEDED. [default: {_DEFAULTS.max_request_bytes_in_flight}]",
)
@click.option(
    "--grpc-max-concurrent-streams",
    type=int,
    default=None,
    help="gRPC calls one connection may have open at once (HTTP/2 MAX_CONCURRENT_STREAMS);"
    " its client queues the others itself. Long polls count (our consumer keeps one"
    f" FetchMany per broker). [default: {_DEFAULTS.grpc_max_concurrent_streams}]",
)
@click.option(
    "--grpc-max-pending-calls",
    type=int,
    default=None,
    help="gRPC calls waiting, all connections together, to be taken by the server; past"
    " it gRPC's core refuses new ones (CANCELLED). Each holds up to 64 KiB of its message."
    f" [default: {_DEFAULTS.grpc_max_pending_calls}]",
)
@click.option(
    "--grpc-request-timeout-ms",
    type=int,
    default=None,
    help="A gRPC call's request message must arrive within this once its headers did;"
    f" else UNAVAILABLE (REQUEST_TIMED_OUT). [default: {_DEFAULTS.grpc_request_timeout_ms}]",
)
@click.option(
    "--grpc-request-hold-ms",
    type=int,
    default=None,
    help="A gRPC Produce's unread message holds --max-request-bytes of the in-flight budget"
    " this long, then 64 KiB until it arrives. At most --grpc-request-timeout-ms."
    f" [default: {_DEFAULTS.grpc_request_hold_ms}]",
)
@click.option(
    "--retention-check-interval-s",
    type=float,
    default=None,
    help=f"Seconds between retention passes. [default: {_DEFAULTS.retention_check_interval_s}]",
)
@click.option(
    "--group-min-session-timeout-ms",
    type=int,
    default=None,
    help="Smallest consumer session timeout accepted."
    f" [default: {_DEFAULTS.group_min_session_timeout_ms}]",
)
@click.option(
    "--group-max-session-timeout-ms",
    type=int,
    default=None,
    help="Largest consumer session timeout accepted."
    f" [default: {_DEFAULTS.group_max_session_timeout_ms}]",
)
@click.option(
    "--group-initial-rebalance-delay-ms",
    type=int,
    default=None,
    help="Wait for more members before the first rebalance."
    f" [default: {_DEFAULTS.group_initial_rebalance_delay_ms}]",
)
@click.option(
    "--shutdown-grace-s",
    type=float,
    default=None,
    help=f"Time in-flight requests get on SIGTERM. [default: {_DEFAULTS.shutdown_grace_s}]",
)
@click.option(
    "--skip-damaged/--no-skip-damaged",
    default=None,
    help="Start even if a partition's stored data is damaged or missing: that partition "
    "stays offline (clients get KAFKA_STORAGE_ERROR), the others serve. The meta store "
    "is never skipped. [default: off, refuse to start]",
)
@click.option(
    "--verify",
    is_flag=True,
    default=False,
    help="Read every block of every stored file under --data, print one line per damaged "
    "file and a summary, and exit (0 clean, 1 damaged). Starts nothing, changes nothing.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Log level. [default: info]",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log lines as text, or as one JSON object per line for log shippers. [default: text]",
)
@click.option(
    "--slow-fsync-ms",
    type=float,
    default=None,
    help="Log a WAL fsync that takes at least this long (0: every one)."
    f" [default: {_DEFAULTS.slow_fsync_ms:g}]",
)
def main(config_file: str | None, verify: bool, **flags: Any) -> None:
    """Run a Sentinel broker: a commit log with a gRPC API, the Kafka protocol and
    Prometheus metrics."""
    # First of all: a broker must be able to reopen every partition it ever created.
    raise_open_files_limit()
    # ``kill -USR1 <pid>`` writes every thread's stack to stderr (a hung broker's story).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        config = load_config(flags, config_file)
    except SentinelError as exc:
        click.echo(f"sentinel-server: {exc}", err=True)
        sys.exit(2)
    if verify:
        sys.exit(_verify(config.data_dir))
    configure_logging(config.log_level, config.log_format)
    try:
        _run(config)
    except DamagedDataError as exc:
        click.echo(f"sentinel-server: {refusal_line(exc)}", err=True)
        sys.exit(1)
    except SentinelError as exc:
        click.echo(f"sentinel-server: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"sentinel-server: {_os_error_line(exc, config.data_dir)}", err=True)
        sys.exit(1)
    except RuntimeError as exc:  # grpc reports a port it cannot bind as RuntimeError
        click.echo(f"sentinel-server: {exc}", err=True)
        sys.exit(1)


_START_FAILURES: tuple[tuple[frozenset[int], str], ...] = (
    (frozenset({errno.ENOSPC, errno.EDQUOT}),
     "no space left on the disk of {data} (this start must write before it can serve): "
     "free space there, then start again"),
    (frozenset({errno.EROFS}),
     "the data directory {data} is on a read-only file system (a broker writes there): "
     "mount it read-write, or start with another --data"),
    (frozenset({errno.EACCES, errno.EPERM}),
     "no permission to use {where} in the data directory {data}: start as a user that "
     "may read and write there, or with another --data"),
    (frozenset({errno.EEXIST, errno.ENOTDIR}),
     "{where} is in the way of the data directory {data}: a directory belongs there, it "
     "is not one; move it aside, or start with another --data"),
    (frozenset({errno.EISDIR}),
     "{where} is in the way in the data directory {data}: a file belongs there, it is a "
     "directory; move it aside"),
    (frozenset({errno.EMFILE, errno.ENFILE}),
     "too many open files (the broker's or the system's limit): raise the open-files "
     "limit (ulimit -n), or start with a lower --max-open-partitions"),
    (frozenset({errno.EIO}),
     "the disk of {data} failed a read or write at {where}: check the disk, then start "
     "again"),
)  # fmt: skip
"""What a start that failed on an ``OSError`` of these codes says: what is wrong, where,
and what to do (README, "When the broker refuses to start")."""


def _os_error_line(exc: OSError, data_dir: str) -> str:
    """The one line a start that failed on ``exc`` ends with (``_START_FAILURES``)."""
    where = exc.filename if exc.filename is not None else data_dir
    for codes, line in _START_FAILURES:
        if exc.errno in codes:
            return f"{line.format(data=data_dir, where=where)} ({exc})"
    return f"{exc} (data directory {data_dir})"


def _show_environment_names(command: click.Command) -> None:
    """Append each setting's environment variable to its help: ``[env: SENTINEL_DATA]``."""
    for param in command.params:
        not_settings = ("config_file", "verify", "version")  # actions, not settings
        if isinstance(param, click.Option) and param.name not in not_settings:
            setting = setting_of_field(param.name or "")
            # One name everywhere: the flag is the setting's name.
            assert setting.flag in param.opts, f"{param.opts} is not named {setting.flag}"
            param.help = f"{param.help} [env: {setting.env}]"


_show_environment_names(main)


if __name__ == "__main__":
    main()
