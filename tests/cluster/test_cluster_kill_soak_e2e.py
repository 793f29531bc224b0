"""kill -9 at random moments of a three-broker cluster, round after round.

One cluster of real ``sentinel-server`` processes (``cluster.harness``) lives through
every round. Each round creates a topic ``soak-<round>`` (three partitions, replication
factor 3) and runs these at once:

- a Kafka producer (librdkafka through the Kafka door, acks=all, no idempotence, no
  retries: each value is sent at most once);
- a gRPC producer (``sentinel.client.Producer``, acks=all, idempotent with retries: the
  broker must store each value at most once however often it is re-sent);
- commits of group ``soak``'s offsets from outside group membership (generation -1),
  sent to whichever broker accepts them (the group's coordinator).

Meanwhile the round SIGKILLs brokers at random moments, one of: the leader of a random
partition, a follower of one, any broker, or two brokers one after the other (the
cluster has no quorum until one comes back). Each is started again on its data
directory and ports; sometimes that start is itself killed at a random moment of its
recovery first. Every start must reach its ready line (a refusal is a fault: the
failure shows the broker's log).

Once the writers stopped and every broker is up, the round waits (deadlines, no sleeps)
until every partition of every topic so far has a leader and every broker reports the
same log end and high watermark for each (``__consumer_offsets`` too), then checks
everything acknowledged in any round so far, read from each partition's leader: every
acknowledged record at its offset with its value, no gap in the offsets, no value
twice, the idempotent producer's values in the order sent; every acknowledged commit
kept (or a later one sent); and no ``Traceback`` in any broker's log. At the end the
cluster is stopped (every broker must exit 0) and each broker's own copy of every
partition, read from its data directory, must equal what the leader served.

What it found: records of the librdkafka producer stored twice though it never retries.
A broker restarted after kill -9 answered its first Metadata requests listing only
itself; librdkafka then dropped its connections to the live brokers and re-sent what was
in flight there, already committed (``test_cluster_restart_metadata_e2e``).

The default is a few rounds (~45 s); the long run is one command away:
``CLUSTER_SOAK_ROUNDS=30 .venv/bin/pytest tests/cluster/test_cluster_kill_soak_e2e.py``
(``CLUSTER_SOAK_SEED`` repeats a run; every round prints the seed and what it killed).
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from confluent_kafka import KafkaError, Message
from confluent_kafka import Producer as KafkaProducer

from cluster.harness import Cluster, poll
from cluster.test_cluster_e2e import HIGH_WATERMARK, LOG_END, read_replica
from metrics_polling import scrape
from sentinel.client import Producer
from sentinel.client.errors import SentinelClientError
from sentinel.cluster.offsets_topic import OFFSETS_TOPIC
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.record import decode_records, iter_batches, parse_header

ROUNDS = int(os.environ.get("CLUSTER_SOAK_ROUNDS", "3"))
SEED = int(os.environ.get("CLUSTER_SOAK_SEED", str(random.SystemRandom().randrange(1 << 31))))
PARTITIONS = 3
GROUP = "soak"
#: Writers run this long before the first kill, and again after the last restart.
BEFORE_KILL_S = (0.3, 2.0)
AFTER_RESTART_S = (0.3, 1.5)
#: A killed broker stays down this long (two killed: the second this long after the first).
DOWN_S = (0.2, 2.5)
#: How long a broker restarted and killed again during its recovery runs first.
RECOVERY_KILL_S = (0.05, 1.5)
#: Waits for the cluster: a leader everywhere, the replicas converged, a read answered.
SETTLE_TIMEOUT_S = 120.0
#: Reasons a commit is refused before anything is written (safe to send elsewhere).
REFUSED_UNWRITTEN = {"NOT_COORDINATOR", "COORDINATOR_LOAD_IN_PROGRESS",
                     "COORDINATOR_NOT_AVAILABLE"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(3, tmp_path).start()
    yield cluster
    cluster.close()


@dataclass
class Seen:
    """What the cluster acknowledged over every round (what must survive every kill)."""

    records: dict[tuple[str, int], dict[int, bytes]] = field(default_factory=dict)
    unplaced: set[tuple[str, bytes]] = field(default_factory=set)  # acked, offset unknown
    failed: dict[bytes, str] = field(default_factory=dict)  # value -> the error reported
    commits: dict[tuple[str, int], int] = field(default_factory=dict)  # acknowledged
    commits_tried: dict[tuple[str, int], int] = field(default_factory=dict)  # highest sent
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        with self.lock:
            if offset < 0:
                self.unplaced.add((topic, value))
            else:
                self.records.setdefault((topic, partition), {})[offset] = value


def _value(tag: bytes, seq: int, rng: random.Random) -> bytes:
    """``<tag>-<seq>-<padding>``: unique per writer, its order readable back."""
    return b"%s-%08d-" % (tag, seq) + rng.randbytes(rng.randrange(16, 400))


def _seq(value: bytes) -> tuple[bytes, int]:
    tag, seq, _ = value.split(b"-", 2)
    return tag, int(seq)


def _kafka_writer(cluster: Cluster, topic: str, tag: bytes, seen: Seen,
                  rng: random.Random, stop: threading.Event) -> None:
    out = KafkaProducer({
        "bootstrap.servers": cluster.kafka_bootstrap(), "acks": "all",
        "enable.idempotence": False, "retries": 0, "linger.ms": 5,
        "message.timeout.ms": 5000, "socket.timeout.ms": 5000,
        "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 200,
        "topic.metadata.refresh.interval.ms": 1000,
    })

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is None:
            partition, offset, value = message.partition(), message.offset(), message.value()
            assert partition is not None and offset is not None and value is not None
            seen.record(topic, partition, offset, value)
        else:
            value = message.value()
            assert value is not None
            with seen.lock:
                seen.failed[value] = error.name()

    seq = 0
    deadline = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            out.produce(topic, _value(tag, seq, rng), on_delivery=delivered)
        except BufferError:
            out.poll(0.05)
            continue
        seq += 1
        if seq % 20 == 0:
            out.poll(0.01)  # a steady stream (~1,000 a second), not everything at once
    out.flush(15)  # the casualties fail within message.timeout.ms


def _grpc_writer(cluster: Cluster, topic: str, tag: bytes, seen: Seen,
                 rng: random.Random, stop: threading.Event) -> None:
    out = Producer(
        bootstrap_servers=[cluster.grpc_address(i) for i in cluster.node_ids],
        acks="all", linger_ms=5, retries=5, retry_backoff_ms=200,
        request_timeout_ms=5000, max_block_ms=5000,
    )

    def delivered(future: object) -> None:
        try:
            metadata = future.result()  # type: ignore[attr-defined]
        except SentinelClientError as error:
            with seen.lock:
                seen.failed[sent[id(future)]] = repr(error)[:200]
            return
        seen.record(topic, metadata.partition, metadata.offset, sent[id(future)])

    sent: dict[int, bytes] = {}
    futures = []
    seq = 0
    deadline = time.monotonic() + 60
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            value = _value(tag, seq, rng)
            try:
                future = out.send(topic, value)
            except SentinelClientError:
                time.sleep(0.05)
                continue
            sent[id(future)] = value
            futures.append(future)  # (kept: the id stays unique)
            future.add_done_callback(delivered)
            seq += 1
            if seq % 20 == 0:
                time.sleep(0.02)
        with contextlib.suppress(SentinelClientError):
            out.flush(20)  # what is still unanswered is not acknowledged
    finally:
        out.close(5)


def _reason(error: grpc.RpcError) -> str:
    for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == "sentinel-error":
            return str(value)
    return ""


def _rpc(cluster: Cluster, i: int, method: str, request: object, timeout: float = 4.0) -> object:
    channel, stub = cluster.stub(i)
    with channel:
        return getattr(stub, method)(request, timeout=timeout)


def _committer(cluster: Cluster, topic: str, seen: Seen, rng: random.Random,
               stop: threading.Event) -> None:
    """Commits of increasing offsets, each to whichever broker takes it. After an
    outcome unknown (a timeout, a broker killed mid-call) that partition gets no more
    commits this round: a later commit could be overtaken by the unknown one."""
    unknown: set[tuple[str, int]] = set()
    deadline = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < deadline:
        stop.wait(0.02)
        key = (topic, rng.randrange(PARTITIONS))
        if key in unknown:
            continue
        with seen.lock:
            offset = seen.commits_tried.get(key, 0) + rng.randrange(1, 50)
            seen.commits_tried[key] = offset
        request = pb.CommitOffsetsRequest(
            group_id=GROUP, generation=-1,
            offsets=[pb.PartitionOffset(topic=topic, partition=key[1], offset=offset)],
        )
        for i in rng.sample(cluster.node_ids, len(cluster.node_ids)):
            try:
                _rpc(cluster, i, "CommitOffsets", request)
            except grpc.RpcError as error:
                details = error.details() or ""  # type: ignore[attr-defined]
                if _reason(error) in REFUSED_UNWRITTEN or "failed to connect" in details:
                    continue
                unknown.add(key)
                break
            with seen.lock:
                seen.commits[key] = max(seen.commits.get(key, 0), offset)
            break


def _leader(cluster: Cluster, topic: str, partition: int) -> int | None:
    """The leader a live broker names now, or None (no waiting)."""
    for i in cluster.live_ids():
        try:
            response = cluster.metadata(i, [topic])
        except grpc.RpcError:
            continue
        for info in response.topics:
            for part in info.partitions:
                if info.name == topic and part.partition == partition and part.leader > 0:
                    return int(part.leader)
    return None


def _restart(cluster: Cluster, victims: list[int], rng: random.Random,
             log: list[str]) -> None:
    """Start ``victims`` again (launched together: a broker may wait for a peer), some
    of them killed once during their recovery first; each must reach ready."""
    for i in victims:
        cluster.brokers[i].launch()
    for i in victims:
        if rng.random() < 0.25:
            time.sleep(rng.uniform(*RECOVERY_KILL_S))
            cluster.kill(i)
            log.append(f"killed {i} in its recovery")
            cluster.brokers[i].launch()
    for i in victims:
        cluster.brokers[i].wait_ready()  # raises with the broker's log if it does not start
    log.append(f"restarted {victims}")


def _chaos(cluster: Cluster, topic: str, rng: random.Random) -> list[str]:
    """One kill scenario at random moments; every broker is up again when it returns.
    Returns what it did, for the failure messages."""
    log: list[str] = []
    time.sleep(rng.uniform(*BEFORE_KILL_S))
    scenario = rng.choice(["leader", "follower", "any", "two"])
    partition = rng.randrange(PARTITIONS)
    try:  # a new topic's first election may still be under way
        leader: int | None = cluster.leader_of(topic, partition, timeout=5)
    except AssertionError:
        leader = None
    if scenario == "leader" and leader is not None:
        first = leader
    elif scenario == "follower" and leader is not None:
        first = rng.choice([i for i in cluster.node_ids if i != leader])
    else:
        first = rng.choice(cluster.node_ids)
    cluster.kill(first)
    log.append(f"{scenario}: killed {first} (leader of {topic}/{partition}: {leader})")
    time.sleep(rng.uniform(*DOWN_S))
    victims = [first]
    if scenario == "two":
        second = rng.choice([i for i in cluster.node_ids if i != first])
        cluster.kill(second)
        log.append(f"killed {second}: no quorum")
        victims.append(second)
        time.sleep(rng.uniform(*DOWN_S))
        rng.shuffle(victims)
        if rng.random() < 0.5:  # one back, a quorum again, the other later
            _restart(cluster, victims[:1], rng, log)
            time.sleep(rng.uniform(*DOWN_S))
            victims = victims[1:]
    _restart(cluster, victims, rng, log)
    time.sleep(rng.uniform(*AFTER_RESTART_S))
    return log


def _topics(seen: Seen) -> list[str]:
    return sorted({topic for topic, _ in seen.records} | {t for t, _ in seen.unplaced})


def _figures(cluster: Cluster, i: int) -> dict[tuple[str, str, int], float]:
    """Broker ``i``'s per-partition log end and high watermark: (name, topic, partition)."""
    figures: dict[tuple[str, str, int], float] = {}
    for key, value in scrape(cluster.brokers[i]).items():
        name, _, labels = key.partition("{")
        if name in (LOG_END, HIGH_WATERMARK):
            pairs = dict(item.split("=", 1) for item in labels.rstrip("}").split(","))
            figures[name, pairs["topic"].strip('"'), int(pairs["partition"].strip('"'))] = value
    return figures


