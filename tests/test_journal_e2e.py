"""The broker's journal in a real sentinel-server: acknowledged appends after kill -9,
a partition WAL that lost its unsynced tail (a power cut) redone from the journal, a
damaged journal refused with one line (or set aside with ``--skip-damaged``), a clean
stop that leaves no journal to replay, and a partition appending alone that skips it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc

from broker_process import BrokerProcess
from metrics_polling import scrape
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc
from sentinel.storage.wal_format import HEADER_SIZE
from test_damage_e2e import assert_one_line_refusal, consume, produce, run_server

Start = Callable[..., BrokerProcess]
# More partitions than skip the journal together (4): their appends are journaled.
PARTITIONS = 6
RECORDS = 12


def value(partition: int, n: int) -> bytes:
    return b"p%d-%02d-" % (partition, n) + b"x" * 200


def write_round_robin(stub: pb_grpc.SentinelStub) -> None:
    """Topic ``j`` of 6 partitions, 12 acknowledged records each, round-robin."""
    stub.CreateTopic(pb.CreateTopicRequest(name="j", partitions=PARTITIONS))
    for n in range(RECORDS):
        for partition in range(PARTITIONS):
            produce(stub, "j", partition, value(partition, n))


def populate(start_broker: Start) -> BrokerProcess:
    """``write_round_robin`` on a new broker; then kill -9."""
    broker = start_broker()
    with grpc.insecure_channel(broker.address) as channel:
        write_round_robin(pb_grpc.SentinelStub(channel))  # type: ignore[no-untyped-call]
    broker.kill()
    return broker


def assert_all_served(broker: BrokerProcess) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        for partition in range(PARTITIONS):
            expected = [value(partition, n) for n in range(RECORDS)]
            assert consume(stub, "j", partition) == expected


def journal_segments(broker: BrokerProcess) -> list[Path]:
    return sorted((broker.data_dir / "journal").glob("*.wal"))


def test_every_acknowledged_append_is_served_after_kill_9(start_broker: Start) -> None:
    broker = populate(start_broker)
    assert journal_segments(broker)  # the kill left the journal to replay
    broker.start()
    assert_all_served(broker)
    assert broker.stop() == 0
    assert journal_segments(broker) == []  # a clean stop leaves nothing to replay


def test_a_partition_wal_that_lost_its_tail_is_redone_from_the_journal(
    start_broker: Start,
) -> None:
    broker = populate(start_broker)
    # A power cut: the partitions' WALs were never fsynced for these appends (the
    # journal was), so their unsynced tails may be gone. Cut them to the header.
    for partition in range(PARTITIONS):
        wal = max((broker.data_dir / "topics" / "j" / str(partition)).glob("*.wal"))
        wal.write_bytes(wal.read_bytes()[:HEADER_SIZE])
    broker.start()
    assert_all_served(broker)
    assert "entries from the journal its WAL had lost" in broker.read_log()
    assert broker.stop() == 0


def test_a_damaged_journal_refuses_the_start_and_skip_damaged_sets_it_aside(
    start_broker: Start,
) -> None:
    broker = populate(start_broker)
    segment = journal_segments(broker)[0]
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x20  # inside an entry, with whole entries after it
    segment.write_bytes(bytes(data))
    line = assert_one_line_refusal(run_server(broker.data_dir), "journal")
    assert "--skip-damaged" in line
    assert segment.read_bytes() == bytes(data)  # refused, nothing changed
    broker.flags["skip-damaged"] = True
    broker.start()
    assert "the journal is damaged" in broker.read_log()
    assert (broker.data_dir / "journal.damaged-1").is_dir()
    # The kill left every append in the partitions' own WALs (the OS had them): the
    # journal set aside cost nothing here.
    assert_all_served(broker)
    assert broker.stop() == 0


def test_verify_reads_the_journal_and_reports_its_damage(start_broker: Start) -> None:
    broker = populate(start_broker)
    clean = run_server(broker.data_dir, "--verify")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    segment = journal_segments(broker)[0]
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x20
    segment.write_bytes(bytes(data))
    damaged = run_server(broker.data_dir, "--verify")
    assert damaged.returncode == 1
    lines = damaged.stdout.strip().splitlines()
    assert lines[0].startswith(f"DAMAGED {segment}: "), lines
    assert segment.read_bytes() == bytes(data)  # read-only


def test_no_journal_writes_none(start_broker: Start) -> None:
    broker = start_broker(journal=False)
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        stub.CreateTopic(pb.CreateTopicRequest(name="j", partitions=1))
        produce(stub, "j", 0, b"v")
    broker.kill()
    assert not (broker.data_dir / "journal").exists()


def test_a_partition_appending_alone_skips_the_journal_and_survives_kill_9(
    start_broker: Start,
) -> None:
    """Round-robin appends go through the journal; a partition that then appends alone
    for longer than ``skip_window_s`` has its entries fsynced in its own WAL instead
    (one write of the bytes, not two): both counted in the metrics, and every
    acknowledged append of both kinds is served after kill -9."""
    broker = start_broker()
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        write_round_robin(stub)
        journaled = scrape(broker)["sentinel_journal_entries_total"]
        assert journaled >= RECORDS * PARTITIONS
        alone = [b"alone-%03d" % n for n in range(200)]
        deadline = time.monotonic() + 30
        sent = 0
        # Each produce waits for its ack: 200 last far longer than the 50 ms after
        # which a partition appending alone skips the journal (bounded in time).
        while sent < len(alone) and time.monotonic() < deadline:
            produce(stub, "j", 0, alone[sent])
            sent += 1
    figures = scrape(broker)
    assert figures["sentinel_journal_skipped_total"] > 0
    broker.kill()
    broker.start()
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        expected = [value(0, n) for n in range(RECORDS)] + alone[:sent]
        assert consume(stub, "j", 0) == expected
    assert broker.stop() == 0
