"""A full disk on one broker of three (a real 24 MiB tmpfs per broker, filled up on a
follower of the partition): acks=all keeps being acknowledged by the other two, the full
broker keeps running, and once space returns it catches up; nothing acknowledged is
lost. Mounting needs root (as here and in CI)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.harness import Cluster, poll
from cluster.test_cluster_damage import converged, produce
from cluster.test_cluster_e2e import read_partition

TOPIC = "t"


def mount(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(path)],
        capture_output=True, check=False,
    ).returncode == 0  # fmt: skip


def fill(disk: Path) -> Path:
    """Write a file until the disk is full (``ENOSPC``); returns it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    mounted = [tmp_path / f"n{i}" for i in (1, 2, 3) if mount(tmp_path / f"n{i}")]
    assert len(mounted) == 3, "mounting a tmpfs needs root"
    cluster = Cluster(3, tmp_path)
    try:
        yield cluster.start()
    finally:
        cluster.close()
        for disk in mounted:
            subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_follower_leaves_acks_all_served_and_catches_up(cluster: Cluster) -> None:
    """The full follower cannot make its log durable, so it must not acknowledge: it
    stops (exit 1, one line naming the WAL and ENOSPC; not a broker left running with a
    dead Raft driver). The other two go on; restarted once space returns, it catches
    up."""
    cluster.wait_formed()
    cluster.create_topic(TOPIC, 1, 3)
    acked: dict[bytes, int] = {}
    produce(cluster, acked, "before", 50)
    full = next(i for i in cluster.node_ids if i != cluster.leader_of(TOPIC, 0))
    broker = cluster.brokers[full]
    filler = fill(cluster.root / f"n{full}")
    for round_ in range(3):  # the other two acknowledge
        produce(cluster, acked, f"full-{round_}", 50, pad=16 * 1024)
    proc = broker.proc
    assert proc is not None
    poll(proc.poll, "the full broker to stop", 30)
    assert proc.returncode == 1
    log = broker.read_log()
    broker.kill()  # reaps
    assert "Traceback" not in log, log
    lines = [ln for ln in log.splitlines() if " INFO " not in ln and " WARNING " not in ln]
    assert len(lines) == 1 and "No space left on device" in lines[0], log
    produce(cluster, acked, "meanwhile", 20)
    filler.unlink()  # space returns
    broker.start()
    poll(lambda: converged(cluster), "the full broker to catch up", 40)
    stored = dict((v, o) for o, v in read_partition(cluster.kafka_bootstrap(), TOPIC, 0))
    assert {v: o for v, o in acked.items() if stored.get(v) != o} == {}
    cluster.stop()
