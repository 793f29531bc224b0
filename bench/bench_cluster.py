"""The cluster's speed (issue 8, Speed): three real brokers on loopback.

    .venv/bin/python bench/bench_cluster.py            # ~4 minutes
    .venv/bin/python bench/bench_cluster.py --quick    # fewer records and trials

(a) produce MB/s with 1 KiB records: a three-broker cluster (topic of 4 partitions,
    replication factor 3) with acks=all against a single broker (no --peers) with
    acks=1, interleaved (cluster, single, cluster, single), both driven by the same
    client: ``kafka_producer.c`` (librdkafka; linger.ms=5, batch.size=1000000) if it
    builds, else confluent-kafka from Python with the same settings. Timed from outside.
(b) fail-over: a topic of 1 partition, rf 3; a confluent-kafka producer with acks=all
    writes a small record every ~5 ms; the partition's leader is killed with kill -9;
    the figure is the time from the kill to the first acknowledgement of a record
    produced after it. Ten trials on one cluster: the killed broker is restarted and
    caught up (its commit index at the leader's, leadership back on the preferred replica)
    before the next. Also: kill to the first survivor reporting itself leader.
(c) idle CPU: a fresh three-broker cluster, 10 topics of 100 partitions (rf 3); once
    every partition has a leader and leadership settled, each broker's CPU seconds
    (user + system) over 10 s, as percent of one core.

Every broker is a real ``sentinel-server`` (defaults: ``--sync always``,
``--raft-tick-ms 100``). Figures are JSON lines; ``peer`` is the same run's
comparison figure (the single broker, or the issue's target).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psutil
from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).parent))

from _common import emit
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc
from sentinel.testing.ports import pick_ports
from sentinel.testing.process import BrokerProcess

BENCH = "cluster"
HOST = "127.0.0.1"
SIZE = 1024
PRODUCE_CONFIG = {"linger.ms": "5", "batch.size": "1000000"}
LEADER = 3.0  # sentinel_raft_role
T = TypeVar("T")


def poll(check: Callable[[], T | None], what: str, timeout: float, every: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_cluster: timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5).read().decode()
    figures = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            figures[name] = float(value)
    return figures


def labelled(figures: dict[str, float], metric: str) -> list[tuple[dict[str, str], float]]:
    found = []
    for key, value in figures.items():
        name, _, rest = key.partition("{")
        if name == metric:
            pairs = (item.split("=", 1) for item in rest.rstrip("}").split(",") if item)
            found.append(({k: v.strip('"') for k, v in pairs}, value))
    return found


class Brokers:
    """``size`` brokers under ``root``: a cluster (node ids 1..size, --peers) or, with
    ``size`` 1 and ``alone``, a single broker without --peers."""

    def __init__(self, root: Path, size: int, *, alone: bool = False) -> None:
        root.mkdir(parents=True, exist_ok=True)
        ids = list(range(1, size + 1))
        ports = pick_ports(4 * size)  # outside the ephemeral range: restarts reuse them
        raft = {i: ports.pop() for i in ids}
        peers = ",".join(f"{i}@{HOST}:{raft[i]}" for i in ids)
        self.brokers: dict[int, BrokerProcess] = {}
        for i in ids:
            flags: dict[str, object] = {
                "port": ports.pop(), "kafka_port": ports.pop(), "metrics_port": ports.pop(),
            }
            if not alone:
                flags.update(node_id=i, peers=peers)
            self.brokers[i] = BrokerProcess(root / f"n{i}", None, **flags)

    def start(self) -> Brokers:
        for b in self.brokers.values():
            b.launch()
        for b in self.brokers.values():
            b.wait_ready()
        return self

    def close(self) -> None:
        for b in self.brokers.values():
            if b.proc is not None:
                b.kill()

    @property
    def live(self) -> list[int]:
        return [i for i, b in self.brokers.items() if b.proc is not None]

    def bootstrap(self) -> str:
        return ",".join(self.brokers[i].kafka_address for i in self.live)

    def metrics(self, i: int) -> dict[str, float]:
        return scrape(self.brokers[i].metrics_port)

    def create_topic(self, name: str, partitions: int, rf: int) -> None:
        def attempt() -> bool | None:
            for i in self.live:
                with grpc.insecure_channel(self.brokers[i].grpc_address) as channel:
                    stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
                    try:
                        stub.CreateTopic(pb.CreateTopicRequest(
                            name=name, partitions=partitions, replication_factor=rf,
                        ), timeout=30)
                        return True
                    except grpc.RpcError as error:
                        if error.code() == grpc.StatusCode.ALREADY_EXISTS:
                            return True
            return None

        poll(attempt, f"topic {name} created", 60, every=0.2)

    def leaders(self, topic_prefix: str) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the live broker reporting itself leader."""
        found = {}
        for i in self.live:
            for labels, role in labelled(self.metrics(i), "sentinel_raft_role"):
                if role == LEADER and labels["topic"].startswith(topic_prefix):
                    found[labels["topic"], int(labels["partition"])] = i
        return found

    def wait_leaders(self, topic_prefix: str, count: int, timeout: float = 60) -> None:
        poll(lambda: True if len(self.leaders(topic_prefix)) >= count else None,
             f"{count} partitions of {topic_prefix}* with a leader", timeout, every=0.2)

    def replicas(self, topic: str, partition: int) -> tuple[int, ...]:
        i = self.live[0]
        with grpc.insecure_channel(self.brokers[i].grpc_address) as channel:
            stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
            response = stub.FetchMetadata(pb.MetadataRequest(topics=[topic]), timeout=10)
        for info in response.topics:
            for part in info.partitions:
                if part.partition == partition:
                    return tuple(part.replicas)
        return ()


