"""The outside attack that found a record stored twice, as a test: three brokers, six
partitions of replication factor 3, a confluent-kafka idempotent acks=all producer
under load, SIGTERM to all three brokers at once, all three restarted, every record
read back. Every acknowledged record is stored exactly once, and no record twice.

What went wrong (``broker/replicated_partition``'s docstring): a stopping leader
refused a batch NOT_LEADER (its hand-off was under way) and stayed leader when the
hand-off failed (the others were stopping too); the producer's next batch heard
OUT_OF_ORDER_SEQUENCE, librdkafka bumped its epoch and re-sent what it had in flight,
one batch of which another partition had already stored.

The attack saw that in about one trial in ten; this test, on the machine it was
written on, did not: 31 rounds against the unfixed broker all passed (the refusals
happened, some 30 a round, but the hand-offs completed before a pipelined batch's
0.25 s wait ended, so no OUT_OF_ORDER_SEQUENCE was answered). It stays as a guard of
the property under that storm; the deterministic test of the rule is
``test_replicated_producer_order``. ``SIGTERM_ALL_ROUNDS=N`` runs N rounds (one by
default, ~18 s).

It also guards the stop itself: every broker exits 0 within ``EXIT_BOUND_S`` of the
SIGTERM, under the producer and then again with none running, and comes back with its
data. Each broker used to wait ~10 s: its hand-off to the others (which refuse it: they
are stopping) for its 2 s bound, then its Kafka door's grace (8 s) for a produce in
flight whose commit needed peers that had exited (``cluster/clean_stop``). Exits took
0.2-0.9 s after the fix on a 2-core machine (eight rounds, with and without a producer),
2.2-2.9 s or ~10.5 s before it; 5 s leaves room for a slow CI machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cluster.harness import Cluster
from cluster.test_cluster_e2e import Acks, producer, read_partition

ROUNDS = int(os.environ.get("SIGTERM_ALL_ROUNDS", "1"))
PARTITIONS = 6
#: Records acknowledged before the SIGTERM: the producer is in full flow by then.
ACKED_BEFORE = 3_000
#: Records produced after the restart (the producer resumes under the same epoch).
AFTER = 2_000
PHASE_TIMEOUT_S = 30.0
#: Every broker exits within this of the SIGTERM (the module docstring says why 5 s).
EXIT_BOUND_S = 5.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(3, tmp_path).start()
    yield cluster
    cluster.close()


class Load:
    """One idempotent acks=all producer writing distinct numbers as fast as it can."""

    def __init__(self, bootstrap: str) -> None:
        self.acks = Acks()
        self.out = producer(bootstrap, **{
            "linger.ms": 1, "batch.num.messages": 20, "queue.buffering.max.messages": 2_000,
        })
        self.sent = 0

    def produce_while(self, going: Callable[[], bool], what: str) -> None:
        """Produce until ``going()`` is false (checked every 50 records); fail after
        ``PHASE_TIMEOUT_S`` naming ``what`` was awaited."""
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while going():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            for _ in range(50):
                value = b"%d" % self.sent
                try:
                    self.out.produce("attack", key=value, value=value, on_delivery=self.acks)
                except BufferError:  # the local queue is full: serve delivery reports
                    self.out.poll(0.05)
                    break
                self.sent += 1
            self.out.poll(0.001)


class Stop:
    """SIGTERM to every broker at once (no wait between them), and when each exited."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.exits: dict[int, tuple[float, int]] = {}  # node id -> (seconds, exit code)
        self.started = time.monotonic()
        for i in cluster.node_ids:
            proc = cluster.brokers[i].proc
            assert proc is not None
            proc.terminate()

    def running(self) -> bool:
        """Whether a broker still runs (the exits seen are noted with their time)."""
        for i, broker in self.cluster.brokers.items():
            code = None if broker.proc is None else broker.proc.poll()
            if code is not None and i not in self.exits:
                self.exits[i] = (time.monotonic() - self.started, code)
        return len(self.exits) < len(self.cluster.brokers)

    def wait(self) -> None:
        """Wait for every broker to exit (no producer runs meanwhile)."""
        deadline = self.started + PHASE_TIMEOUT_S
        while self.running():
            assert time.monotonic() < deadline, "timed out waiting for the brokers to stop"
            time.sleep(0.01)

    def check(self) -> None:
        """Every broker exited 0 within ``EXIT_BOUND_S``; else its stop's log lines."""
        bad = {i: e for i, e in self.exits.items() if e[0] > EXIT_BOUND_S or e[1] != 0}
        logs = "\n".join(
            f"broker {i}: {stop_log(self.cluster.brokers[i].read_log())}" for i in bad
        )
        assert not bad, f"(seconds, exit code) after SIGTERM: {self.exits}\n{logs}"


def stop_log(text: str) -> str:
    """The lines a broker logged from its stop on (the stacks of what it waited for)."""
    at = text.rfind("sentinel.server.app: stopping")
    return text[max(at, 0):][-20_000:]


def restart_all(cluster: Cluster) -> None:
    """Reap every exited broker, then launch all three and wait for each one's ready
    line."""
    for broker in cluster.brokers.values():
        broker.kill()  # reaps and closes its pipes (the process is gone)
    for broker in cluster.brokers.values():
        broker.launch()
    for broker in cluster.brokers.values():
        broker.wait_ready()


def read_all(cluster: Cluster) -> tuple[dict[bytes, tuple[int, int]], list[object]]:
    """Every record of the topic, by value: (partition, offset), and the values stored
    twice (value, first, second)."""
    stored: dict[bytes, tuple[int, int]] = {}
    twice: list[object] = []
    for partition in range(PARTITIONS):
        for offset, value in read_partition(cluster.kafka_bootstrap(), "attack", partition):
            if value in stored:
                twice.append((value, stored[value], (partition, offset)))
            stored[value] = (partition, offset)
    return stored, twice


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_sigterm_of_all_brokers_stores_no_record_twice(cluster: Cluster, round_: int) -> None:
    cluster.wait_formed()
    cluster.create_topic("attack", partitions=PARTITIONS, replication_factor=3)
    load = Load(cluster.kafka_bootstrap())
    load.produce_while(lambda: len(load.acks.acked) < ACKED_BEFORE, "the first acks")
    stop = Stop(cluster)  # and the producer keeps producing while they stop
    load.produce_while(stop.running, "the brokers to stop")
    stop.check()
    restart_all(cluster)
    resumed = load.sent
    load.produce_while(lambda: load.sent < resumed + AFTER, "the records after the restart")
    assert load.out.flush(90) == 0, "records still unanswered after the restart"
    acked = load.acks.acked

    stored, twice = read_all(cluster)
    assert twice == [], f"{len(twice)} records stored twice (value, first, second): {twice[:5]}"
    lost = [v for v in acked if v not in stored]
    assert lost == [], f"{len(lost)} acknowledged records lost, first {lost[:5]}"
    assert len(acked) > ACKED_BEFORE, load.acks.failed

    # Once more with no producer: an idle cluster stopped whole stops as promptly, and
    # every broker comes back with the records it had.
    idle = Stop(cluster)
    idle.wait()
    idle.check()
    restart_all(cluster)
    assert read_all(cluster) == (stored, [])
