"""A real sentinel-server on damaged data: refused at start with one line naming the file,
or (``--skip-damaged``) serving with the damaged partition offline; ``--verify``."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from broker_process import BrokerProcess
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc
from sentinel.record import build_batch, decode_records, iter_batches
from sentinel.storage.wal_format import (
    FRAME_HEADER_SIZE,
    HEADER_SIZE,
    encode_header,
    encode_link,
    prepared_name,
)
from test_server_e2e import reason

Start = Callable[..., BrokerProcess]


def produce(stub: pb_grpc.SentinelStub, topic: str, partition: int, value: bytes) -> None:
    # Stamped now: a fixed time in the past is older than the default retention (7
    # days), and the tests' retention pass (every second) would delete the batches.
    batch = build_batch([(None, value, (), int(time.time() * 1000))])
    stub.Produce(pb.ProduceRequest(topic=topic, partition=partition, record_batches=batch))


def consume(stub: pb_grpc.SentinelStub, topic: str, partition: int) -> list[bytes]:
    response = stub.Fetch(pb.FetchRequest(topic=topic, partition=partition, offset=0))
    return [
        r.value or b""
        for view in iter_batches(response.record_batches)
        for r in decode_records(view)
    ]


def populate(start_broker: Start) -> BrokerProcess:
    """Topic ``t`` (2 partitions, 3 records each) and topic ``u``; then kill -9, so the
    records stay in the WAL (no flush, no clean shutdown)."""
    broker = start_broker()
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        stub.CreateTopic(pb.CreateTopicRequest(name="t", partitions=2))
        stub.CreateTopic(pb.CreateTopicRequest(name="u", partitions=1))
        for i in range(3):
            for partition in range(2):
                produce(stub, "t", partition, b"v%d" % i)
    broker.kill()
    return broker


def newest_wal(directory: Path) -> Path:
    return max(directory.glob("*.wal"))


def flip_first_frame(path: Path) -> None:
    """One byte in the payload of the first entry, with valid entries after it."""
    data = bytearray(path.read_bytes())
    data[HEADER_SIZE + FRAME_HEADER_SIZE + 3] ^= 0x20
    path.write_bytes(bytes(data))


def run_server(data_dir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sentinel.cli.server", "--host", "127.0.0.1", "--port", "0",
         "--metrics-port", "0", "--data", str(data_dir), *flags],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )  # fmt: skip


def assert_one_line_refusal(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 1, result.stderr
    # The refusal is one line; before it come the log lines of what recovery did.
    lines = [
        line for line in result.stderr.strip().splitlines() if " INFO " not in line
        and " WARNING " not in line
    ]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sentinel-server: data damaged: ")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_a_flipped_byte_in_a_partition_wal_refuses_the_start(start_broker: Start) -> None:
    broker = populate(start_broker)
    wal = newest_wal(broker.data_dir / "topics" / "t" / "1")
    flip_first_frame(wal)
    line = assert_one_line_refusal(run_server(broker.data_dir), str(wal), "partition t-1")
    assert "--skip-damaged" in line


def test_skip_damaged_serves_the_other_partitions(start_broker: Start) -> None:
    broker = populate(start_broker)
    flip_first_frame(newest_wal(broker.data_dir / "topics" / "t" / "1"))
    broker.flags["skip-damaged"] = True
    broker.start()
    assert "partition t-1 is OFFLINE" in broker.read_log()
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        assert consume(stub, "t", 0) == [b"v0", b"v1", b"v2"]
        produce(stub, "t", 0, b"more")
        for call in (lambda: produce(stub, "t", 1, b"x"), lambda: consume(stub, "t", 1)):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert reason(err.value) == "KAFKA_STORAGE_ERROR"
            assert "partition t-1" in str(err.value.details())  # type: ignore[attr-defined]
        metadata = stub.FetchMetadata(pb.MetadataRequest(topics=["t"]))
        assert len(metadata.topics[0].partitions) == 2
    assert broker.stop() == 0


def test_a_deleted_partition_directory_refuses_the_start(start_broker: Start) -> None:
    broker = start_broker()
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        stub.CreateTopic(pb.CreateTopicRequest(name="t", partitions=2))
        produce(stub, "t", 1, b"gone")
    assert broker.stop() == 0
    doomed = broker.data_dir / "topics" / "t" / "1"
    for path in doomed.iterdir():
        path.unlink()
    doomed.rmdir()
    assert_one_line_refusal(run_server(broker.data_dir), str(doomed), "partition t-1")
    assert not doomed.exists()  # never re-created empty


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_meta_store_wal_refuses_the_start(start_broker: Start, damage: str) -> None:
    broker = populate(start_broker)
    if damage == "flip":  # after the kill: entries follow the damaged one
        wal = newest_wal(broker.data_dir / "meta")
        flip_first_frame(wal)
    else:  # after a clean shutdown, whose record lists every segment and its size
        broker.start()
        assert broker.stop() == 0
        wal = newest_wal(broker.data_dir / "meta")
        if damage == "truncate":
            wal.write_bytes(wal.read_bytes()[: HEADER_SIZE - 5])
        else:
            wal.unlink()
    line = assert_one_line_refusal(run_server(broker.data_dir), str(wal), "meta store")
    assert "cannot be skipped" in line
    # --skip-damaged does not skip the meta store.
    assert_one_line_refusal(run_server(broker.data_dir, "--skip-damaged"), "meta store")


def test_verify_reports_damage_by_file_and_changes_nothing(start_broker: Start) -> None:
    broker = populate(start_broker)
    clean = run_server(broker.data_dir, "--verify")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "clean" in clean.stdout.splitlines()[-1]
    wal = newest_wal(broker.data_dir / "topics" / "t" / "1")
    flip_first_frame(wal)
    before = {p: p.read_bytes() for p in broker.data_dir.rglob("*") if p.is_file()}
    damaged = run_server(broker.data_dir, "--verify")
    assert damaged.returncode == 1
    lines = damaged.stdout.strip().splitlines()
    assert lines[0].startswith(f"DAMAGED {wal}: ")
    assert "1 damaged" in lines[-1]
    assert {p: p.read_bytes() for p in broker.data_dir.rglob("*") if p.is_file()} == before


def test_a_damaged_prepared_segment_after_a_kill_refuses_the_start(start_broker: Start) -> None:
    """--sync none: a kill -9 after a roll leaves the entries after it in the prepared
    segment (built here as the writer leaves it: the newest segment's second half moved
    behind a link). A flipped byte in it is refused naming it, never dropped; --verify
    lists it; --skip-damaged starts with the partition offline."""
    broker = start_broker(sync="none")
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        stub.CreateTopic(pb.CreateTopicRequest(name="t", partitions=1))
        for i in range(6):
            produce(stub, "t", 0, b"v%d" % i)
    broker.kill()
    directory = broker.data_dir / "topics" / "t" / "0"
    newest = newest_wal(directory)
    number = int(newest.name.split(".")[0])
    data = newest.read_bytes()
    cut = HEADER_SIZE
    for _ in range(3):
        cut += FRAME_HEADER_SIZE + int.from_bytes(data[cut : cut + 4], "little")
    for stale in directory.glob("*.wal.prepared"):
        stale.unlink()
    newest.write_bytes(data[:cut])
    prepared = directory / prepared_name(number + 1)
    linked = encode_header(number + 1, linked=True) + encode_link(number, cut) + data[cut:]
    prepared.write_bytes(linked[:-3] + bytes([linked[-3] ^ 0x20]) + linked[-2:])
    line = assert_one_line_refusal(run_server(broker.data_dir, "--sync", "none"), str(prepared))
    assert "partition t-0" in line and prepared.exists()
    verified = run_server(broker.data_dir, "--verify")
    assert verified.returncode == 1
    assert verified.stdout.splitlines()[0].startswith(f"DAMAGED {prepared}: ")
    broker.flags["skip-damaged"] = True
    broker.start()
    assert "partition t-0 is OFFLINE" in broker.read_log()
    assert broker.stop() == 0
