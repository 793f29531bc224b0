"""A real ``sentinel-server`` on a real 24 MiB tmpfs, filled up: producers get
KAFKA_STORAGE_ERROR (``KafkaStorageError``), reads go on, DeleteTopic frees space, writes
resume after space returns (a deleted topic, or a file the operator removed), nothing
acknowledged is lost (across a restart too), the log does not grow per request, and
SIGTERM on a full disk exits 0. Mounting needs root (as here and in CI); without it the
same broker-level scenario runs in-process on an injected ENOSPC filesystem."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker_process import BrokerProcess
from metrics_polling import wait_for
from sentinel.broker.service import BrokerService
from sentinel.client import Admin, Consumer, Producer, TopicPartition, errors
from sentinel.clock import ManualClock
from sentinel.config import BrokerConfig
from sentinel.errors import StorageUnavailableError
from sentinel.record import build_batch
from test_disk_full import FullFS
from tmpfs_mount import tmpfs

VALUE = 64 * 1024
WAIT_S = 40.0  # a full tmpfs and the broker's retry backoff make the waits long
Acked = dict[int, bytes]  # offset -> value


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path | None]:
    """A 24 MiB tmpfs (None if this process may not mount); always unmounted."""
    with tmpfs(tmp_path / "disk", "size=24m") as disk:
        yield disk


def broker_on(disk: Path, log_dir: Path) -> BrokerProcess:
    """A started broker whose data is on ``disk`` and whose log is not (in ``log_dir``),
    with 1 MiB memtables so that flushes come soon."""
    broker = BrokerProcess(disk / "data", memtable_mb=1)
    broker.log_path = log_dir / "server.log"
    return broker.start()


def send(producer: Producer, topic: str, value: bytes) -> int | None:
    """The offset, or None when the broker refused it for storage."""
    try:
        return producer.send(topic, value, partition=0).result(timeout=30).offset
    except errors.KafkaStorageError:
        return None


def fill(producer: Producer, topic: str, acked: Acked, tag: str, limit: int = 1000) -> int:
    """Produce until the disk is full; returns how many were acknowledged."""
    for i in range(limit):
        value = f"{tag}-{i}-".encode().ljust(VALUE, b"x")
        offset = send(producer, topic, value)
        if offset is None:
            return i
        acked[offset] = value
    pytest.fail(f"{limit} records of {VALUE} bytes fitted on a 24 MiB disk")


def read_all(address: str, topic: str, until: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    with Consumer(address, enable_auto_commit=False, auto_offset_reset="earliest") as c:
        c.assign([TopicPartition(topic, 0)])
        c.seek_to_beginning()
        deadline = time.monotonic() + 30
        while not found or max(found) < until - 1:
            if time.monotonic() > deadline:
                pytest.fail(f"read up to {max(found, default=-1)} of {until - 1}")
            for record in c.poll(0.5):
                found[record.offset] = record.value or b""
    return found


def assert_kept(acked: Acked, found: dict[int, bytes]) -> None:
    lost = [o for o, v in acked.items() if found.get(o) != v]
    assert not lost, f"acknowledged records lost or changed at offsets {lost[:10]}"


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def test_full_tmpfs_broker_refuses_typed_frees_on_delete_resumes_and_stops_clean(
    small_disk: Path | None, tmp_path: Path
) -> None:
    if small_disk is None:  # no mount: the same story in-process, on an injected FS
        in_process_scenario()
        return
    spare_a, spare_b = small_disk / "operator-spare-a", small_disk / "operator-spare-b"
    spare_a.write_bytes(b"\0" * (3 << 20))
    spare_b.write_bytes(b"\0" * (2 << 20))
    broker = broker_on(small_disk, tmp_path)
    acked: Acked = {}
    try:
        with Admin(broker.address) as admin:
            admin.create_topic("t", partitions=1)
            admin.create_topic("big", partitions=1)
        producer = Producer(broker.address, retries=0, linger_ms=0, enable_idempotence=False)
        with producer:
            big: Acked = {}
            for i in range(140):  # ~9 MiB that DeleteTopic will give back
                offset = send(producer, "big", f"big-{i}".encode().ljust(VALUE, b"b"))
                assert offset is not None
                big[offset] = b""
            assert fill(producer, "t", acked, "first") > 0

            # Full: every produce is refused, typed; the log does not grow per request.
            log_before = broker.read_log()
            for _ in range(30):
                assert send(producer, "t", b"refused".ljust(VALUE, b"r")) is None
            grown = broker.read_log()[len(log_before) :]
            assert "Traceback" not in broker.read_log()
            assert len(grown.splitlines()) <= 3, grown
            assert "WARNING" in broker.read_log() and "No space left" in broker.read_log()
            # Reads of everything acknowledged go on.
            assert_kept(acked, read_all(broker.address, "t", max(acked) + 1))

            # The operator frees space some other way: writes resume by themselves.
            spare_a.unlink()
            offset = wait_for(
                lambda: send(producer, "t", b"after-spare".ljust(VALUE, b"s")),
                "resume",
                timeout=WAIT_S,
            )
            acked[offset] = b"after-spare".ljust(VALUE, b"s")
            assert fill(producer, "t", acked, "second") >= 0

            # DeleteTopic works on a full disk and frees space; writes resume.
            before = free_bytes(small_disk)
            with Admin(broker.address) as admin:
                admin.delete_topic("big")
                assert "big" not in admin.list_topics()
            assert free_bytes(small_disk) > before + (8 << 20)
            value = b"after-delete".ljust(VALUE, b"d")
            offset = wait_for(
                lambda: send(producer, "t", value), "resume after delete", timeout=WAIT_S
            )
            acked[offset] = value
            fill(producer, "t", acked, "third")
            assert_kept(acked, read_all(broker.address, "t", max(acked) + 1))

        # SIGTERM on a full disk: a clean stop, exit 0, no traceback.
        assert broker.stop() == 0, broker.read_log()[-3000:]
        assert "Traceback" not in broker.read_log(), broker.read_log()[-3000:]

        # A start on the still-full disk serves.
        assert_start_on_a_full_disk(small_disk / "data")

        # Space back, restart: everything acknowledged is there.
        spare_b.unlink()
        broker.start()
        assert_kept(acked, read_all(broker.address, "t", max(acked) + 1))
        with Producer(broker.address, retries=0, linger_ms=0) as producer:
            assert send(producer, "t", b"after-restart") is not None
        assert broker.stop() == 0
        assert "Traceback" not in broker.read_log(), broker.read_log()[-3000:]
    finally:
        broker.kill()


def assert_start_on_a_full_disk(data_dir: Path) -> None:
    """``sentinel-server`` on the full ``data_dir`` is ready (then stopped: exit 0, no
    traceback): a start puts off what it would write (``test_disk_full_start_e2e``)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentinel.cli.server", "--host", "127.0.0.1", "--port", "0",
         "--kafka-port", "0", "--metrics-port", "0", "--data", str(data_dir),
         "--memtable-mb", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        first = proc.stdout.readline()  # the ready line, or "" once it exited
        if "sentinel-server ready" in first:
            proc.terminate()
        _out, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "sentinel-server ready" in first, err
    assert proc.returncode == 0 and "Traceback" not in err, err


