"""``sentinel-cli`` as users of kcat, the Kafka console tools and rpk expect it (issue
10): every test runs the real CLI as a subprocess against one real broker process per
module (each test on topics and groups of its own), plus the pure pieces in-process."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker_process import BrokerProcess
from metrics_polling import wait_for
from sentinel.cli.argv import hoist_broker
from sentinel.cli.params import At, parse_since
from sentinel.cli.produce import split_key
from sentinel.cli.record_format import compile_format
from sentinel.cli.reset import Move, ResetTarget, plan_reset
from sentinel.client import Admin, ConsumerRecord, Producer, TopicPartition
from sentinel.client import errors as client_errors
from sentinel.client.types import PartitionDescription

CLI_TIMEOUT_S = 30
CLI = (sys.executable, "-m", "sentinel.cli.main")
DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    broker = BrokerProcess(tmp_path_factory.mktemp("cli-more") / "broker").start()
    yield broker
    if broker.proc is not None:
        broker.kill()


def cli(
    broker: str | None, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("SENTINEL_BROKER", None)
    if broker is not None:
        env["SENTINEL_BROKER"] = broker
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
    return proc


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("sentinel-cli: "), proc.stderr
    assert needle in proc.stderr, proc.stderr


def jsons(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


# --- pure pieces -------------------------------------------------------------------------


def test_format_string_pieces() -> None:
    record = ConsumerRecord(
        "t", 2, 7, 1_700_000_000_123, b"k", b"v\xff", (("a", b"1"), ("b", None))
    )
    fmt = compile_format("%t/%p@%o %T [%k:%K] %s (%S) {%h} 100%%\\n")
    assert fmt.render(record) == "t/2@7 1700000000123 [k:1] v\ufffd (2) {a=1,b} 100%\n"
    nulls = ConsumerRecord("t", 0, 0, 0, None, None)
    assert compile_format("%k|%K|%s|%S").render(nulls) == "|-1||-1"
    for bad in ("%x", "trailing %"):
        with pytest.raises(ValueError, match="unknown format field"):
            compile_format(bad)


def test_since_key_delimiter_and_hoisting() -> None:
    now = 10_000_000
    assert parse_since("5m", now) == At(now - 300_000)
    assert parse_since("1.5s", now) == At(now - 1500)
    assert parse_since("1970-01-01T00:00:01Z", now) == At(1000)
    with pytest.raises(ValueError, match="duration"):
        parse_since("soon", now)
    assert split_key(b"k:v:w", b":") == (b"k", b"v:w")
    assert split_key(b"novalue", b":") == (None, b"novalue")
    commands = {"topics", "groups"}
    assert hoist_broker(["-broker", "h:1", "topics", "-list"], commands) == [
        "topics",
        "-broker",
        "h:1",
        "-list",
    ]
    assert hoist_broker(["--broker=h:1", "groups"], commands) == ["groups", "--broker=h:1"]
    assert hoist_broker(["topics", "-broker", "h"], commands) == ["topics", "-broker", "h"]


def test_plan_reset() -> None:
    parts = [
        PartitionDescription(0, 0, (0,), (0,), 2, 10, 10, 0),
        PartitionDescription(1, 0, (0,), (0,), 0, 5, 5, 0),
    ]
    committed = {0: 6}

    def plan(kind: str, value: int = 0, by_time: dict[int, int] | None = None) -> list[int]:
        return [m.new for m in plan_reset("t", parts, committed, ResetTarget(kind, value), by_time)]

    assert plan("earliest") == [2, 0]
    assert plan("latest") == [10, 5]
    assert plan("offset", 7) == [7, 5]  # brought into each partition's range
    assert plan("offset", 0) == [2, 0]
    assert plan("datetime", 1, {0: 4, 1: -1}) == [4, 5]  # none after the time: the end
    only_zero = plan_reset("t", parts[:1], committed, ResetTarget("shift", -10))
    assert only_zero == [Move("t", 0, 6, 2)]
    with pytest.raises(Exception, match="no committed offset"):
        plan("shift", 1)


# --- consume: every partition, offsets as people give them ---------------------------------


def test_consume_reads_every_partition(server: BrokerProcess) -> None:
    b = server.address
    assert "(3 partitions)" in cli(b, "topics", "-create", "spread", "-partitions", "3").stdout
    cli(b, "produce", "-topic", "spread", "-message", "one", "-count", "20", "-partition", "1")
    cli(b, "produce", "-topic", "spread", "-message", "two", "-count", "14", "-partition", "2")
    everything = cli(b, "consume", "-topic", "spread", "-print-partition").stdout.splitlines()
    assert sorted(everything) == sorted(["1\tone"] * 20 + ["2\ttwo"] * 14)
    narrowed = cli(b, "consume", "-topic", "spread", "-partition", "2").stdout.splitlines()
    assert narrowed == ["two"] * 14
    assert cli(b, "consume", "-topic", "spread", "-max-messages", "5").stdout.count("\n") == 5


def test_offsets_as_people_give_them(server: BrokerProcess) -> None:
    b = server.address
    cli(b, "topics", "-create", "offs", "-partitions", "2")
    for p in ("0", "1"):
        cli(b, "produce", "-topic", "offs", "-message", f"old{p}", "-count", "12", "-partition", p)
    # -offset -10: the last ten of each partition
    tail = jsons(cli(b, "consume", "-topic", "offs", "-offset", "-10", "-json").stdout)
    assert sorted((d["partition"], d["offset"]) for d in tail) == [
        (p, o) for p in (0, 1) for o in range(2, 12)
    ]
    assert cli(b, "consume", "-topic", "offs", "-offset", "end").stdout == ""
    assert cli(b, "consume", "-topic", "offs", "-from-beginning").stdout.count("\n") == 24
    # a time: the first record at or after it
    cut = int(time.time() * 1000) + 1
    wait_for(lambda: time.time() * 1000 >= cut, "the clock to pass the cut", timeout=DEADLINE_S)
    cli(b, "produce", "-topic", "offs", "-message", "new", "-count", "3", "-partition", "1")
    after = cli(b, "consume", "-topic", "offs", "-offset", f"@{cut}", "-print-offset").stdout
    assert after.splitlines() == ["12\tnew", "13\tnew", "14\tnew"]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut / 1000 - 3600)) + "Z"
    assert cli(b, "consume", "-topic", "offs", "-offset", f"@{iso}").stdout.count("\n") == 27
    assert cli(b, "consume", "-topic", "offs", "-since", "1h").stdout.count("\n") == 27
    assert cli(b, "consume", "-topic", "offs", "-since", "2099-01-01").stdout == ""
    one_line_error(
        cli(b, "consume", "-topic", "offs", "-partition", "0", "-offset", "1000", check=False),
        1,
        "offset 1000 is out of range, offs/0 holds offsets 0 to 11",
    )
    one_line_error(
        cli(b, "consume", "-topic", "offs", "-since", "5m", "-offset", "3", check=False),
        2,
        "-since and -offset conflict",
    )


# --- output and produce options ------------------------------------------------------------


def test_formats_headers_keys_and_compression(server: BrokerProcess) -> None:
    b = server.address
    cli(
        b,
        "produce",
        "-topic",
        "fmt",
        "-key-delimiter",
        ":",
        "-header",
        "trace=abc",
        "-header",
        "src=cli",
        "-compression",
        "gzip",
        stdin="user-1:hello:there\nno key here\n",
    )
    kcat = cli(b, "consume", "-topic", "fmt", "-f", "%t %p %o [%k] %s {%h} %K\\n").stdout
    assert kcat.splitlines() == [
        "fmt 0 0 [user-1] hello:there {trace=abc,src=cli} 6",
        "fmt 0 1 [] no key here {trace=abc,src=cli} -1",
    ]
    printed = cli(b, "consume", "-topic", "fmt", "-print-key", "-print-headers").stdout
    assert printed.splitlines()[0] == "user-1\ttrace=abc,src=cli\thello:there"
    docs = jsons(cli(b, "consume", "-topic", "fmt", "-json").stdout)
    assert docs[0]["headers"] == [{"key": "trace", "value": "abc"}, {"key": "src", "value": "cli"}]
    assert (docs[1]["key"], docs[1]["value"]) == (None, "no key here")
    # binary keys, values and header values come out as base64, and say so
    with Producer(b) as producer:
        producer.send("fmt", b"\xff\x00v", key=b"\x80k", headers=[("bin", b"\xfe")]).result(10)
    binary = jsons(cli(b, "consume", "-topic", "fmt", "-offset", "2", "-json").stdout)[0]
    assert base64.b64decode(str(binary["value"])) == b"\xff\x00v"
    assert base64.b64decode(str(binary["key"])) == b"\x80k"
    assert binary["value_encoding"] == binary["key_encoding"] == "base64"
    assert binary["headers"] == [{"key": "bin", "value": "/g==", "encoding": "base64"}]
    for codec in ("none", "zstd", "lz4", "snappy"):
        cli(b, "produce", "-topic", "fmt", "-message", codec, "-compression", codec)
    tail = cli(b, "consume", "-topic", "fmt", "-offset", "-4").stdout.splitlines()
    assert tail == ["none", "zstd", "lz4", "snappy"]
    one_line_error(
        cli(b, "consume", "-topic", "fmt", "-f", "%q", check=False), 2, "unknown format field %q"
    )
    one_line_error(
        cli(b, "produce", "-topic", "fmt", "-key-delimiter", ":", "-key", "k", check=False),
        2,
        "-key-delimiter",
    )


# --- groups: reset offsets, delete -------------------------------------------------------


def _committed(b: str, group: str) -> list[int]:
    described = json.loads(cli(b, "groups", "-describe", group, "-json").stdout)
    return [p["committed_offset"] for p in described["partitions"]]


def test_group_reset_offsets(server: BrokerProcess) -> None:
    b = server.address
    cli(b, "produce", "-topic", "resets", "-message", "r", "-count", "10")
    assert cli(b, "consume", "-topic", "resets", "-group", "rg").stdout.count("\n") == 10
    assert _committed(b, "rg") == [10]
    dry = cli(b, "groups", "-reset-offsets", "rg", "-topic", "resets", "-to-earliest")
    assert "dry run" in dry.stderr and "CURRENT OFFSET" in dry.stdout
    assert _committed(b, "rg") == [10]  # nothing changed
    steps = [
        (("-to-earliest",), 0),
        (("-shift-by", "3"), 3),
        (("-shift-by", "-100"), 0),
        (("-to-offset", "1000"), 10),
        (("-to-offset", "4"), 4),
        (("-to-latest",), 10),
        (("-to-datetime", "1970-01-01T00:00:00Z"), 0),
    ]
    for flags, expected in steps:
        done = cli(
            b, "groups", "-reset-offsets", "rg", "-topic", "resets", *flags, "-execute", "-json"
        )
        doc = json.loads(done.stdout)
        assert doc["executed"] is True and doc["partitions"][0]["new_offset"] == expected, flags
        if flags[0] in ("-to-earliest", "-to-offset"):  # the broker holds what was planned
            assert _committed(b, "rg") == [expected], flags
    # the group continues where it was reset to
    assert cli(b, "consume", "-topic", "resets", "-group", "rg").stdout.count("\n") == 10
    one_line_error(
        cli(b, "groups", "-reset-offsets", "rg", "-topic", "resets", check=False),
        2,
        "exactly one of -to-earliest",
    )


def test_active_group_is_neither_reset_nor_deleted(server: BrokerProcess) -> None:
    b = server.address
    cli(b, "produce", "-topic", "busy", "-message", "x", "-count", "2")
    env = {**os.environ, "SENTINEL_BROKER": b}
    follower = subprocess.Popen(
        [*CLI, "consume", "-topic", "busy", "-group", "ag", "-follow"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:

        def joined() -> bool:
            proc = cli(b, "groups", "-describe", "ag", "-json", check=False)
            return proc.returncode == 0 and bool(json.loads(proc.stdout)["members"])

        wait_for(joined, "the follower to join group ag", timeout=DEADLINE_S)
        reset = cli(
            b, "groups", "-reset-offsets", "ag", "-topic", "busy", "-to-earliest", check=False
        )
        one_line_error(reset, 1, "has 1 active member")
        one_line_error(cli(b, "groups", "-delete", "ag", check=False), 1, "1 active member")
        # the broker refuses too (not only the CLI's own check)
        with Admin(b) as admin, pytest.raises(client_errors.NonEmptyGroupError):
            admin.alter_group_offsets("ag", {TopicPartition("busy", 0): 0})
    finally:
        follower.send_signal(signal.SIGINT)
        follower.communicate(timeout=CLI_TIMEOUT_S)
    assert follower.returncode == 0
    listed = lambda: "ag" in cli(b, "groups", "-list").stdout  # noqa: E731
    wait_for(listed, "the group to be listed", timeout=DEADLINE_S)
    assert cli(b, "groups", "-delete", "ag").stdout == "deleted group ag\n"
    assert "ag" not in [
        g["group_id"] for g in json.loads(cli(b, "groups", "-json").stdout)["groups"]
    ]
    one_line_error(cli(b, "groups", "-delete", "ag", check=False), 1, "unknown group 'ag'")


# --- topics: configs, delete records ---------------------------------------------------------


def test_topic_configs_and_delete_records(server: BrokerProcess) -> None:
    b = server.address
    created = cli(b, "topics", "-create", "conf", "-partitions", "1")
    assert "created topic conf (1 partition)" in created.stdout
    cli(b, "topics", "-alter", "conf", "-config", "max.message.bytes=200")
    described = json.loads(cli(b, "topics", "-describe", "conf", "-json").stdout)
    assert described["configs"]["max.message.bytes"] == "200"
    # applied to the live partition at once
    big = cli(b, "produce", "-topic", "conf", "-message", "x" * 500, check=False)
    assert big.returncode == 1 and "not stored" in big.stderr
    cli(b, "topics", "-alter", "conf", "-delete-config", "max.message.bytes")
    cli(b, "produce", "-topic", "conf", "-message", "x" * 500)
    one_line_error(
        cli(b, "topics", "-alter", "conf", "-config", "retention.ms=soon", check=False),
        1,
        "not an integer",
    )
    one_line_error(
        cli(b, "topics", "-alter", "conf", "-config", "no.such=1", check=False),
        1,
        "unknown topic config 'no.such'",
    )
    one_line_error(
        cli(b, "topics", "-alter", "conf", "-partitions", "1", check=False),
        1,
        "has 1 partition; the new total",
    )
    # delete records
    cli(b, "produce", "-topic", "conf", "-message", "r", "-count", "9")
    gone = cli(b, "topics", "-delete-records", "conf", "-partition", "0", "-before", "4")
    assert gone.stdout == "deleted the records of conf/0 below offset 4\n"
    assert cli(b, "consume", "-topic", "conf", "-print-offset").stdout.splitlines()[0] == "4\tr"
    one_line_error(
        cli(
            b, "topics", "-delete-records", "conf", "-partition", "0", "-before", "99", check=False
        ),
        1,
        "offset 99 is outside the log's range [4, 10]",
    )
    one_line_error(
        cli(b, "topics", "-delete-records", "conf", check=False), 2, "-partition P and -before"
    )


def test_configs_survive_a_restart(start_broker: Callable[..., BrokerProcess]) -> None:
    broker = start_broker()
    cli(broker.address, "topics", "-create", "kept")
    cli(broker.address, "topics", "-alter", "kept", "-config", "retention.ms=12345")
    broker.restart()
    described = json.loads(cli(broker.address, "topics", "-describe", "kept", "-json").stdout)
    assert described["configs"]["retention.ms"] == "12345"


# --- the tool itself ------------------------------------------------------------------------


def test_version_help_and_broker_spelling(server: BrokerProcess, tmp_path: Path) -> None:
    version = cli(None, "--version").stdout
    assert version.startswith("sentinel-cli, version ")
    server_version = subprocess.run(
        [sys.executable, "-m", "sentinel.cli.server", "--version"],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=True,
    ).stdout
    assert server_version.startswith("sentinel-server, version ")
    bare = cli(None)
    assert "Commands:" in bare.stdout and "consume" in bare.stdout
    # -broker before the subcommand (no SENTINEL_BROKER in the environment)
    cli(server.address, "topics", "-create", "early")
    listed = cli(None, "-broker", server.address, "topics", "-list").stdout
    assert "early" in listed
    unresolvable = cli(None, "topics", "-broker", "nosuchhost.invalid", check=False)
    one_line_error(unresolvable, 1, "cannot reach broker at nosuchhost.invalid:9092")
    assert "]" not in unresolvable.stderr


def test_shell_completion() -> None:
    env = {
        **os.environ,
        "_SENTINEL_CLI_COMPLETE": "bash_complete",
        "COMP_WORDS": "sentinel-cli consume --from",
        "COMP_CWORD": "2",
    }
    done = subprocess.run(
        [sys.executable, "-m", "sentinel.cli.main"],
        capture_output=True,
        text=True,
        env=env,
        timeout=CLI_TIMEOUT_S,
        check=True,
    )
    assert "--from-beginning" in done.stdout