def _converged(cluster: Cluster, partitions: list[tuple[str, int]]) -> bool | None:
    """Every broker reports the same log end and high watermark for every partition."""
    try:
        samples = [_figures(cluster, i) for i in cluster.node_ids]
    except OSError:
        return None
    for topic, partition in partitions:
        for name in (LOG_END, HIGH_WATERMARK):
            values = {sample.get((name, topic, partition)) for sample in samples}
            if len(values) != 1 or None in values:
                return None
    return True


@dataclass
class Served:
    """One partition as its leader served it: the records (offset, value), and the
    offsets each batch took (control batches, the leaders' markers, take offsets too)."""

    records: list[tuple[int, bytes]]
    spans: list[tuple[int, int]]  # (base offset, last offset) of every batch
    log_start: int
    high_watermark: int


def _read(cluster: Cluster, topic: str, partition: int) -> Served:
    """Every batch of one partition below its high watermark, from the broker that
    answers (its leader; the others refuse), retried until one answers in full."""

    def attempt() -> Served | None:
        leader = _leader(cluster, topic, partition)
        if leader is None:
            return None
        channel, stub = cluster.stub(leader)
        served = Served([], [], -1, -1)
        offset = 0
        with channel:
            try:
                for _ in range(100_000):  # each fetch moves on by at least one batch
                    answer = stub.Fetch(pb.FetchRequest(topic=topic, partition=partition,
                                                        offset=offset, max_bytes=4 << 20),
                                        timeout=10)
                    if served.log_start < 0:
                        served.log_start = answer.log_start_offset
                    served.high_watermark = answer.high_watermark
                    for view in iter_batches(answer.record_batches):
                        header = parse_header(view)
                        served.spans.append((header.base_offset, header.last_offset))
                        if not header.is_control:
                            served.records += [(r.offset, r.value or b"")
                                               for r in decode_records(view)]
                    if answer.next_offset <= offset or answer.next_offset >= answer.high_watermark:
                        return served
                    offset = answer.next_offset
            except grpc.RpcError:
                return None
        return None

    return poll(attempt, f"a read of {topic}/{partition} from its leader", SETTLE_TIMEOUT_S)


