"""A start on a disk that is still full serves what was acknowledged.

A real ``sentinel-server`` on a 24 MiB tmpfs: records are produced with acks=all to many
partitions at once (large values held as pointers into the WAL, small ones copied into
the broker-wide journal), a group commits offsets, the disk is filled to the last byte
by a file of the operator's, and the broker is stopped by SIGTERM or killed with
``kill -9``. Started again on the still-full disk, it must be ready, serve every
acknowledged record and the committed offsets, and refuse produces with the typed,
retriable ``KAFKA_STORAGE_ERROR``, as a broker whose disk fills while it runs does.
Once the operator's file is gone, writes resume by themselves, and a restart after that
finds everything acknowledged before and after. Mounting needs root (as here and in
CI); without it the test is skipped (the in-process engine tests in
``test_disk_full_open.py`` cover the same opens on an injected full disk)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import kafka.errors
import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from metrics_polling import wait_for
from sentinel.client import Admin, Consumer, Producer, TopicPartition, errors
from test_disk_full_e2e import broker_on
from tmpfs_mount import tmpfs

WAIT_S = 40.0  # a full tmpfs and the broker's retry backoff make the waits long
TOPICS = {"big": 3, "small": 8}
PARTITIONS = [(t, p) for t, n in TOPICS.items() for p in range(n)]
GROUP = "readers"
Acked = dict[tuple[str, int, int], bytes]  # (topic, partition, offset) -> value


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "size=24m") as disk:
        if disk is None:
            pytest.skip("mounting a tmpfs needs root")
        yield disk


def produce_wave(producer: Producer, acked: Acked, tag: str) -> int:
    """One wave to every partition at once (so several partitions append together and
    the journal takes the small ones); returns how many the broker refused."""
    sent: list[tuple[str, int, bytes, Future[object]]] = []
    for topic, partitions in TOPICS.items():
        size = 40_000 if topic == "big" else 300
        for p in range(partitions):
            value = f"{tag}-{topic}-{p}-".encode().ljust(size, b"v")
            sent.append((topic, p, value, producer.send(topic, value, partition=p)))
    refused = 0
    for topic, p, value, future in sent:
        try:
            metadata = future.result(timeout=30)
        except errors.KafkaStorageError:
            refused += 1
            continue
        acked[(topic, p, metadata.offset)] = value  # type: ignore[attr-defined]
    return refused


def fill_disk(disk: Path) -> Path:
    """A file of the operator's that takes every free byte of ``disk``."""
    filler = disk / "operator-filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (1 << 20, 4096, 1):
            block = b"\0" * chunk
            with pytest.raises(OSError):
                for _ in range(64 << 20):
                    os.write(fd, block)
    finally:
        os.close(fd)
    return filler


def read_everything(address: str) -> Acked:
    found: Acked = {}
    with Admin(address) as admin:
        ends = {(t, p): admin.list_offsets(t, p).offset for t, p in PARTITIONS}
    with Consumer(address, enable_auto_commit=False, auto_offset_reset="earliest") as c:
        c.assign([TopicPartition(t, p) for (t, p) in ends])
        c.seek_to_beginning()
        seen = {key: 0 for key in ends}
        deadline = time.monotonic() + WAIT_S
        while any(seen[key] < end for key, end in ends.items()):
            if time.monotonic() > deadline:
                pytest.fail(f"read {seen} of {ends}")
            for record in c.poll(0.5):
                found[(record.topic, record.partition, record.offset)] = record.value or b""
                seen[(record.topic, record.partition)] = record.offset + 1
    return found


def assert_kept(acked: Acked, found: Acked) -> None:
    lost = [key for key, value in acked.items() if found.get(key) != value]
    assert not lost, f"acknowledged records lost or changed: {sorted(lost)[:10]}"


def committed(address: str) -> dict[tuple[str, int], int | None]:
    with Consumer(address, group_id=GROUP, enable_auto_commit=False) as c:
        return {(t, p): c.committed(TopicPartition(t, p)) for t, p in PARTITIONS}


@pytest.mark.parametrize("stop", ["kill", "term"])
def test_a_start_on_a_full_disk_serves_reads_refuses_writes_and_resumes(
    small_disk: Path, tmp_path: Path, stop: str
) -> None:
    broker = broker_on(small_disk, tmp_path)
    acked: Acked = {}
    try:
        with Admin(broker.address) as admin:
            for topic, partitions in TOPICS.items():
                admin.create_topic(topic, partitions=partitions)
        with Producer(broker.address, acks="all", linger_ms=0, retries=0,
                      enable_idempotence=False) as producer:  # fmt: skip
            for wave in range(12):
                assert produce_wave(producer, acked, f"w{wave}") == 0
            offsets = {(t, p): 1 + max(o for (t2, p2, o) in acked if (t2, p2) == (t, p))
                       for t, p in PARTITIONS}  # fmt: skip
            with Consumer(broker.address, group_id=GROUP, enable_auto_commit=False) as c:
                c.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
            for wave in range(6):  # after the commit: these sit in WALs and the journal
                assert produce_wave(producer, acked, f"x{wave}") == 0
            filler = fill_disk(small_disk)
            # What the filler left (blocks a WAL had reserved) is taken by produces.
            wait_for(
                lambda: produce_wave(producer, acked, "last") == sum(TOPICS.values()),
                "every produce refused on the full disk",
                timeout=WAIT_S,
            )
        if stop == "kill":
            broker.kill()
        else:
            assert broker.stop() == 0, broker.read_log()[-3000:]

        # The disk is still full: the start serves anyway.
        broker.start()
        assert_kept(acked, read_everything(broker.address))
        assert committed(broker.address) == offsets
        with Producer(broker.address, linger_ms=0, retries=0, enable_idempotence=False) as p:
            # (Cutting torn tails may have freed a few pages: those fill first.)
            wait_for(
                lambda: produce_wave(p, acked, "full") == sum(TOPICS.values()),
                "every produce refused on the still-full disk",
                timeout=WAIT_S,
            )
            # New topics and partitions need files: refused typed by both doors (the
            # Kafka door's connection stays open), nothing half-made.
            with Admin(broker.address) as admin:
                with pytest.raises(errors.KafkaStorageError):
                    admin.create_topic("new", partitions=2)
                with pytest.raises(errors.KafkaStorageError):
                    admin.create_partitions("small", 12)
                assert "new" not in admin.list_topics()
            kafka_admin = KafkaAdminClient(bootstrap_servers=broker.kafka_address)
            try:
                with pytest.raises(kafka.errors.KafkaStorageError):
                    kafka_admin.create_topics([NewTopic("new", 2, 1)])
                assert "new" not in kafka_admin.list_topics()
            finally:
                kafka_admin.close()
            assert "Traceback" not in broker.read_log(), broker.read_log()[-3000:]

            # Space back: writes resume by themselves, in every partition.
            filler.unlink()
            wait_for(
                lambda: produce_wave(p, acked, "after") == 0, "writes resume", timeout=WAIT_S
            )
        assert broker.stop() == 0, broker.read_log()[-3000:]
        broker.start()
        assert_kept(acked, read_everything(broker.address))
        assert committed(broker.address) == offsets
        assert broker.stop() == 0
        log = broker.read_log()
        assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
    finally:
        broker.kill()