def in_process_scenario() -> None:
    """The broker's side of the story on ``FullFS``: produce refused with the
    partition named, DeleteTopic with a full meta store, resume, clean stop."""

    async def run() -> None:
        fs = FullFS()
        config = BrokerConfig(data_dir="/data")
        service = BrokerService(config, fs, ManualClock())
        await service.start()
        await service.create_topic("t", 1)
        await service.create_topic("big", 1)
        batch = build_batch([(b"k", b"v" * 100, (), 1_700_000_000_000)])
        first = await service.produce("t", 0, batch)
        fs.full()
        with pytest.raises(StorageUnavailableError) as refused:
            await service.produce("t", 0, batch)
        assert refused.value.partition == "t-0"
        fetched = await service.fetch("t", 0, first.base_offset, 1 << 20)
        assert fetched.batches

        def full_until_big_is_gone(path: str, _op: str) -> bool:
            return fs.exists("/data/topics/big") and not path.startswith("/data/topics/t/")

        fs.refuse = full_until_big_is_gone
        await service.delete_topic("big")  # the meta store is full too: files freed, retried
        assert service.registry.find("big") is None
        fs.space_back()
        service.partition_log("t", 0).engine.resume()
        await service.produce("t", 0, batch)
        fs.full()
        await service.stop()  # a full disk: no exception

    asyncio.run(run())


def test_in_process_broker_on_an_injected_full_disk() -> None:
    in_process_scenario()
