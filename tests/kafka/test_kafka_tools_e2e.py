"""The Kafka door and the tools around it, against a real ``sentinel-server``: records
produced by a Kafka client are read by ``sentinel-cli`` (through gRPC) and the other way
round, keys, headers and compression included; kcat (Debian's package, installed by the
test where it can be) produces and consumes, alone and in a consumer group.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from broker_process import BrokerProcess, module_broker


def _kcat() -> str | None:
    """Debian's kcat: on the PATH, or installed here where the test can (root with
    apt-get, bounded to two minutes); None otherwise (the kcat tests then skip)."""
    found = shutil.which("kcat")
    if found is not None or os.environ.get("SENTINEL_NO_APT"):
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["apt-get", "install", "-y", "-qq", "kcat"], capture_output=True,
                       timeout=120, check=False,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("kcat")


KCAT = _kcat()


broker = module_broker("kafka-tools")


def create(broker: BrokerProcess, topic: str, partitions: int) -> None:
    client = AdminClient({"bootstrap.servers": broker.kafka_address})  # alive until done
    client.create_topics([NewTopic(topic, partitions, 1)])[topic].result(10)


def cli(broker: BrokerProcess, *args: str, stdin: str = "") -> str:
    done = subprocess.run(
        [sys.executable, "-m", "sentinel.cli.main", *args, "--broker", broker.grpc_address],
        input=stdin, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_produced_through_kafka_consumed_with_the_cli(broker: BrokerProcess) -> None:
    create(broker, "to-cli", 3)
    producer = Producer({"bootstrap.servers": broker.kafka_address, "compression.type": "lz4",
                         "linger.ms": 5})
    sent = set()
    for i in range(60):
        key, value = f"k{i % 5}", f"value {i}"
        producer.produce("to-cli", key=key, value=value, headers=[("n", str(i).encode())])
        sent.add((key, value, str(i)))
    assert producer.flush(10) == 0
    out = cli(broker, "consume", "--topic", "to-cli", "--json", "--max-messages", "60")
    docs = [json.loads(line) for line in out.splitlines()]
    got = {(d["key"], d["value"], d["headers"][0]["value"]) for d in docs}
    assert len(docs) == 60 and got == sent
    assert all(d["headers"][0]["key"] == "n" for d in docs)


def test_produced_with_the_cli_consumed_through_kafka(broker: BrokerProcess) -> None:
    create(broker, "from-cli", 2)
    lines = [f"key-{i % 3}:line {i}" for i in range(40)]
    cli(broker, "produce", "--topic", "from-cli", "--key-delimiter", ":", "--header",
        "origin=cli", "--compression", "zstd", "--acks", "all", stdin="\n".join(lines) + "\n")
    consumer = Consumer({"bootstrap.servers": broker.kafka_address, "group.id": "unused",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition("from-cli", p, OFFSET_BEGINNING) for p in range(2)])
    got = []
    deadline = time.monotonic() + 20
    while len(got) < len(lines):
        assert time.monotonic() < deadline, got
        message = consumer.poll(0.2)
        if message is not None:
            assert message.error() is None, message.error()
            assert message.headers() == [("origin", b"cli")]
            got.append(message.key() + b":" + message.value())
    consumer.close()
    assert sorted(got) == sorted(line.encode() for line in lines)


needs_kcat = pytest.mark.skipif(
    KCAT is None, reason="kcat is not installed and could not be (Debian: apt-get install "
                         "kcat, as root); the Kafka clients from PyPI are tested without it")


def kcat(broker: BrokerProcess, *args: str, stdin: str = "") -> str:
    assert KCAT is not None
    done = subprocess.run([KCAT, "-b", broker.kafka_address, *args], input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@needs_kcat
def test_kcat_produces_and_consumes(broker: BrokerProcess) -> None:
    create(broker, "kcat", 2)
    lines = [f"k{i % 4}:message {i}" for i in range(50)]
    kcat(broker, "-P", "-t", "kcat", "-K:", "-z", "lz4", "-H", "via=kcat",
         stdin="\n".join(lines) + "\n")
    out = kcat(broker, "-C", "-t", "kcat", "-o", "beginning", "-e", "-f", "%k:%s %h\n")
    assert sorted(out.splitlines()) == sorted(f"{line} via=kcat" for line in lines)
    # What kcat wrote, our CLI reads too (through gRPC).
    docs = [json.loads(line) for line in
            cli(broker, "consume", "--topic", "kcat", "--json", "--max-messages", "50")
            .splitlines()]
    assert sorted(f"{d['key']}:{d['value']}" for d in docs) == sorted(lines)


@needs_kcat
def test_kcat_consumer_group_reads_everything_once_and_commits(broker: BrokerProcess) -> None:
    create(broker, "kcat-group", 3)
    lines = [f"record {i}" for i in range(30)]
    kcat(broker, "-P", "-t", "kcat-group", stdin="\n".join(lines) + "\n")
    args = ("-G", "kcat-readers", "-X", "auto.offset.reset=earliest", "-e", "-f", "%s\n",
            "kcat-group")
    assert sorted(kcat(broker, *args).splitlines()) == sorted(lines)
    # The group committed its offsets: the CLI sees them, and a second run reads nothing.
    assert kcat(broker, *args) == ""
    described = json.loads(cli(broker, "groups", "--json", "--describe", "kcat-readers"))
    partitions = described["partitions"]
    assert sum(p["committed_offset"] for p in partitions) == len(lines)
    assert {p["lag"] for p in partitions} == {0}
