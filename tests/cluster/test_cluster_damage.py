"""A cluster broker's data damaged while it is down (stopped cleanly, or kill -9): every
file kind of its data directory (``cluster.json``, the meta store's WAL; the engines of
``raft-state/``, ``cluster-metadata/``, a partition's Raft log ``topics/t/0/`` and
``__consumer_offsets``: their WAL, CURRENT, MANIFEST, table and clean-shutdown marker;
the broker alone's files are attacked by ``tests/test_damage*.py``) flipped at its start,
middle or end, truncated, or deleted. Required: the broker refuses to start (exit 1,
one line naming the file or its directory, no traceback), or it recovers by itself (a
torn WAL tail after kill -9: the records are fetched again from the leader) and
converges; the other two brokers keep acknowledging acks=all meanwhile, and every
acknowledged record is readable at the end.

Lean by default: each file gets one damage, rotating over the five, so every damage
meets every directory over the two passes. ``CLUSTER_DAMAGE_FULL=1`` tries every
damage on every file (~120 starts).
"""

from __future__ import annotations

import os
import selectors
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.harness import Cluster, poll
from cluster.test_cluster_e2e import LOG_END, Acks, producer, read_partition

FULL = os.environ.get("CLUSTER_DAMAGE_FULL") == "1"
DAMAGES = ("start", "mid", "end", "truncate", "delete")
OFFSETS_DIR = "topics/__consumer_offsets/0"
ENGINE_DIRS = ("raft-state", "cluster-metadata", "topics/t/0", OFFSETS_DIR)
ENGINE_FILES = ("*.wal", "CURRENT", "MANIFEST-*", "*.sst", "CLEAN_SHUTDOWN")
TOPIC = "t"
ISOLATED_S = 3.0  # a damaged replica is found as the local log replays: within a second


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(3, tmp_path_factory.mktemp("damage"), proxied=True).start()
    try:
        cluster.wait_formed()
        cluster.create_topic(TOPIC, 1, 3)
        yield cluster
    finally:
        cluster.close()


def produce(
    cluster: Cluster, acked: dict[bytes, int], prefix: str, count: int, pad: int = 0
) -> None:
    """``count`` records (``pad`` bytes more each) with acks=all through the live
    brokers; all must be acknowledged."""
    live = ",".join(f"127.0.0.1:{cluster.kafka_ports[i]}" for i in cluster.live_ids())
    acks = Acks()
    out = producer(live, **{"message.timeout.ms": 30_000})
    for n in range(count):
        value = f"{prefix}-{n}".encode() + b"." * pad
        out.produce(TOPIC, value=value, partition=0, on_delivery=acks)
    assert out.flush(40) == 0 and not acks.failed, acks.failed
    acked.update({value: at[1] for value, at in acks.acked.items()})


