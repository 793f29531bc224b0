"""What the operator of a real ``sentinel-server`` process sees: settings with one name
(flag, environment, TOML), ports in use, log lines, JSON logs, and the metrics."""

from __future__ import annotations

import gc
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from broker_process import READY, BrokerProcess
from metrics_polling import scrape, wait_for
from sentinel.config import SETTINGS
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc
from sentinel.record import build_batch

Start = Callable[..., BrokerProcess]
SERVER = [sys.executable, "-m", "sentinel.cli.server"]


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVER, *args], capture_output=True, text=True, timeout=30, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def wait_ready(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if selector.select(timeout=0.2):
            line = proc.stdout.readline()
            if READY.search(line):
                return line
            assert line, "the server exited before it was ready"
    raise AssertionError("the server did not become ready")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start a server with exactly these arguments and environment; killed at the end."""
    procs: list[subprocess.Popen[str]] = []

    def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*SERVER, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        )  # fmt: skip
        procs.append(proc)
        wait_ready(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)


def produce(address: str, topic: str, count: int, timestamp_ms: int = 1_700_000_000_000) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        batch = build_batch([(None, b"v%d" % i, (), timestamp_ms) for i in range(count)])
        stub.Produce(pb.ProduceRequest(topic=topic, partition=0, record_batches=batch))


# ------------------------------------------------------------------- settings


def test_sentinel_data_and_toml_data_are_the_data_directory(
    tmp_path: Path, served: Callable[..., subprocess.Popen[str]]
) -> None:
    by_env = tmp_path / "by-env"
    # SENTINEL_BROKER is sentinel-cli's variable: the server lets it through.
    served(["--port", "0", "--metrics-port", "0"],
           {"SENTINEL_DATA": str(by_env), "SENTINEL_BROKER": "127.0.0.1:1"})  # fmt: skip
    assert (by_env / "LOCK").exists()
    by_file = tmp_path / "by-file"
    config = tmp_path / "broker.toml"
    config.write_text(f'data = "{by_file}"\nmetrics-port = 0\nsync = "always"\n')
    served(["--port", "0", "--config", str(config)], {})
    assert (by_file / "LOCK").exists()


@pytest.mark.parametrize(
    ("variable", "hint"),
    [("SENTINEL_X", ""), ("SENTINEL_DATA_DIR", "SENTINEL_DATA"),
     ("SENTINEL_SYNC_MODE", "SENTINEL_SYNC")],
)  # fmt: skip
def test_an_unknown_sentinel_variable_is_refused_in_one_line(variable: str, hint: str) -> None:
    result = run(["--port", "0", "--metrics-port", "0"], {variable: "1"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"unknown environment variable {variable}" in lines[0]
    assert hint in lines[0]


def test_a_former_toml_key_is_refused_naming_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "old.toml"
    config.write_text('data_dir = "/nowhere"\n')
    result = run(["--config", str(config)])
    assert result.returncode == 2
    assert "unknown setting 'data_dir'" in result.stderr
    assert "did you mean 'data'" in result.stderr


def test_help_shows_every_settings_environment_name() -> None:
    result = run(["--help"])
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # as wrapped for the terminal
    for setting in SETTINGS:
        assert setting.flag in text
        assert f"[env: {setting.env}]" in text


# ---------------------------------------------------------------------- ports


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield holder.getsockname()[1]


@pytest.mark.parametrize(
    ("flag", "other", "named"),
    [("--port", "--metrics-port", "--port / SENTINEL_PORT"),
     ("--metrics-port", "--port", "--metrics-port / SENTINEL_METRICS_PORT")],
)  # fmt: skip
def test_a_port_in_use_is_one_line_naming_the_port_and_setting(
    tmp_path: Path, taken_port: int, flag: str, other: str, named: str
) -> None:
    result = run(
        ["--host", "127.0.0.1", "--data", str(tmp_path / "d"), flag, str(taken_port), other, "0"]
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{taken_port}" in lines[0]
    assert f"port {taken_port} is in use" in lines[0]
    assert named in lines[0]


# ----------------------------------------------------------------------- logs


def test_logs_tell_what_happens(start_broker: Start) -> None:
    broker = start_broker(slow_fsync_ms=0)
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        stub.CreateTopic(pb.CreateTopicRequest(name="old", partitions=1,
                                               configs={"retention.ms": "60000"}))  # fmt: skip
        stub.CreateTopic(pb.CreateTopicRequest(name="doomed", partitions=2))
        stub.DeleteTopic(pb.DeleteTopicRequest(name="doomed"))
        joined = stub.JoinGroup(
            pb.JoinGroupRequest(group_id="grp", topics=["old"], session_timeout_ms=6000)
        )
    produce(broker.address, "old", 3)  # timestamps of 2023: past retention
    produce(broker.address, "old", 1, timestamp_ms=int(time.time() * 1000))
    produce(broker.address, "kept", 2, timestamp_ms=int(time.time() * 1000))
    removed = re.compile(r"INFO .*retention pass: [1-9]\d* records removed from \d+ partitions")
    wait_for(lambda: bool(removed.search(broker.read_log())))
    log = broker.read_log()
    assert "topic old created: 1 partitions" in log
    assert "topic doomed deleted (2 partitions)" in log
    assert f"group grp rebalanced: generation {joined.generation}, 1 members" in log
    assert "slow fsync: " in log
    broker.kill()  # a crash: recovery replays the WAL
    wal = max((broker.data_dir / "topics" / "kept" / "0").glob("*.wal"))
    with wal.open("ab") as tail:
        tail.write(b"\x00\x17torn")  # a write cut short
    broker.start()
    log = broker.read_log()
    assert "recovering 2 partitions under" in log
    line = next(line for line in log.splitlines() if "recovered partition kept-0" in line)
    assert "offsets 0..2" in line
    assert "replayed" in line
    assert f"cut a torn tail of 6 bytes from {wal.name}" in line
    assert "recovered partition old-0 in" in log


def test_log_format_json_is_one_object_per_line(start_broker: Start) -> None:
    broker = start_broker(log_format="json")
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        stub.CreateTopic(pb.CreateTopicRequest(name="j", partitions=1))
    broker.stop()
    lines = broker.read_log().strip().splitlines()
    assert len(lines) >= 3
    parsed = [json.loads(line) for line in lines]
    assert all({"ts", "level", "logger", "message"} <= set(p) for p in parsed)
    assert any(p["message"].startswith("topic j created") for p in parsed)


# -------------------------------------------------------------------- metrics


def test_active_connections_counts_a_follow_consumer_and_a_python_consumer(
    start_broker: Start,
) -> None:
    from sentinel.client import Consumer

    broker = start_broker()
    produce(broker.address, "c", 10)
    assert scrape(broker)["sentinel_active_connections"] == 0
    follower = subprocess.Popen(
        [sys.executable, "-m", "sentinel.cli.main", "consume", "--broker", broker.address,
         "--topic", "c", "--from-beginning", "--follow"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: scrape(broker)["sentinel_active_connections"] == 1)
        with Consumer(broker.address, group_id="pc", topics=["c"],
                      auto_offset_reset="earliest") as consumer:  # fmt: skip
            wait_for(lambda: bool(consumer.poll(0.5)))
            assert scrape(broker)["sentinel_active_connections"] == 2
    finally:
        follower.terminate()
        follower.wait(timeout=10)
    # Both went away. (A closed client's gRPC channel drops its connection when it is
    # collected: the client keeps it in a reference cycle.)
    gc.collect()
    wait_for(lambda: scrape(broker)["sentinel_active_connections"] == 0)


def test_consumed_counts_what_was_consumed_not_read_ahead(start_broker: Start) -> None:
    from sentinel.client import Consumer

    broker = start_broker()
    produce(broker.address, "half", 1000)
    with Consumer(broker.address, group_id="g", topics=["half"], auto_offset_reset="earliest",
                  enable_auto_commit=False) as consumer:  # fmt: skip
        taken: list[object] = []
        deadline = time.monotonic() + 15
        while len(taken) < 500 and time.monotonic() < deadline:
            taken += consumer.poll(0.5, max_records=500 - len(taken))
        assert len(taken) == 500
        consumer.commit()
        figures = scrape(broker)
        assert figures['sentinel_messages_consumed_total{topic="half"}'] == 500
        assert figures['sentinel_messages_fetched_total{topic="half"}'] == 1000  # read ahead
    ok = 'sentinel_requests_total{code="OK",method="Produce"}'
    assert scrape(broker)[ok] == 1
    assert not any('code="NONE"' in name for name in scrape(broker))


# ------------------------------------------------------------------ dashboard

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana" / "sentinel.json"
PROMQL_FUNCTIONS = {"rate", "sum", "by", "histogram_quantile", "le"}


def dashboard_metrics() -> set[str]:
    """Every metric name the dashboard's panels query (identifiers in their PromQL that
    are not functions, keywords or labels: Sentinel's metrics all start ``sentinel_``)."""
    dashboard = json.loads(DASHBOARD.read_text())
    names: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = re.sub(r"\{[^}]*\}|\[[^]]*\]|\([a-z, ]*\)\s*\(", "(", target["expr"])
            words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)) - PROMQL_FUNCTIONS
            assert words and all(w.startswith("sentinel_") for w in words), target["expr"]
            names |= words
    return names


def test_every_metric_the_dashboard_queries_is_exported(start_broker: Start) -> None:
    from sentinel.client import Consumer

    broker = start_broker()
    produce(broker.address, "dash", 20)
    with Consumer(broker.address, group_id="dg", topics=["dash"], auto_offset_reset="earliest",
                  enable_auto_commit=False) as consumer:  # fmt: skip
        wait_for(lambda: bool(consumer.poll(0.5, max_records=5)))
        consumer.commit()
    exported = {name.partition("{")[0] for name in scrape(broker)}
    queried = dashboard_metrics()
    assert len(queried) >= 15
    assert queried - exported == set()