# ---------------------------------------------------------------------- (a) produce


def c_producer(directory: str) -> str | None:
    """``kafka_producer.c`` built against librdkafka (as bench_kafka), or None."""
    binary = os.path.join(directory, "kafka_producer")
    cc = shutil.which("cc")
    if cc is None or not os.path.exists("/usr/include/librdkafka/rdkafka.h"):
        return None
    source = str(Path(__file__).with_name("kafka_producer.c"))
    built = subprocess.run([cc, "-O2", "-o", binary, source, "-lrdkafka"], check=False)
    return binary if built.returncode == 0 else None


def produce_seconds(producer: str | None, bootstrap: str, topic: str, count: int,
                    acks: str) -> float:
    configs = {**PRODUCE_CONFIG, "acks": acks}
    start = time.perf_counter()
    if producer is not None:
        done = subprocess.run(
            [producer, bootstrap, topic, str(count), str(SIZE),
             *(f"{k}={v}" for k, v in configs.items())],
            capture_output=True, check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"kafka_producer failed: {done.stderr.decode()[-2000:]}")
    else:
        failed: list[Any] = []

        def report(error: Any, _msg: Any) -> None:
            if error is not None:
                failed.append(error)

        p = Producer({"bootstrap.servers": bootstrap, **configs})
        value = os.urandom(SIZE)
        for _ in range(count):
            while True:
                try:
                    p.produce(topic, value, on_delivery=report)
                    break
                except BufferError:
                    p.poll(0.001)
        p.flush(120)
        if failed:
            raise SystemExit(f"python producer: {len(failed)} failed, first {failed[0]}")
    return time.perf_counter() - start


