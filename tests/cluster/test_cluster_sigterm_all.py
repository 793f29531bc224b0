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
STOP_TIMEOUT_S = 30.0
PHASE_TIMEOUT_S = 30.0


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


def sigterm_all(cluster: Cluster) -> None:
    """SIGTERM every broker at once (no wait between them)."""
    for i in cluster.node_ids:
        proc = cluster.brokers[i].proc
        assert proc is not None
        proc.terminate()


def any_running(cluster: Cluster) -> bool:
    return any(b.proc is not None and b.proc.poll() is None for b in cluster.brokers.values())


def restart_all(cluster: Cluster) -> None:
    """Reap every exited broker (its exit code is not judged: the attack is about the
    records), then launch all three and wait for each one's ready line."""
    for broker in cluster.brokers.values():
        broker.kill()  # reaps and closes its pipes (the process is gone)
    for broker in cluster.brokers.values():
        broker.launch()
    for broker in cluster.brokers.values():
        broker.wait_ready()


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_sigterm_of_all_brokers_stores_no_record_twice(cluster: Cluster, round_: int) -> None:
    cluster.wait_formed()
    cluster.create_topic("attack", partitions=PARTITIONS, replication_factor=3)
    load = Load(cluster.kafka_bootstrap())
    load.produce_while(lambda: len(load.acks.acked) < ACKED_BEFORE, "the first acks")
    sigterm_all(cluster)  # and the producer keeps producing while they stop
    load.produce_while(lambda: any_running(cluster), "the brokers to stop")
    restart_all(cluster)
    resumed = load.sent
    load.produce_while(lambda: load.sent < resumed + AFTER, "the records after the restart")
    assert load.out.flush(90) == 0, "records still unanswered after the restart"
    acked = load.acks.acked

    stored: dict[bytes, tuple[int, int]] = {}
    twice: list[tuple[bytes, tuple[int, int], tuple[int, int]]] = []
    for partition in range(PARTITIONS):
        for offset, value in read_partition(cluster.kafka_bootstrap(), "attack", partition):
            if value in stored:
                twice.append((value, stored[value], (partition, offset)))
            stored[value] = (partition, offset)
    assert twice == [], f"{len(twice)} records stored twice (value, first, second): {twice[:5]}"
    lost = [v for v in acked if v not in stored]
    assert lost == [], f"{len(lost)} acknowledged records lost, first {lost[:5]}"
    assert len(acked) > ACKED_BEFORE, load.acks.failed
