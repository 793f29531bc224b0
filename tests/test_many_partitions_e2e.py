"""One real broker holding 2,000 partitions (20 topics of 100, created through the
Python client): it starts, serves a produce and a fetch on every partition, restarts,
and keeps its threads and open files under the documented bounds (README, "Many
partitions"): the worker pool, the sync pipeline and the open-files limit
(``--max-open-partitions``) do not grow with the number of partitions."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import psutil
import pytest

from broker_process import BrokerProcess
from peak_fds import PeakFds
from sentinel.client import Admin
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc
from sentinel.record import build_batch, decode_records, iter_batches

TOPICS, PER_TOPIC = 20, 100
MAX_THREADS = 64
MAX_FDS = 1024


def figures(broker: BrokerProcess) -> tuple[int, int]:
    assert broker.proc is not None
    process = psutil.Process(broker.proc.pid)
    return process.num_threads(), process.num_fds()




def fetched_values(stub: pb_grpc.SentinelStub, topic: str, partition: int) -> list[bytes]:
    """Every record value of a partition, from offset 0 (one fetch)."""
    response = stub.Fetch(pb.FetchRequest(topic=topic, partition=partition, offset=0))
    return [r.value for v in iter_batches(response.record_batches) for r in decode_records(v)]


def produce_and_fetch_everywhere(stub: pb_grpc.SentinelStub, round_: int) -> None:
    """One record on every partition (the produces of a topic in flight together, so
    they share sync waves), then a fetch of each of them sees every round so far."""
    now = int(time.time() * 1000)  # (an old timestamp is retention's to delete)
    for t in range(TOPICS):
        produces = [
            stub.Produce.future(
                pb.ProduceRequest(
                    topic=f"t{t}",
                    partition=p,
                    record_batches=build_batch([(None, b"%d-%d-%d" % (t, p, round_), (), now)]),
                )
            )
            for p in range(PER_TOPIC)
        ]
        for p, future in enumerate(produces):
            assert future.result(timeout=60).base_offset == round_, (t, p)
        fetches = [
            stub.Fetch.future(pb.FetchRequest(topic=f"t{t}", partition=p, offset=0))
            for p in range(PER_TOPIC)
        ]
        for p, future in enumerate(fetches):
            response = future.result(timeout=60)
            got = [
                r.value
                for view in iter_batches(response.record_batches)
                for r in decode_records(view)
            ]
            assert got == [b"%d-%d-%d" % (t, p, r) for r in range(round_ + 1)], (t, p)


def test_two_thousand_partitions_start_serve_restart_within_bounds(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    # The common RLIMIT_NOFILE of 1,024 and the derived --max-open-partitions (256, one
    # or two files each): the broker stays under it, whatever the partitions.
    broker = start_broker(open_files=MAX_FDS, max_partitions=20_000)
    # The open files while the topics are created (several threads opening a topic's
    # new engines at once, faster than idle ones are released), not only after.
    peak = PeakFds(broker)
    with peak, Admin(broker.address) as admin:
        for t in range(TOPICS):
            admin.create_topic(f"t{t}", PER_TOPIC)
    assert 0 < peak.most < MAX_FDS - 100, peak.most
    channel = grpc.insecure_channel(broker.address)
    stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
    produce_and_fetch_everywhere(stub, 0)
    threads, fds = figures(broker)
    assert threads < MAX_THREADS and fds < MAX_FDS, (threads, fds)
    channel.close()

    assert broker.stop() == 0
    started = time.monotonic()
    broker.start()
    restart_s = time.monotonic() - started
    channel = grpc.insecure_channel(broker.address)
    stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
    produce_and_fetch_everywhere(stub, 1)
    threads, fds = figures(broker)
    assert threads < MAX_THREADS and fds < MAX_FDS, (threads, fds)
    channel.close()
    print(f"restart to ready {restart_s:.1f} s, threads {threads}, open files {fds}")
    assert broker.stop() == 0


SMALL_TOPICS, SMALL_PER_TOPIC = 3, 40


def ready_line(broker: BrokerProcess, starts: int) -> str:
    """The registry's line of the ``starts``-th start of this broker."""
    lines = [line for line in broker.read_log().splitlines() if " partitions ready in " in line]
    assert len(lines) == starts, lines
    return lines[-1]