def bench_produce(root: Path, count: int, rounds: int) -> None:
    producer = c_producer(str(root))
    client = "kafka_producer.c" if producer is not None else "confluent-kafka (Python)"
    cluster = Brokers(root / "produce-cluster", 3).start()
    single = Brokers(root / "produce-single", 1, alone=True).start()
    try:
        rates: dict[str, list[float]] = {"cluster": [], "single": []}
        for r in range(rounds):
            for kind, brokers, acks, rf in (("cluster", cluster, "all", 3),
                                            ("single", single, "1", 1)):
                topic = f"produce-{kind}-{r}"
                brokers.create_topic(topic, 4, rf)
                if kind == "cluster":
                    brokers.wait_leaders(topic, 4)
                s = produce_seconds(producer, brokers.bootstrap(), topic, count, acks)
                rates[kind].append(count * SIZE / s / 1e6)
        cl, si = statistics.median(rates["cluster"]), statistics.median(rates["single"])
        extra = {"size": SIZE, "partitions": 4, "messages": count, "client": client,
                 "rounds": [round(x, 1) for x in rates["cluster"]],
                 "peer_rounds": [round(x, 1) for x in rates["single"]]}
        emit(BENCH, "produce_1KiB_3brokers_acks_all_mbs", cl, "MB/s", peer=round(si, 3),
             peer_is="single broker, acks=1", **extra)
        emit(BENCH, "produce_1KiB_cluster_vs_single_ratio", cl / si, "ratio", peer=0.5,
             peer_is="target (at least)")
    finally:
        cluster.close()
        single.close()


# ---------------------------------------------------------------------- (b) fail-over


class Writer(threading.Thread):
    """A confluent-kafka producer (acks=all) writing a small record every ~5 ms; keeps
    (sent, acknowledged, error) of each record."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.topic = topic
        self.producer = Producer({
            "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
            "linger.ms": 0, "message.timeout.ms": 60_000, "retry.backoff.ms": 20,
            "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 100,
            "log_level": 0,  # the kills' disconnects are expected
        })
        self.acks: list[tuple[float, float, Any]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            sent = time.monotonic()
            self.producer.produce(self.topic, b"r%d" % n, on_delivery=self._done(sent))
            n += 1
            self.producer.poll(0.005)
        self.producer.flush(60)

    def _done(self, sent: float) -> Callable[[Any, Any], None]:
        def done(error: Any, _msg: Any) -> None:
            self.acks.append((sent, time.monotonic(), error))
        return done

    def first_ack_after(self, t: float) -> float | None:
        times = [acked for sent, acked, err in list(self.acks) if err is None and sent >= t]
        return min(times) if times else None


def bench_failover(root: Path, trials: int) -> None:
    topic = "failover"
    cluster = Brokers(root / "failover", 3).start()
    writer: Writer | None = None
    try:
        cluster.create_topic(topic, 1, 3)
        cluster.wait_leaders(topic, 1)
        writer = Writer(cluster.bootstrap(), topic)
        writer.start()
        w = writer
        poll(lambda: w.first_ack_after(time.monotonic() - 0.5), "the writer's first ack", 30)
        failover, election = [], []
        for _ in range(trials):
            settle(cluster, topic)
            leader = poll(lambda: cluster.leaders(topic).get((topic, 0)), "a leader", 30)
            survivors = [i for i in cluster.live if i != leader]
            poll(lambda: w.first_ack_after(time.monotonic() - 0.2), "a steady writer", 30)
            proc = cluster.brokers[leader].proc
            assert proc is not None
            t_kill = time.monotonic()
            proc.kill()
            elected: float | None = None
            while (acked := w.first_ack_after(t_kill)) is None:
                if elected is None and any(
                    role == LEADER and labels["topic"] == topic
                    for i in survivors
                    for labels, role in labelled(cluster.metrics(i), "sentinel_raft_role")
                ):
                    elected = time.monotonic()
                if time.monotonic() - t_kill > 60:
                    raise SystemExit("bench_cluster: no acknowledgement 60 s after the kill")
                time.sleep(0.01)
            failover.append(acked - t_kill)
            election.append((elected or acked) - t_kill)
            cluster.brokers[leader].kill()  # reap
            cluster.brokers[leader].start()
            caught_up(cluster, topic, leader)
        failed = sum(1 for _, _, err in w.acks if err is not None)
        extra = {"trials": trials, "all": [round(x, 3) for x in failover], "failed": failed}
        emit(BENCH, "failover_median_s", statistics.median(failover), "s", peer=2.0,
             peer_is="target median", **extra)
        emit(BENCH, "failover_max_s", max(failover), "s", peer=None, trials=trials)
        emit(BENCH, "election_median_s", statistics.median(election), "s", peer=None,
             peer_is="kill to a survivor's sentinel_raft_role=3 (polled)",
             all=[round(x, 3) for x in election])
    finally:
        if writer is not None:
            writer.stopping.set()
            writer.join(70)
        cluster.close()


def caught_up(cluster: Brokers, topic: str, node: int) -> None:
    """``node`` is back: its commit index reached the leader's as of now (the writer
    keeps writing, so the leader's lag for it is rarely exactly 0)."""
    def commit_of(i: int) -> float | None:
        for labels, value in labelled(cluster.metrics(i), "sentinel_raft_commit_index"):
            if labels["topic"] == topic:
                return value
        return None

    leader = poll(lambda: cluster.leaders(topic).get((topic, 0)), f"a leader of {topic}", 30)
    target = commit_of(leader) or 0.0
    poll(lambda: True if (commit_of(node) or -1.0) >= target else None,
         f"broker {node} caught up on {topic}", 60, every=0.1)


