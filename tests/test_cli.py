"""``sentinel-cli``: the pure parts (argv normalisation, parsers, formatting, the stop
rule) in-process, then the commands end to end as subprocesses against a real broker."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from broker_process import BrokerProcess
from sentinel.cli.argv import CommandSpec, normalize_argv, spec_from_click
from sentinel.cli.consume import EndOfLog, make_plan, start_offset
from sentinel.cli.errors import CliError, CliUsageError, explain
from sentinel.cli.groups import is_unknown
from sentinel.cli.main import cli, main
from sentinel.cli.output import (
    Output,
    RecordFields,
    format_timestamp,
    human_size,
    record_dict,
    record_line,
)
from sentinel.cli.params import (
    At,
    Tail,
    config_dict,
    parse_acks,
    parse_broker,
    parse_config,
    parse_offset,
)
from sentinel.cli.produce import ProduceTally, stdin_values
from sentinel.cli.tables import group_dict, group_view, topic_dict, topic_view
from sentinel.cli.topics import choose_action
from sentinel.client import ConsumerRecord, RecordMetadata, TopicPartition
from sentinel.client import errors as client_errors
from sentinel.client.types import (
    GroupDescription,
    MemberDescription,
    PartitionDescription,
    PartitionLag,
    TopicDescription,
)
from sentinel.testing.ports import pick_port

# --- argv normalisation -----------------------------------------------------------------

SPEC = spec_from_click(cli)


def test_spec_knows_each_subcommands_options() -> None:
    produce = SPEC.subcommands["produce"]
    assert produce.options["topic"] is True
    assert produce.options["progress"] is False
    assert SPEC.subcommands["consume"].options["from-beginning"] is False
    assert SPEC.subcommands["topics"].options["config"] is True
    assert "describe" not in produce.options


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["produce", "-topic", "events", "-message", "Hello", "-count", "10"],
            ["produce", "--topic", "events", "--message", "Hello", "--count", "10"],
        ),
        # a value is never rewritten, even one that looks like a known option
        (
            ["produce", "-message", "-count", "-count", "2"],
            ["produce", "--message", "-count", "--count", "2"],
        ),
        (["produce", "-partition", "-1"], ["produce", "--partition", "-1"]),
        (
            ["consume", "-from-beginning", "-topic", "t"],
            ["consume", "--from-beginning", "--topic", "t"],
        ),
        (["topics", "-config=retention.ms=5"], ["topics", "--config=retention.ms=5"]),
        (["topics", "--describe", "-list"], ["topics", "--describe", "-list"]),
        # unknown names, short options and operands after -- pass through
        (["produce", "-bogus", "-h"], ["produce", "-bogus", "-h"]),
        (["produce", "--", "-topic"], ["produce", "--", "-topic"]),
        # -describe is an option of topics, not of produce
        (["produce", "-describe"], ["produce", "-describe"]),
        (["groups", "-describe", "g"], ["groups", "--describe", "g"]),
        (["-help"], ["--help"]),
    ],
)
def test_normalize_argv(argv: list[str], expected: list[str]) -> None:
    assert normalize_argv(argv, SPEC) == expected


def test_normalize_argv_tracks_the_subcommand() -> None:
    spec = CommandSpec({"verbose": False}, {"run": CommandSpec({"name": True})})
    assert normalize_argv(["-verbose", "run", "-name", "run", "-verbose"], spec) == [
        "--verbose",
        "run",
        "--name",
        "run",
        "-verbose",
    ]


# --- parsers ----------------------------------------------------------------------------


def test_parse_acks() -> None:
    assert [parse_acks(v) for v in ("0", "1", "all", "ALL", "-1")] == [0, 1, "all", "all", "all"]
    with pytest.raises(ValueError, match="acks must be"):
        parse_acks("2")


def test_parse_config() -> None:
    assert parse_config("retention.ms=1000") == ("retention.ms", "1000")
    assert parse_config("a=b=c") == ("a", "b=c")
    assert parse_config("k=") == ("k", "")
    for bad in ("novalue", "=v"):
        with pytest.raises(ValueError, match="key=value"):
            parse_config(bad)
    assert config_dict([("a", "1"), ("b", "2")]) == {"a": "1", "b": "2"}
    with pytest.raises(ValueError, match="twice"):
        config_dict([("a", "1"), ("a", "2")])


def test_parse_offset_and_broker() -> None:
    assert parse_offset("42") == 42
    assert parse_offset("earliest") == "earliest"
    assert parse_offset("Latest") == "latest"
    assert parse_offset("-1") == Tail(1)
    assert parse_offset("end") == "latest"
    assert parse_offset("@1700000000000") == At(1_700_000_000_000)
    assert parse_offset("@2023-11-14T22:13:20Z") == At(1_700_000_000_000)
    assert parse_offset("@2023-11-14T22:13:20") == At(1_700_000_000_000)  # UTC
    for bad in ("x", "@yesterday"):
        with pytest.raises(ValueError, match=r"offset|time"):
            parse_offset(bad)
    assert parse_broker(" h:1 , h2:2 ") == "h:1,h2:2"
    assert parse_broker("localhost") == "localhost:9092"
    assert parse_broker("a,b:1") == "a:9092,b:1"
    for bad in ("", "host:x", ":9092", "h:0", "h:70000"):
        with pytest.raises(ValueError, match="broker"):
            parse_broker(bad)


# --- formatting ---------------------------------------------------------------------------


def _record(key: bytes | None = b"k", value: bytes | None = b"v") -> ConsumerRecord:
    return ConsumerRecord("t", 2, 7, 1_700_000_000_123, key, value)


def test_record_line_fields_and_nulls() -> None:
    assert record_line(_record(), RecordFields()) == "v"
    every = RecordFields(timestamp=True, partition=True, offset=True, key=True)
    assert record_line(_record(), every) == "2023-11-14T22:13:20.123Z\t2\t7\tk\tv"
    assert record_line(_record(None, None), RecordFields(key=True)) == "null\tnull"
    assert record_line(_record(value=b"a\xffb"), RecordFields()) == "a\ufffdb"


def test_record_dict() -> None:
    assert record_dict(_record(value=b"\xff")) == {
        "topic": "t",
        "partition": 2,
        "offset": 7,
        "timestamp": 1_700_000_000_123,
        "key": "k",
        "value": "/w==",
        "value_encoding": "base64",
        "headers": [],
    }
    assert record_dict(_record(None, None))["key"] is None


def test_small_formatters() -> None:
    assert format_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert format_timestamp(-1) == "-"
    assert [human_size(n) for n in (0, 1023, 1536, 5 * 1024**3)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "5.0 GiB",
    ]


def test_produce_tally() -> None:
    tally = ProduceTally("events", 1)
    for partition, offset in [(0, 5), (0, 6), (1, 0)]:
        tally.ok(RecordMetadata("events", partition, offset, 0))
    tally.fail(client_errors.MessageTooLargeError("too big"))
    assert tally.as_dict() == {
        "topic": "events",
        "records": 3,
        "failed": 1,
        "acks": "1",
        "partitions": [
            {"partition": 0, "records": 2, "first_offset": 5, "last_offset": 6},
            {"partition": 1, "records": 1, "first_offset": 0, "last_offset": 0},
        ],
    }
    assert tally.text() == (
        "produced 3 records to events [partition 0: 2 at offsets 5-6; partition 1: 1 at offset 0]"
    )
    blind = ProduceTally("events", 0)
    blind.ok(RecordMetadata("events", 0, -1, 0))
    assert "not reported" in blind.text()
    assert blind.as_dict()["partitions"][0]["first_offset"] == -1


def test_stdin_values_strip_line_endings() -> None:
    stream = io.BytesIO(b"a\nb\r\n\nlast")
    assert list(stdin_values(stream, 1)) == [b"a", b"b", b"", b"last"]
    assert list(stdin_values(io.BytesIO(b"x\n"), 3)) == [b"x", b"x", b"x"]


def test_output_strips_table_padding() -> None:
    buffer = io.StringIO()
    out = Output(json_mode=False, stdout=buffer, stderr=io.StringIO())
    out.show(topic_view(_topic()))
    lines = buffer.getvalue().splitlines()
    assert lines[0].startswith("Topic: events")
    assert all(line == line.rstrip() for line in lines)
    assert any("retention.ms" in line and "1000" in line for line in lines)


# --- the stop rule, plans, actions ----------------------------------------------------------

TP0 = TopicPartition("t", 0)
TP1 = TopicPartition("t", 1)


def test_end_of_log() -> None:
    end = EndOfLog({TP0: 10, TP1: 0})
    assert not end.reached({TP0: 9, TP1: 0}, {})
    assert end.reached({TP0: 10, TP1: 0}, {})
    # truncated since: the latest fetch's high watermark is lower
    assert end.reached({TP0: 4, TP1: 0}, {TP0: 4})
    # a partition with no end known is never done; nothing assigned is done
    assert not EndOfLog({}).reached({TP0: 100}, {TP0: None})
    assert EndOfLog({}).reached({}, {})
    assert end.remaining({TP0: 3, TP1: 0}) == 7


def _topic() -> TopicDescription:
    part = PartitionDescription(0, 0, (0,), (0,), 5, 12, 10, 300)
    return TopicDescription("events", (part,), {"retention.ms": "1000"}, 1)


def test_start_offset() -> None:
    topic = _topic()
    assert start_offset(topic, 0, "earliest") == 5
    assert start_offset(topic, 0, "latest") == 10
    assert start_offset(topic, 0, 7) == 7
    with pytest.raises(CliError, match="offset 11 is out of range, events/0 holds offsets 5 to 9"):
        start_offset(topic, 0, 11)
    assert start_offset(topic, 0, Tail(3)) == 7
    assert start_offset(topic, 0, Tail(30)) == 5
    assert start_offset(topic, 0, At(1), lambda p, ms: 8) == 8
    assert start_offset(topic, 0, At(1), lambda p, ms: -1) == 10  # none after: the end
    with pytest.raises(CliError, match="has 1 partition; there is no partition 1"):
        start_offset(topic, 1, "earliest")


def test_make_plan() -> None:
    base = {
        "topic": "t",
        "partition": None,
        "offset": None,
        "from_beginning": False,
        "group": None,
        "follow": False,
        "max_messages": 100,
    }
    plan = make_plan(**base)  # type: ignore[arg-type]
    assert (plan.partition, plan.offset, plan.limit) == (None, "earliest", 100)
    assert make_plan(**{**base, "max_messages": 0}).limit is None  # type: ignore[arg-type]
    grouped = make_plan(**{**base, "group": "g", "offset": "latest"})  # type: ignore[arg-type]
    assert (grouped.partition, grouped.offset) == (None, "latest")
    for conflict in (
        {"from_beginning": True, "offset": 5},
        {"group": "g", "partition": 1},
        {"group": "g", "offset": 3},
        {"group": "g", "offset": Tail(3)},
    ):
        with pytest.raises(CliUsageError):
            make_plan(**{**base, **conflict})  # type: ignore[arg-type]


def test_choose_action() -> None:
    none: dict[str, object] = {
        "list_": False,
        "describe": None,
        "create": None,
        "delete": None,
        "alter": None,
        "partitions": None,
        "replication_factor": None,
        "configs": (),
    }
    assert choose_action(**none).verb == "list"  # type: ignore[arg-type]
    created = choose_action(**{**none, "create": "x", "partitions": 3})  # type: ignore[arg-type]
    assert (created.verb, created.name) == ("create", "x")
    for bad in (
        {"create": "x", "delete": "y"},
        {"list_": True, "describe": "x"},
        {"alter": "x"},
        {"describe": "x", "partitions": 2},
        {"delete": "x", "configs": (("a", "b"),)},
    ):
        with pytest.raises(CliUsageError):
            choose_action(**{**none, **bad})  # type: ignore[arg-type]


def test_explain_names_who_is_wrong() -> None:
    down = client_errors.BrokerUnavailableError(
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
        "Failed to connect to remote host: Connection refused"
    )
    reported = explain(down, "127.0.0.1:1")
    assert reported is not None
    assert reported.message == "cannot reach broker at 127.0.0.1:1: Connection refused"
    assert reported.exit_code == 1
    late = explain(client_errors.RequestTimedOutError("Deadline Exceeded"), "h:1")
    assert late is not None and late.message.startswith("cannot reach broker at h:1")
    unknown = explain(client_errors.UnknownTopicOrPartitionError("unknown topic 'x'"), "h:1")
    assert unknown is not None and unknown.message == "unknown topic 'x'"
    assert explain(RuntimeError("bug"), "h:1") is None


def test_group_tables() -> None:
    member = MemberDescription("m-1", "cli", (TopicPartition("t", 0),))
    lag = PartitionLag("t", 0, 4, 10, 6)
    group = GroupDescription("g", "Stable", "roundrobin", 3, (member,), (lag,))
    doc = group_dict(group)
    assert doc["partitions"] == [
        {
            "topic": "t",
            "partition": 0,
            "member_id": "m-1",
            "committed_offset": 4,
            "log_end_offset": 10,
            "lag": 6,
        }
    ]
    assert doc["members"][0]["assignment"] == [{"topic": "t", "partition": 0}]
    buffer = io.StringIO()
    Output(json_mode=False, stdout=buffer, stderr=io.StringIO()).show(group_view(group))
    assert "m-1" in buffer.getvalue() and "Stable" in buffer.getvalue()
    assert is_unknown(GroupDescription("x", "Dead", "", -1, (), ()))
    assert not is_unknown(group)
    assert topic_dict(_topic())["records"] == 5


# --- main() in-process: usage errors ------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["produce", "-message", "x"], "Missing option '--topic'"),
        (["produce", "-topic", "t", "-bogus"], "no such option: -bogus"),
        (["produce", "-topic", "t", "-acks", "2"], "acks must be 0, 1 or all"),
        (["consume", "-topic", "t", "-group", "g", "-partition", "1"], "-group and -partition"),
        (["topics", "-create", "a", "-delete", "b"], "conflict"),
        (["topics", "-create", "a", "-config", "oops"], "key=value"),
        (["topics", "-reassign", "a", "-partition", "0"], "-replicas"),
        (["topics", "-reassign", "a", "-replicas", "1,x"], "broker ids"),
        (["topics", "-describe", "a", "-replicas", "1"], "-replicas goes with -reassign"),
        (["topics", "-describe", "a", "-partition", "0"], "-partition goes with"),
        (["produce", "-topic", "t", "-broker", "nohost:x"], "not host:port"),
        (["nosuch"], "No such command"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sentinel-cli: ")
    assert needle in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["consume", "-help"]) == 0
    assert "--from-beginning" in capsys.readouterr().out


# --- end to end ----------------------------------------------------------------------------

CLI_TIMEOUT_S = 30


def run_cli(
    broker: str, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SENTINEL_BROKER": broker}
    proc = subprocess.run(
        [sys.executable, "-m", "sentinel.cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("sentinel-cli: "), proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_quick_start(broker: BrokerProcess) -> None:
    b = broker.address
    produced = run_cli(
        b, "produce", "-topic", "events", "-message", "Hello, World!", "-count", "10"
    )
    assert "produced 10 records to events" in produced.stdout
    consumed = run_cli(b, "consume", "-topic", "events", "-from-beginning", "-max-messages", "100")
    assert consumed.stdout.splitlines() == ["Hello, World!"] * 10
    # double dashes, a limit, a start offset, and JSON
    some = run_cli(b, "consume", "--topic", "events", "--offset", "8", "--print-offset")
    assert some.stdout.splitlines() == ["8\tHello, World!", "9\tHello, World!"]
    three = run_cli(b, "consume", "-topic", "events", "-max-messages", "3", "-json")
    docs = [json.loads(line) for line in three.stdout.splitlines()]
    assert [d["offset"] for d in docs] == [0, 1, 2]
    assert docs[0]["value"] == "Hello, World!" and docs[0]["topic"] == "events"
    summary = json.loads(run_cli(b, "produce", "-topic", "events", "-message", "x", "-json").stdout)
    assert summary["partitions"] == [
        {"partition": 0, "records": 1, "first_offset": 10, "last_offset": 10}
    ]


def test_stdin_keys_and_acks(broker: BrokerProcess) -> None:
    b = broker.address
    run_cli(
        b, "produce", "-topic", "lines", "-key", "user-1", "-acks", "all", stdin="one\ntwo\r\nthree"
    )
    out = run_cli(b, "consume", "-topic", "lines", "-print-key", "-print-offset").stdout
    assert out.splitlines() == ["0\tuser-1\tone", "1\tuser-1\ttwo", "2\tuser-1\tthree"]
    stamped = run_cli(b, "consume", "-topic", "lines", "-print-timestamp", "-max-messages", "1")
    stamp, value = stamped.stdout.rstrip("\n").split("\t")
    assert value == "one" and stamp.endswith("Z") and "T" in stamp
    blind = run_cli(b, "produce", "-topic", "lines", "-message", "m", "-acks", "0", "-json")
    assert json.loads(blind.stdout)["records"] == 1


def test_topics_lifecycle(broker: BrokerProcess) -> None:
    b = broker.address
    created = run_cli(
        b, "topics", "-create", "orders", "-partitions", "2", "-config", "retention.ms=60000"
    )
    assert "created topic orders (2 partitions)" in created.stdout
    listed = run_cli(b, "topics", "-list").stdout
    assert "orders" in listed and "TOPIC" in listed
    run_cli(b, "produce", "-topic", "orders", "-message", "o", "-count", "4", "-partition", "1")
    described = json.loads(run_cli(b, "topics", "-describe", "orders", "-json").stdout)
    assert described["configs"]["retention.ms"] == "60000"
    assert [p["high_watermark"] for p in described["partitions"]] == [0, 4]
    assert {"leader", "log_start_offset", "log_end_offset", "size_bytes"} <= set(
        described["partitions"][1]
    )
    human = run_cli(b, "topics", "--describe", "orders").stdout
    assert "HIGH WATERMARK" in human and "retention.ms" in human
    grown = run_cli(b, "topics", "-alter", "orders", "-partitions", "3", "-json")
    assert len(json.loads(grown.stdout)["altered"]["partitions"]) == 3
    again = run_cli(b, "topics", "-create", "orders", check=False)
    assert_one_line_error(again, 1, "already exists")
    run_cli(b, "topics", "-delete", "orders")
    names = [t["name"] for t in json.loads(run_cli(b, "topics", "-json").stdout)["topics"]]
    assert "orders" not in names


def test_group_consume_and_groups(broker: BrokerProcess) -> None:
    b = broker.address
    run_cli(b, "produce", "-topic", "audit", "-message", "a", "-count", "5")
    first = run_cli(b, "consume", "-topic", "audit", "-group", "g1", "-max-messages", "2")
    assert first.stdout.splitlines() == ["a", "a"]
    rest = run_cli(b, "consume", "-topic", "audit", "-group", "g1", "-print-offset")
    assert rest.stdout.splitlines() == ["2\ta", "3\ta", "4\ta"]
    assert run_cli(b, "consume", "-topic", "audit", "-group", "g1").stdout == ""
    listed = json.loads(run_cli(b, "groups", "-json").stdout)
    assert [g["group_id"] for g in listed["groups"]] == ["g1"]
    assert "g1" in run_cli(b, "groups").stdout
    described = json.loads(run_cli(b, "groups", "-describe", "g1", "-json").stdout)
    assert described["partitions"] == [
        {
            "topic": "audit",
            "partition": 0,
            "member_id": None,
            "committed_offset": 5,
            "log_end_offset": 5,
            "lag": 0,
        }
    ]
    assert "LAG" in run_cli(b, "groups", "-describe", "g1").stdout
    assert_one_line_error(run_cli(b, "groups", "-describe", "nog", check=False), 1, "unknown group")


def test_errors_are_one_line(broker: BrokerProcess) -> None:
    b = broker.address
    assert_one_line_error(
        run_cli(b, "consume", "-topic", "nosuch", "-partition", "0", check=False),
        1,
        "unknown topic 'nosuch'",
    )
    run_cli(b, "produce", "-topic", "one", "-message", "x")
    assert_one_line_error(
        run_cli(b, "consume", "-topic", "one", "-partition", "3", check=False),
        1,
        "there is no partition 3",
    )
    assert_one_line_error(
        run_cli(b, "produce", "-topic", "one", "-message", "x", "-partition", "3", check=False),
        1,
        "no partition 3",
    )
    assert_one_line_error(
        run_cli(b, "consume", "-topic", "one", "-offset", "5", check=False), 1, "out of range"
    )
    assert_one_line_error(
        run_cli(b, "produce", "-topic", "one", "-nope", check=False), 2, "no such option: -nope"
    )


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on, outside the ephemeral range: no connection's source
    port either (a dial from it to itself would connect)."""
    return pick_port()