def damage(path: Path, how: str) -> None:
    if how == "delete":
        path.unlink()
        return
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
        return
    at = {"start": 0, "mid": len(data) // 2, "end": len(data) - 1}[how]
    data[at] ^= 0x20
    path.write_bytes(bytes(data))


def kinds() -> list[str]:
    """Every file kind of a cluster broker's data directory, as a glob under it (of
    ``__consumer_offsets``, a partition like ``t``, only what differs in content)."""
    found = ["cluster.json", "meta/*.wal"]
    found += [f"{d}/{f}" for d in ENGINE_DIRS for f in ENGINE_FILES]
    if not FULL:
        found = [k for k in found if not k.startswith(OFFSETS_DIR) or k.endswith(".wal")]
    return found


def cases(first: int) -> list[tuple[str, str]]:
    if FULL:
        return [(kind, how) for kind in kinds() for how in DAMAGES]
    return [(kind, DAMAGES[(first + k) % len(DAMAGES)]) for k, kind in enumerate(kinds())]


def one_of(data: Path, kind: str) -> Path | None:
    """The newest file of ``kind`` (None: a kill -9 left none, e.g. no table yet)."""
    found = sorted(data.glob(kind))
    return found[-1] if found else None


def converged(cluster: Cluster) -> bool | None:
    """Every broker's replica of the topic has the same log end, and every broker's
    controller log the same commit. (The topic alone is not enough: a damaged case the
    victim "recovered" from by cutting its controller log's tail must show here, where
    the leader's commit meets the shorter log, not one case later.)"""
    try:
        ends = {cluster.partition_metric(i, LOG_END, TOPIC, 0) for i in cluster.node_ids}
        commits = {
            cluster.partition_metric(i, "sentinel_raft_commit_index", "__cluster_metadata", 0)
            for i in cluster.node_ids
        }
    except OSError:  # a broker starting or stopping
        return None
    settled = len(ends) == 1 and None not in ends and len(commits) == 1 and None not in commits
    return True if settled else None


def try_start(cluster: Cluster, victim: int) -> str | None:
    """Start the victim on its damaged data: its refusal (the one line), or None once it
    runs and its replica has caught up with the others (then it is stopped cleanly: see
    below why not with kill -9)."""
    broker = cluster.brokers[victim]
    broker.log_path.write_text("")
    cluster.isolate(victim)
    broker.launch()
    proc = broker.proc
    assert proc is not None and proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    ready = False
    deadline = time.monotonic() + 30
    while not ready and proc.poll() is None and time.monotonic() < deadline:
        if selector.select(0.1):
            line = proc.stdout.readline()
            ready = "sentinel-server ready" in line
    selector.close()
    # Isolated until it has had its chance to refuse: a broker that refuses must not
    # have acknowledged anything first (the leaders would count on it, and the next
    # case, restoring the older copy, would be a replica that lost acknowledged entries).
    deadline = time.monotonic() + ISOLATED_S
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    cluster.heal()

    def outcome() -> str | None:
        if proc.poll() is not None:
            return "exited"
        return "converged" if ready and converged(cluster) else None

    what = poll(outcome, f"broker {victim} to refuse or to catch up", 30)
    if what == "converged":
        # Stopped cleanly even in the kill -9 variant: a recovered case may have cut
        # entries this replica had acknowledged (a torn-looking tail), and the leader
        # still counts them (its match for this follower is from before). The refetched
        # copies are in its log at "converged" but not yet all fsynced, so a kill -9 here
        # would leave the next case a replica that lost acknowledged entries: a refusal
        # naming that log, not the file the next case damages.
        assert broker.stop() == 0, broker.read_log()
        return None
    code = proc.wait()
    broker.kill()  # reaps, closes its pipes
    log = broker.read_log()
    assert code == 1, log
    assert "Traceback" not in log, log
    lines = [ln for ln in log.splitlines() if " INFO " not in ln and " WARNING " not in ln]
    assert len(lines) == 1, log
    return lines[0]


def attack(cluster: Cluster, killed: bool, first: int) -> None:
    acked: dict[bytes, int] = {}
    produce(cluster, acked, f"before-{killed}", 50)
    victim = next(i for i in cluster.node_ids if i != cluster.leader_of(TOPIC, 0))
    data = cluster.root / f"n{victim}"
    if killed:
        cluster.kill(victim)
    else:
        assert cluster.brokers[victim].stop() == 0
    backup = cluster.root / f"backup-{killed}"
    shutil.copytree(data, backup)
    recovered = []
    try:
        for number, (kind, how) in enumerate(cases(first)):
            shutil.rmtree(data)
            shutil.copytree(backup, data)
            damaged = one_of(data, kind)
            if damaged is None:
                assert killed, f"a clean stop left no {kind}"
                continue
            damage(damaged, how)
            line = try_start(cluster, victim)
            if line is None:
                recovered.append(f"{damaged.relative_to(data)} {how}")
                # Only what a crash may leave is recovered from: a torn WAL tail (the
                # leader sends it again) or a missing clean-shutdown marker.
                assert killed or damaged.name == "CLEAN_SHUTDOWN", recovered
                # It ran and acknowledged more: the old copy would now be a replica
                # that lost acknowledged entries (itself damage). Go on from this one.
                shutil.rmtree(backup)
                shutil.copytree(data, backup)
                continue
            assert line.startswith("sentinel-server: "), line
            named = str(damaged) if damaged.name == "cluster.json" else str(damaged.parent)
            assert named in line, f"{damaged} {how}: {line}"
            if number % 5 == 0:  # the two others acknowledge acks=all meanwhile
                produce(cluster, acked, f"{kind}-{how}-{killed}", 5)
    finally:
        shutil.rmtree(data)
        shutil.copytree(backup, data)
        shutil.rmtree(backup)
    cluster.brokers[victim].start()
    try:
        poll(lambda: converged(cluster), "the victim to catch up", 30)
    except AssertionError:
        ends = {i: cluster.partition_metric(i, LOG_END, TOPIC, 0) for i in cluster.node_ids}
        raise AssertionError(f"log ends {ends}; victim {victim}'s log:\n"
                             f"{cluster.brokers[victim].read_log()[-3000:]}") from None
    stored = dict((v, o) for o, v in read_partition(cluster.kafka_bootstrap(), TOPIC, 0))
    lost = {v: o for v, o in acked.items() if stored.get(v) != o}
    assert lost == {}, f"acknowledged records lost or moved: {list(lost)[:5]}"


def test_damage_after_a_clean_stop_is_refused_by_file(cluster: Cluster) -> None:
    attack(cluster, killed=False, first=0)


def test_damage_after_kill_9_is_refused_or_recovered(cluster: Cluster) -> None:
    attack(cluster, killed=True, first=2)


def test_skip_damaged_runs_with_the_replica_offline(cluster: Cluster) -> None:
    acked: dict[bytes, int] = {}
    victim = next(i for i in cluster.node_ids if i != cluster.leader_of(TOPIC, 0))
    broker = cluster.brokers[victim]
    assert broker.stop() == 0
    current = cluster.root / f"n{victim}" / "topics" / TOPIC / "0" / "CURRENT"
    intact = current.read_bytes()
    try:
        damage(current, "start")
        broker.flags["skip-damaged"] = True
        broker.log_path.write_text("")
        broker.start()
        # Found by the start's cheap check (CURRENT names the manifest its clean record
        # pins), or by the replica's opening: "[replica of ]partition t-0 is OFFLINE".
        poll(lambda: "partition t-0 is OFFLINE" in broker.read_log() or None,
             "the replica to be quarantined", 30)
        produce(cluster, acked, "skip", 20)  # the other two acknowledge
        assert broker.stop() == 0, broker.read_log()
        assert "Traceback" not in broker.read_log()
    finally:
        broker.flags.pop("skip-damaged", None)
        # Only the damaged file: the rest of the directory went on (other groups).
        current.write_bytes(intact)
    broker.start()
    poll(lambda: converged(cluster), "the restored replica to catch up", 30)
    stored = dict((v, o) for o, v in read_partition(cluster.kafka_bootstrap(), TOPIC, 0))
    assert all(stored.get(v) == o for v, o in acked.items())