def settle(cluster: Brokers, topic: str) -> None:
    """Wait (a few seconds at most) for leadership back on the preferred replica, so
    that no balancing transfer races the next kill."""
    preferred = cluster.replicas(topic, 0)[:1]
    if not preferred:
        return
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        if cluster.leaders(topic).get((topic, 0)) == preferred[0]:
            return
        time.sleep(0.1)


# ---------------------------------------------------------------------- (c) idle CPU


def controller_commit(cluster: Brokers) -> float | None:
    """Broker 1's commit index of the controller's log (``__cluster_metadata``-0)."""
    for labels, value in labelled(cluster.metrics(1), "sentinel_raft_commit_index"):
        if labels.get("topic") == "__cluster_metadata":
            return value
    return None


def settle_idle(cluster: Brokers, quiet_s: float = 3.0, limit_s: float = 60.0) -> float:
    """Wait until the cluster is idle: the controller's log has not moved for
    ``quiet_s`` (after the partitions' first elections every leader reports itself to
    the controller, and leadership moves back to preferred replicas, which reports
    again: that is start-up work, not idle cost). Returns the seconds waited."""
    started = time.monotonic()
    last, since = controller_commit(cluster), time.monotonic()
    while time.monotonic() - started < limit_s:
        time.sleep(0.5)
        now = controller_commit(cluster)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return time.monotonic() - started


def bench_idle(root: Path, topics: int, partitions: int, seconds: float) -> None:
    cluster = Brokers(root / "idle", 3).start()
    try:
        started = time.monotonic()
        for t in range(topics):
            cluster.create_topic(f"idle-{t}", partitions, 3)
        cluster.wait_leaders("idle-", topics * partitions, timeout=120)
        ready = time.monotonic() - started
        settle_s = settle_idle(cluster)
        procs = {}
        for i, b in cluster.brokers.items():
            assert b.proc is not None
            procs[i] = psutil.Process(b.proc.pid)
        before = {i: p.cpu_times() for i, p in procs.items()}
        t0 = time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - t0
        after = {i: p.cpu_times() for i, p in procs.items()}
        shares = {}
        for i in procs:
            used = (after[i].user - before[i].user) + (after[i].system - before[i].system)
            shares[i] = 100.0 * used / wall
            emit(BENCH, f"idle_cpu_broker{i}_pct", shares[i], "% of one core", peer=10.0,
                 peer_is="target (under)", partitions=topics * partitions, rf=3,
                 window_s=round(wall, 1))
        emit(BENCH, "idle_cpu_max_pct", max(shares.values()), "% of one core", peer=10.0,
             peer_is="target (under)", partitions=topics * partitions,
             create_to_all_leaders_s=round(ready, 1), settle_s=round(settle_s, 1))
    finally:
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["produce", "failover", "idle"])
    args = parser.parse_args()
    count, trials = (20_000, 3) if args.quick else (150_000, 10)
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-cluster-") as tmp:
        root = Path(tmp)
        if args.only in (None, "produce"):
            bench_produce(root, count, 2)
        if args.only in (None, "failover"):
            bench_failover(root, trials)
        if args.only in (None, "idle"):
            bench_idle(root, 10, 100, 10.0)


if __name__ == "__main__":
    main()
