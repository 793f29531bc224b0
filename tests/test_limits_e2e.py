"""A real broker under floods: topics created on the side of requests, large requests in
parallel, and request fields out of range. The broker's own figures (threads, open
files, resident memory) are read from its process with psutil."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable

import grpc
import psutil
import pytest

from broker_process import BrokerProcess
from sentinel.broker.limits import partitions_for_open_files
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc
from sentinel.record import build_batch

OPEN_FILES = 512  # the broker's RLIMIT_NOFILE in the flood tests: a small, full machine
MB = 1024 * 1024


def reason(err: grpc.RpcError) -> str:
    metadata = dict(err.trailing_metadata() or ())  # type: ignore[attr-defined]
    return str(metadata.get("sentinel-error", ""))


def refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def one_stub(broker: BrokerProcess) -> pb_grpc.SentinelStub:
    """A stub on its own channel (closed when the test's objects are collected)."""
    channel = grpc.insecure_channel(
        broker.address, options=[("grpc.max_send_message_length", 64 * MB)]
    )
    return pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]


def topic_names(stub: pb_grpc.SentinelStub) -> list[str]:
    return [t.name for t in stub.ListTopics(pb.ListTopicsRequest()).topics]


def small_batch() -> bytes:
    return build_batch([(None, b"v", (), 1_700_000_000_000)])


def figures(broker: BrokerProcess) -> tuple[int, int, int]:
    """(threads, open files, resident bytes) of the broker process."""
    assert broker.proc is not None
    process = psutil.Process(broker.proc.pid)
    return process.num_threads(), process.num_fds(), process.memory_info().rss


# ---------------------------------------------------------------- auto-create