def test_a_restart_after_a_clean_stop_opens_no_idle_partition(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    """After a clean stop every partition is checked, not opened (no file held, its
    offsets served from its clean-shutdown record); a produce or a fetch opens only its
    own. After kill -9 only the partitions opened since the clean start are recovered."""
    total = SMALL_TOPICS * SMALL_PER_TOPIC
    broker = start_broker(max_open_partitions=1000)
    with Admin(broker.address) as admin:
        for t in range(SMALL_TOPICS):
            admin.create_topic(f"s{t}", SMALL_PER_TOPIC)
    now = int(time.time() * 1000)
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        for t in range(SMALL_TOPICS):
            for p in range(SMALL_PER_TOPIC):
                batch = build_batch([(None, b"%d" % p, (), now), (None, b"x", (), now)])
                stub.Produce(pb.ProduceRequest(topic=f"s{t}", partition=p, record_batches=batch))
    _threads, fds_serving = figures(broker)
    assert broker.stop() == 0

    broker.start()
    assert f"{total} partitions ready" in (line := ready_line(broker, 2))
    assert f"{total} closed cleanly" in line and " 0 recovered" in line, line
    _threads, fds_idle = figures(broker)
    assert fds_idle < fds_serving - total // 2, (fds_idle, fds_serving)  # none opened
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        for t in range(SMALL_TOPICS):  # offsets of unopened partitions, from the record
            described = stub.DescribeTopic(pb.DescribeTopicRequest(name=f"s{t}"))
            for info in described.topic.partitions:
                assert (info.log_start_offset, info.high_watermark) == (0, 2), info
                assert info.log_end_offset == 2 and info.size_bytes > 0, info
        # The first use opens the partition: a produce and a fetch see the old records.
        batch = build_batch([(None, b"after", (), now)])
        answer = stub.Produce(pb.ProduceRequest(topic="s1", partition=7, record_batches=batch))
        assert answer.base_offset == 2
        assert fetched_values(stub, "s2", 3) == [b"3", b"x"]
    broker.kill()  # s1-7 and s2-3 were opened since the clean start: only they recover

    broker.start()
    line = ready_line(broker, 3)
    assert f"{total - 2} closed cleanly" in line and " 2 recovered" in line, line
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        assert fetched_values(stub, "s1", 7) == [b"7", b"x", b"after"]
    assert broker.stop() == 0


def test_an_open_partition_holds_one_file_and_the_data_dir_stays_locked(
    start_broker: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    """A partition in use holds its WAL segment open and nothing else (the broker holds
    the data directory's LOCK for all its engines, a manifest is open only while an edit
    is appended); a second broker on the same data directory is still refused."""
    partitions = 60
    broker = start_broker(max_open_partitions=1000)
    with Admin(broker.address) as admin:
        admin.create_topic("warm", 1)
        _threads, before = figures(broker)
        admin.create_topic("files", partitions)
    now = int(time.time() * 1000)
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        for p in range(partitions):
            batch = build_batch([(None, b"%d" % p, (), now)])
            stub.Produce(pb.ProduceRequest(topic="files", partition=p, record_batches=batch))
            fetched = stub.Fetch(pb.FetchRequest(topic="files", partition=p, offset=0))
            assert fetched.record_batches
        _threads, after = figures(broker)
    # One file per partition (a few more for sockets and the runtime, not per partition).
    assert partitions <= after - before <= partitions + 8, (before, after)

    second = BrokerProcess(broker.data_dir, **{"max-open-partitions": 1000})
    second.log_path = tmp_path / "second-server.log"
    with pytest.raises(RuntimeError, match="locked"):
        second.start()
    with grpc.insecure_channel(broker.address) as channel:  # the first one serves on
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        assert fetched_values(stub, "files", 5) == [b"5"]
    assert broker.stop() == 0


def test_after_kill_9_idle_partitions_are_checked_not_recovered(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    """Partitions whose files the open-files limit released, idle for a retention
    interval, are marked clean while the broker runs (Kafka's recovery point): after
    kill -9 the start checks them and opens them on first use, as after a clean stop,
    and recovers only the partitions used since; every record is served. A marked
    partition written again loses its mark first: after a second kill -9 it is
    recovered, with its new record."""
    partitions = 24
    broker = start_broker(max_open_partitions=2, retention_check_interval_s=0.5)
    with Admin(broker.address) as admin:
        admin.create_topic("idle", partitions)
    now = int(time.time() * 1000)
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        for p in range(partitions):
            batch = build_batch([(None, b"%d" % p, (), now)])
            stub.Produce(pb.ProduceRequest(topic="idle", partition=p, record_batches=batch))
    marks = list(broker.data_dir.glob("topics/idle/*/CLEAN_SHUTDOWN"))
    deadline = time.monotonic() + 60
    while len(marks) < partitions - 4 and time.monotonic() < deadline:
        time.sleep(0.2)
        marks = list(broker.data_dir.glob("topics/idle/*/CLEAN_SHUTDOWN"))
    assert len(marks) >= partitions - 4, marks  # all but the few kept open (the limit)
    broker.kill()

    broker.start()
    line = ready_line(broker, 2)
    assert f"{len(marks)} closed cleanly" in line, line
    assert f" {partitions - len(marks)} recovered" in line, line
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        for p in range(partitions):
            assert fetched_values(stub, "idle", p) == [b"%d" % p], p
        marked = int(marks[0].parent.name)
        batch = build_batch([(None, b"again", (), now)])
        stub.Produce(pb.ProduceRequest(topic="idle", partition=marked, record_batches=batch))
    broker.kill()

    broker.start()
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        assert fetched_values(stub, "idle", marked) == [b"%d" % marked, b"again"]
    assert broker.stop() == 0


def test_kill_9_at_random_moments_while_partitions_are_marked_and_written(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    """Writes to a few partitions under an open-files limit of 2, with pauses long
    enough for the retention passes (every 0.2 s) to mark the released ones clean and
    for the next write to unmark them, and kill -9 at a random moment, five times:
    every acknowledged record of every partition is served after each restart, in
    order, and nothing else."""
    rng = random.Random(7)
    partitions = 6
    broker = start_broker(max_open_partitions=2, retention_check_interval_s=0.2)
    with Admin(broker.address) as admin:
        admin.create_topic("churn", partitions)
    acked: list[list[bytes]] = [[] for _ in range(partitions)]
    now = int(time.time() * 1000)
    for life in range(5):
        with grpc.insecure_channel(broker.address) as channel:
            stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
            for p in range(partitions):  # what the last life acknowledged is all there
                assert fetched_values(stub, "churn", p) == acked[p], (life, p)
            for n in range(rng.randrange(20, 60)):
                p = rng.randrange(partitions)
                value = b"%d-%d-%d" % (life, n, p)
                batch = build_batch([(None, value, (), now)])
                stub.Produce(
                    pb.ProduceRequest(
                        topic="churn", partition=p, record_batches=batch, acks=pb.ACKS_ALL
                    )
                )
                acked[p].append(value)
                if rng.random() < 0.1:
                    time.sleep(rng.uniform(0.2, 0.7))  # long enough to be marked
        broker.kill()
        broker.start()
    assert sum(map(len, acked)) > 100
    starts = [line for line in broker.read_log().splitlines() if " partitions ready in " in line]
    deferred = [int(line.split(" closed cleanly")[0].rsplit(" ", 1)[1]) for line in starts[1:]]
    assert any(deferred), starts  # marked partitions were found clean after a kill
    assert broker.stop() == 0


def partition_wals_open(broker: BrokerProcess) -> int:
    """The partition WAL segments the broker holds open (one per open partition)."""
    assert broker.proc is not None
    count = 0
    for fd in Path(f"/proc/{broker.proc.pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = str(fd.readlink())
            if "/topics/" in target and target.endswith(".wal"):
                count += 1
    return count


def test_partitions_under_production_stay_open_past_the_limit_and_close_when_idle(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    """A round-robin over more partitions than ``--max-open-partitions`` keeps them all
    open while they are produced to (no reopen per request), within
    ``--max-active-partitions``; idle for longer than the 2 s window, they are released
    down to the limit again by the next retention pass, with no request. Every record
    is served."""
    partitions, limit, active = 12, 3, 10
    broker = start_broker(
        max_open_partitions=limit, max_active_partitions=active, retention_check_interval_s=0.5
    )
    with Admin(broker.address) as admin:
        admin.create_topic("rr", partitions)
    now = int(time.time() * 1000)
    hard_cap = (limit + active) + (limit + active) // 4  # the cap and the drain's lag
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        for round_ in range(6):
            for p in range(partitions):
                batch = build_batch([(None, b"%d-%d" % (round_, p), (), now)])
                stub.Produce(pb.ProduceRequest(topic="rr", partition=p, record_batches=batch))
            if round_ == 0:  # one produce each: not under production
                assert partition_wals_open(broker) <= limit + max(1, limit // 4)
            if round_ >= 1:  # each appended twice within the window: active
                assert active <= partition_wals_open(broker) <= hard_cap
        deadline = time.monotonic() + 30  # idle past the window, then a pass
        while partition_wals_open(broker) > limit and time.monotonic() < deadline:
            time.sleep(0.05)
        assert partition_wals_open(broker) <= limit
        batch = build_batch([(None, b"late", (), now)])
        stub.Produce(pb.ProduceRequest(topic="rr", partition=0, record_batches=batch))
        for p in range(partitions):
            expected = [b"%d-%d" % (r, p) for r in range(6)] + ([b"late"] if p == 0 else [])
            assert fetched_values(stub, "rr", p) == expected
    assert broker.stop() == 0