@pytest.mark.parametrize(
    "args",
    [
        ("produce", "-topic", "t", "-message", "x"),
        ("consume", "-topic", "t"),
        ("consume", "-topic", "t", "-group", "g"),
        ("topics", "-list"),
        ("groups",),
    ],
)
def test_unreachable_broker(args: tuple[str, ...], closed_port: int) -> None:
    address = f"127.0.0.1:{closed_port}"
    started = time.monotonic()
    proc = run_cli(address, *args, check=False)
    assert_one_line_error(proc, 1, f"cannot reach broker at {address}")
    assert time.monotonic() - started < 15


def test_follow_until_interrupted(broker: BrokerProcess) -> None:
    b = broker.address
    run_cli(b, "topics", "-create", "live")
    env = {**os.environ, "SENTINEL_BROKER": b}
    follower = subprocess.Popen(
        [sys.executable, "-m", "sentinel.cli.main", "consume", "-topic", "live", "-follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    watchdog = threading.Timer(CLI_TIMEOUT_S, follower.kill)  # a hung readline fails, not hangs
    watchdog.start()
    try:
        assert follower.stdout is not None
        run_cli(b, "produce", "-topic", "live", "-message", "tick", "-count", "3")
        lines = [follower.stdout.readline() for _ in range(3)]  # blocks until printed
        assert lines == ["tick\n"] * 3
        follower.send_signal(signal.SIGINT)
        out, err = follower.communicate(timeout=CLI_TIMEOUT_S)
    finally:
        watchdog.cancel()
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, err
    assert out == "" and "Traceback" not in err