def _gaps(served: Served) -> list[tuple[int, int]]:
    """The offset ranges no batch covers between the log start and the high watermark."""
    gaps = []
    at = served.log_start
    for base, last in served.spans:
        if base != at:
            gaps.append((at, base))
        at = last + 1
    if at != served.high_watermark:
        gaps.append((at, served.high_watermark))
    return gaps


def _offsets_partitions(cluster: Cluster) -> int:
    for info in cluster.metadata(cluster.node_ids[0], [OFFSETS_TOPIC]).topics:
        if info.name == OFFSETS_TOPIC:
            return len(info.partitions)
    raise AssertionError(f"no topic {OFFSETS_TOPIC} in the metadata")


def _committed(cluster: Cluster, keys: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    topics = sorted({t for t, _ in keys})
    request = pb.FetchOffsetsRequest(group_id=GROUP, partitions=[
        pb.TopicPartitions(topic=t, partitions=sorted(p for u, p in keys if u == t))
        for t in topics
    ])

    def attempt() -> dict[tuple[str, int], int] | None:
        for i in cluster.live_ids():
            try:
                answer = _rpc(cluster, i, "FetchOffsets", request)
            except grpc.RpcError:
                continue
            return {(o.topic, o.partition): o.offset
                    for o in answer.offsets}  # type: ignore[attr-defined]
        return None

    return poll(attempt, f"group {GROUP}'s coordinator to answer", SETTLE_TIMEOUT_S)


def _settle(cluster: Cluster, seen: Seen, where: str) -> None:
    """Wait until every partition has a leader and every replica the same log end and
    high watermark (``__consumer_offsets`` too)."""
    partitions = [(t, p) for t in _topics(seen) for p in range(PARTITIONS)]
    for topic, partition in partitions:
        cluster.leader_of(topic, partition, timeout=SETTLE_TIMEOUT_S)
    partitions += [(OFFSETS_TOPIC, p) for p in range(_offsets_partitions(cluster))]
    poll(lambda: _converged(cluster, partitions), f"{where}: replicas to converge",
         SETTLE_TIMEOUT_S)


def _fate(seen: Seen, topic: str, value: bytes) -> str:
    """What the producer was told of ``value``: for a failure message."""
    acked = [(p, o) for (t, p), records in seen.records.items() if t == topic
             for o, v in records.items() if v == value]
    return f"acknowledged at {acked}, failed: {seen.failed.get(value)}"


def _check(cluster: Cluster, seen: Seen, where: str) -> dict[tuple[str, int], list[bytes]]:
    """Everything acknowledged so far, read from the leaders; returns what they served."""
    served: dict[tuple[str, int], list[bytes]] = {}
    for topic in _topics(seen):
        everywhere: dict[bytes, tuple[int, int]] = {}
        for partition in range(PARTITIONS):
            read = _read(cluster, topic, partition)
            stored = read.records
            served[topic, partition] = [v for _, v in stored]
            at = dict(stored)
            for offset, value in seen.records.get((topic, partition), {}).items():
                got = at.get(offset)
                assert got == value, (
                    f"{where}: {topic}/{partition} offset {offset}: acknowledged "
                    f"{value[:16]!r}..., stored {None if got is None else got[:16]}"
                )
            assert _gaps(read) == [], (
                f"{where}: {topic}/{partition}: offsets no batch holds (from, to): "
                f"{_gaps(read)}; log start {read.log_start}, high watermark "
                f"{read.high_watermark}"
            )
            last: dict[bytes, int] = {}
            for offset, value in stored:
                assert value not in everywhere, (
                    f"{where}: {topic}: {value[:16]!r} stored twice: "
                    f"{everywhere[value]} and {(partition, offset)}; {_fate(seen, topic, value)}"
                )
                everywhere[value] = (partition, offset)
                tag, seq = _seq(value)
                # librdkafka sends again what a broker refused NOT_LEADER (or what was in
                # flight to a broker it dropped) after what it sent since: without
                # idempotence, order holds for our idempotent producer only.
                assert tag != b"g" or seq > last.get(tag, -1), (
                    f"{where}: {topic}/{partition} offset {offset}: {value[:16]!r} after "
                    f"{tag!r} {last.get(tag)} (out of the order sent)"
                )
                last[tag] = seq
        for unplaced_topic, value in seen.unplaced:
            if unplaced_topic == topic:
                assert value in everywhere, f"{where}: {topic}: acknowledged {value[:16]!r} lost"
    keys = sorted(seen.commits)
    if keys:
        found = _committed(cluster, keys)
        for key in keys:
            got, acked, tried = found.get(key, -1), seen.commits[key], seen.commits_tried[key]
            assert acked <= got <= tried, (
                f"{where}: group {GROUP} {key}: committed {got}, acknowledged {acked} "
                f"(highest sent {tried})"
            )
    for i in cluster.node_ids:
        log = cluster.brokers[i].read_log()
        assert "Traceback" not in log, f"{where}: broker {i} logged a traceback:\n{log[-20000:]}"
    return served


def _run_round(cluster: Cluster, seen: Seen, round_: int, rng: random.Random) -> list[str]:
    topic = f"soak-{round_}"
    cluster.create_topic(topic, partitions=PARTITIONS, replication_factor=3)
    stop = threading.Event()
    writers: list[tuple[Callable[..., None], tuple[object, ...]]] = [
        (_kafka_writer, (cluster, topic, b"k", seen, random.Random(rng.random()), stop)),
        (_grpc_writer, (cluster, topic, b"g", seen, random.Random(rng.random()), stop)),
        (_committer, (cluster, topic, seen, random.Random(rng.random()), stop)),
    ]
    threads = [threading.Thread(target=f, args=a, daemon=True) for f, a in writers]
    for thread in threads:
        thread.start()
    try:
        return _chaos(cluster, topic, rng)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
            assert not thread.is_alive(), f"a writer of round {round_} hangs"


@pytest.mark.slow
@pytest.mark.timeout(120 + 90 * ROUNDS)
def test_kill_9_of_brokers_at_random_moments_loses_nothing_acknowledged(
    cluster: Cluster,
) -> None:
    rng = random.Random(SEED)
    seen = Seen()
    cluster.wait_formed()
    served: dict[tuple[str, int], list[bytes]] = {}
    for round_ in range(ROUNDS):
        round_seed = rng.randrange(1 << 31)
        where = f"seed {SEED} round {round_} (round seed {round_seed})"
        print(where, flush=True)  # shown with a failure, whatever fails
        events = _run_round(cluster, seen, round_, random.Random(round_seed))
        where += ": " + "; ".join(events)
        print(where, flush=True)
        assert cluster.live_ids() == cluster.node_ids, f"{where}: a broker died"
        _settle(cluster, seen, where)
        served = _check(cluster, seen, where)
    assert sum(map(len, seen.records.values())) > 0, "nothing was acknowledged"

    # Each broker's own copy of every partition is what the leaders served.
    cluster.stop()
    for i in cluster.node_ids:
        for (topic, partition), values in sorted(served.items()):
            replica = [v for _, v in read_replica(cluster.root / f"n{i}", topic, partition)]
            assert replica == values, f"seed {SEED}: broker {i}: {topic}/{partition} differs"