def test_one_request_naming_thousands_of_unknown_topics_creates_none(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker(open_files=OPEN_FILES)
    stub = one_stub(broker)
    names = [f"flood-{i}" for i in range(10_000)]
    started = time.monotonic()
    # JoinGroup whose consumer asks for auto-creation: more than a request may create.
    err = refused(
        lambda: stub.JoinGroup(
            pb.JoinGroupRequest(
                group_id="g",
                topics=names,
                session_timeout_ms=6000,
                allow_auto_topic_creation=True,
            )
        )
    )
    assert reason(err) == "POLICY_VIOLATION"
    assert "--max-auto-create-per-request" in (err.details() or "")  # type: ignore[attr-defined]
    # FetchMetadata that allows auto-creation: the same, all or nothing.
    err = refused(
        lambda: stub.FetchMetadata(pb.MetadataRequest(topics=names, allow_auto_topic_creation=True))
    )
    assert reason(err) == "POLICY_VIOLATION"
    # A subscription that does not ask creates nothing and is not refused (Kafka's
    # consumer default allow.auto.create.topics=false, as librdkafka).
    joined = stub.JoinGroup(
        pb.JoinGroupRequest(group_id="quiet", topics=names[:100], session_timeout_ms=6000)
    )
    assert list(joined.assignment) == []
    assert topic_names(stub) == []
    assert time.monotonic() - started < 10
    threads, fds, _rss = figures(broker)
    assert fds < 100 and threads < 60, (threads, fds)


def test_a_flood_of_requests_each_creating_a_few_stops_at_the_limit_and_restarts(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    limit = partitions_for_open_files(OPEN_FILES)  # derived: no --max-partitions given
    broker = start_broker(open_files=OPEN_FILES, default_partitions=2)
    stub = one_stub(broker)
    created = 0
    refusals: list[str] = []
    for i in range(limit):  # more than enough: each request asks for 3 topics (6 partitions)
        request = pb.MetadataRequest(
            topics=[f"m{i}-{j}" for j in range(3)], allow_auto_topic_creation=True
        )
        try:
            stub.FetchMetadata(request)
            created += 6
        except grpc.RpcError as err:
            refusals.append(reason(err))
            break
    assert refusals == ["POLICY_VIOLATION"]
    assert limit - 6 < created <= limit
    # Produces each creating one topic fill what is left; then they are refused.
    for i in range(limit):
        try:
            stub.Produce(
                pb.ProduceRequest(topic=f"p{i}", partition=-1, record_batches=small_batch())
            )
            created += 2
        except grpc.RpcError as err:
            assert reason(err) == "POLICY_VIOLATION", err
            assert "--max-partitions" in (err.details() or "")  # type: ignore[attr-defined]
            break
    assert limit - 2 < created <= limit
    threads, fds, _rss = figures(broker)
    assert fds < OPEN_FILES - 100, fds
    assert threads < created + 60, threads
    # Still serving: an existing topic takes records.
    stub.Produce(pb.ProduceRequest(topic="p0", partition=0, record_batches=small_batch()))
    # And it starts again on the data directory it filled, with the same limit.
    assert broker.stop() == 0
    broker.start()
    stub = one_stub(broker)
    assert len(topic_names(stub)) * 2 == created
    stub.Produce(pb.ProduceRequest(topic="p0", partition=0, record_batches=small_batch()))
    threads, fds, _rss = figures(broker)
    assert fds < OPEN_FILES - 100, fds


def test_create_topic_and_partitions_beyond_the_limit(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker(max_partitions=5, max_auto_create_per_request=2)
    stub = one_stub(broker)
    err = refused(lambda: stub.CreateTopic(pb.CreateTopicRequest(name="big", partitions=6)))
    assert reason(err) == "POLICY_VIOLATION"
    assert "--max-partitions" in (err.details() or "")  # type: ignore[attr-defined]
    stub.CreateTopic(pb.CreateTopicRequest(name="t", partitions=3))
    err = refused(lambda: stub.CreatePartitions(pb.CreatePartitionsRequest(name="t", total=6)))
    assert reason(err) == "POLICY_VIOLATION"
    err = refused(
        lambda: stub.FetchMetadata(
            pb.MetadataRequest(topics=["a", "b", "c"], allow_auto_topic_creation=True)
        )
    )
    assert reason(err) == "POLICY_VIOLATION"
    stub.FetchMetadata(pb.MetadataRequest(topics=["a", "b"], allow_auto_topic_creation=True))
    assert topic_names(stub) == ["a", "b", "t"]
    err = refused(
        lambda: stub.Produce(
            pb.ProduceRequest(topic="c", partition=-1, record_batches=small_batch())
        )
    )
    assert reason(err) == "POLICY_VIOLATION"


def test_a_subscription_to_a_missing_topic_is_assigned_once_it_is_created(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker()
    from sentinel.client import Admin, Consumer

    with Consumer(
        broker.address, group_id="later", session_timeout_ms=3000, heartbeat_interval_ms=100
    ) as consumer:
        consumer.subscribe(["later"])
        consumer.poll(0.3)
        assert consumer.assignment() == set()
        with Admin(broker.address) as admin:
            assert [t.name for t in admin.list_topics()] == []
            admin.create_topic("later", partitions=2)
        deadline = time.monotonic() + 10
        while len(consumer.assignment()) < 2 and time.monotonic() < deadline:
            consumer.poll(0.1)
        assert {tp.partition for tp in consumer.assignment()} == {0, 1}


# ------------------------------------------------------------ lax fields


def test_fields_out_of_range_are_refused_with_their_reason(broker: BrokerProcess) -> None:
    stub = one_stub(broker)
    batch = small_batch()
    # Partition -5: only -1 means "the broker picks"; nothing is created on the way.
    err = refused(
        lambda: stub.Produce(pb.ProduceRequest(topic="x", partition=-5, record_batches=batch))
    )
    assert reason(err) == "UNKNOWN_TOPIC_OR_PARTITION"
    assert topic_names(stub) == []
    err = refused(
        lambda: stub.Produce(
            pb.ProduceRequest(topic="x", partition=0, acks=99, record_batches=batch)
        )  # type: ignore[arg-type]
    )
    assert reason(err) == "INVALID_REQUIRED_ACKS"
    assert topic_names(stub) == []
    err = refused(lambda: stub.CreateTopic(pb.CreateTopicRequest(name="zero", partitions=0)))
    assert reason(err) == "INVALID_PARTITIONS"
    err = refused(lambda: stub.CreateTopic(pb.CreateTopicRequest(name="neg", partitions=-3)))
    assert reason(err) == "INVALID_PARTITIONS"
    created = stub.CreateTopic(pb.CreateTopicRequest(name="dflt", partitions=-1))
    assert len(created.topic.partitions) == 1  # -1: the broker's default
    for timeout_ms in (0, -1, 1_800_001):
        err = refused(
            lambda t=timeout_ms: stub.JoinGroup(  # type: ignore[misc]
                pb.JoinGroupRequest(group_id="g", topics=["dflt"], session_timeout_ms=t)
            )
        )
        assert reason(err) == "INVALID_SESSION_TIMEOUT", timeout_ms
    for offset in (-2, -1000):
        err = refused(
            lambda o=offset: stub.CommitOffsets(  # type: ignore[misc]
                pb.CommitOffsetsRequest(
                    group_id="c",
                    generation=-1,
                    offsets=[pb.PartitionOffset(topic="dflt", partition=0, offset=o)],
                )
            )
        )
        assert reason(err) == "INVALID_REQUEST", offset
    stub.CommitOffsets(
        pb.CommitOffsetsRequest(
            group_id="c",
            generation=-1,
            offsets=[pb.PartitionOffset(topic="dflt", partition=0, offset=-1)],
        )
    )
    stub.Produce(pb.ProduceRequest(topic="dflt", partition=-1, record_batches=batch))


# ------------------------------------------------- large requests in parallel


def test_concurrent_large_requests_hold_bounded_memory(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker(sync="none")
    stub = one_stub(broker)
    stub.CreateTopic(pb.CreateTopicRequest(name="big", partitions=1))
    one_mb = build_batch([(None, bytes(range(256)) * 3900, (), 1_700_000_000_000)])
    payload = one_mb * 60  # 60 batches of ~1 MB: a 60 MB produce
    _threads, _fds, baseline = figures(broker)
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], figures(broker)[2])
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    channels = [one_stub(broker) for _ in range(24)]

    def produce(s: pb_grpc.SentinelStub) -> str:
        try:
            s.Produce(
                pb.ProduceRequest(topic="big", partition=0, record_batches=payload), timeout=3
            )
        except grpc.RpcError as err:
            if err.code() is grpc.StatusCode.DEADLINE_EXCEEDED:  # type: ignore[attr-defined]
                return "DEADLINE_EXCEEDED"
            return reason(err)
        return "OK"

    started = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            outcomes = list(pool.map(produce, channels))
    finally:
        done.set()
        sampler.join()
    took = time.monotonic() - started
    # Each waited for room and was answered, or was refused when its deadline came.
    assert set(outcomes) <= {"OK", "THROTTLING_QUOTA_EXCEEDED", "DEADLINE_EXCEEDED"}, outcomes
    counts = {o: outcomes.count(o) for o in sorted(set(outcomes))}
    print(
        f"24 x 60 MB in {took:.1f} s: {counts}; broker RSS {baseline >> 20} MB, "
        f"peak {peak[0] >> 20} MB"
    )
    # Unbounded, this took the broker to 2.0 GB. Now at most two such requests are in
    # flight (the 128 MiB budget); a 60 MB produce costs ~6x its size while it is handled
    # (gRPC, protobuf and storage copies), whence the bound.
    assert peak[0] - baseline < 1000 * MB, peak[0] >> 20
    # And memory comes back down once they are answered.
    deadline = time.monotonic() + 10
    while figures(broker)[2] - baseline > 400 * MB and time.monotonic() < deadline:
        time.sleep(0.1)
    after = figures(broker)[2]
    print(f"broker RSS after: {after >> 20} MB")
    assert after - baseline < 700 * MB, after >> 20
    stub.Produce(pb.ProduceRequest(topic="big", partition=0, record_batches=small_batch()))
