"""A real ``sentinel-server`` process, driven through raw gRPC stubs: the API contract,
errors with their reasons, metrics, shutdown and the data-directory lock."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from broker_process import BrokerProcess
from metrics_polling import scrape, wait_for
from sentinel.broker.partitioner import default_partition
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc
from sentinel.record import build_batch, decode_records, iter_batches


@pytest.fixture
def stub(broker: BrokerProcess) -> Iterator[pb_grpc.SentinelStub]:
    channel = grpc.insecure_channel(broker.address)
    yield pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
    channel.close()


def reason(err: grpc.RpcError) -> str:
    metadata = dict(err.trailing_metadata() or ())  # type: ignore[attr-defined]
    return str(metadata.get("sentinel-error", ""))


def produce_values(
    stub: pb_grpc.SentinelStub, topic: str, values: list[bytes], partition: int = 0
) -> pb.ProduceResponse:
    batch = build_batch([(None, v, (), 1_700_000_000_000 + i) for i, v in enumerate(values)])
    return stub.Produce(pb.ProduceRequest(topic=topic, partition=partition, record_batches=batch))


def consume_all(stub: pb_grpc.SentinelStub, topic: str, partition: int = 0) -> list[bytes]:
    values: list[bytes] = []
    for message in stub.Consume(pb.ConsumeRequest(topic=topic, partition=partition, offset=0)):
        for view in iter_batches(message.record_batches):
            values.extend(r.value or b"" for r in decode_records(view))
    return values


def test_produce_then_consume_in_order(stub: pb_grpc.SentinelStub) -> None:
    values = [b"Hello, World! %d" % i for i in range(10)]
    response = produce_values(stub, "events", values)
    assert response.base_offset == 0
    assert consume_all(stub, "events") == values
    more = produce_values(stub, "events", [b"x"])
    assert more.base_offset == 10


def test_records_path_and_broker_side_partitioning(stub: pb_grpc.SentinelStub) -> None:
    stub.CreateTopic(pb.CreateTopicRequest(name="keyed", partitions=4))
    for key in (b"alpha", b"beta", b"gamma", b"delta"):
        response = stub.Produce(
            pb.ProduceRequest(topic="keyed", partition=-1, records=[pb.Record(key=key, value=b"v")])
        )
        assert response.partition == default_partition(key, 4)
    fetched = stub.Fetch(
        pb.FetchRequest(
            topic="keyed", partition=default_partition(b"alpha", 4), offset=0, decode_records=True
        )
    )
    assert fetched.records[0].key == b"alpha"


def test_topic_admin_and_metadata(stub: pb_grpc.SentinelStub) -> None:
    created = stub.CreateTopic(
        pb.CreateTopicRequest(name="orders", partitions=3, configs={"retention.ms": "60000"})
    )
    assert len(created.topic.partitions) == 3
    assert created.topic.configs["retention.ms"] == "60000"
    names = [t.name for t in stub.ListTopics(pb.ListTopicsRequest()).topics]
    assert "orders" in names
    metadata = stub.FetchMetadata(pb.MetadataRequest(topics=["orders"]))
    assert metadata.brokers[0].port > 0
    assert [p.leader for p in metadata.topics[0].partitions] == [0, 0, 0]
    grown = stub.CreatePartitions(pb.CreatePartitionsRequest(name="orders", total=5))
    assert len(grown.topic.partitions) == 5
    stub.DeleteTopic(pb.DeleteTopicRequest(name="orders"))
    with pytest.raises(grpc.RpcError) as err:
        stub.DescribeTopic(pb.DescribeTopicRequest(name="orders"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason(err.value) == "UNKNOWN_TOPIC_OR_PARTITION"


@pytest.mark.parametrize("name", ["", "bad name", "a" * 250, "..", "x/y"])
def test_invalid_topic_names_are_refused(stub: pb_grpc.SentinelStub, name: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateTopic(pb.CreateTopicRequest(name=name, partitions=1))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(err.value) == "INVALID_TOPIC"
    assert stub.ListTopics(pb.ListTopicsRequest()) is not None  # still serving


def test_bad_requests_get_their_reasons_and_the_broker_keeps_serving(
    stub: pb_grpc.SentinelStub,
) -> None:
    produce_values(stub, "t", [b"a", b"b"])
    cases: list[tuple[Callable[[], object], grpc.StatusCode, str]] = [
        (
            lambda: produce_values(stub, "t", [b"x"], partition=7),
            grpc.StatusCode.NOT_FOUND,
            "UNKNOWN_TOPIC_OR_PARTITION",
        ),
        (
            lambda: produce_values(stub, "t", [b"x" * (2 * 1024 * 1024)]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "MESSAGE_TOO_LARGE",
        ),
        (
            lambda: stub.Fetch(pb.FetchRequest(topic="t", partition=0, offset=99)),
            grpc.StatusCode.OUT_OF_RANGE,
            "OFFSET_OUT_OF_RANGE",
        ),
        (
            lambda: stub.Produce(pb.ProduceRequest(topic="t", record_batches=b"\x00" * 70)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "",
        ),
    ]
    for call, code, why in cases:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == code, (why, err.value)
        if why:
            assert reason(err.value) == why
    assert consume_all(stub, "t") == [b"a", b"b"]


def test_offset_out_of_range_carries_the_valid_range(stub: pb_grpc.SentinelStub) -> None:
    produce_values(stub, "range", [b"a", b"b", b"c"])
    with pytest.raises(grpc.RpcError) as err:
        stub.Fetch(pb.FetchRequest(topic="range", partition=0, offset=50))
    metadata = dict(err.value.trailing_metadata())  # type: ignore[attr-defined]
    assert metadata["sentinel-log-start-offset"] == "0"
    assert metadata["sentinel-log-end-offset"] == "3"


def test_corrupt_batch_is_refused_and_nothing_is_stored(stub: pb_grpc.SentinelStub) -> None:
    produce_values(stub, "crc", [b"good"])
    batch = bytearray(build_batch([(None, b"payload", (), 1)]))
    batch[-1] ^= 0xFF
    with pytest.raises(grpc.RpcError) as err:
        stub.Produce(pb.ProduceRequest(topic="crc", record_batches=bytes(batch)))
    assert reason(err.value) == "CORRUPT_MESSAGE"
    assert consume_all(stub, "crc") == [b"good"]


def test_follow_stream_sees_a_later_record(stub: pb_grpc.SentinelStub) -> None:
    produce_values(stub, "live", [b"first"])
    stream = stub.Consume(
        pb.ConsumeRequest(topic="live", partition=0, offset=1, follow=True, max_messages=1)
    )
    produce_values(stub, "live", [b"second"])
    messages = list(stream)
    values = [
        r.value for m in messages for v in iter_batches(m.record_batches) for r in decode_records(v)
    ]
    assert values == [b"second"]


def test_list_offsets(stub: pb_grpc.SentinelStub) -> None:
    produce_values(stub, "lo", [b"a", b"b", b"c"])
    earliest = stub.ListOffsets(pb.ListOffsetsRequest(topic="lo", partition=0, timestamp_ms=-2))
    latest = stub.ListOffsets(pb.ListOffsetsRequest(topic="lo", partition=0, timestamp_ms=-1))
    by_time = stub.ListOffsets(
        pb.ListOffsetsRequest(topic="lo", partition=0, timestamp_ms=1_700_000_000_001)
    )
    assert (earliest.offset, latest.offset, by_time.offset) == (0, 3, 1)


def test_metrics_and_the_connection_gauge(
    broker: BrokerProcess, stub: pb_grpc.SentinelStub
) -> None:
    produce_values(stub, "m", [b"a"] * 5)
    figures = scrape(broker)
    assert figures['sentinel_messages_produced_total{topic="m"}'] == 5
    assert figures['sentinel_log_end_offset{partition="0",topic="m"}'] == 5
    assert "sentinel_produce_latency_ms" in figures
    assert figures["sentinel_produce_latency_seconds_count"] >= 1
    assert figures["sentinel_wal_fsync_seconds_count"] >= 1
    # The gauge counts client connections (this test's channel is one), not calls.
    assert figures["sentinel_active_connections"] == 1
    # (a channel of its own: gRPC shares one connection among a process's channels)
    channel = grpc.insecure_channel(broker.address, [("grpc.use_local_subchannel_pool", 1)])
    other = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
    stream = other.Consume(pb.ConsumeRequest(topic="m", partition=0, offset=0, follow=True))
    next(stream)
    wait_for(lambda: scrape(broker)["sentinel_active_connections"] == 2)
    stream.cancel()  # the client goes away mid-stream, its connection stays open
    channel.close()  # now it goes
    wait_for(lambda: scrape(broker)["sentinel_active_connections"] == 1)


def test_groups_over_grpc(stub: pb_grpc.SentinelStub) -> None:
    stub.CreateTopic(pb.CreateTopicRequest(name="g", partitions=2))
    joined = stub.JoinGroup(
        pb.JoinGroupRequest(group_id="grp", topics=["g"], session_timeout_ms=6000)
    )
    assert joined.generation >= 1
    assert sorted(p for tp in joined.assignment for p in tp.partitions) == [0, 1]
    member, generation = joined.member_id, joined.generation
    stub.Heartbeat(pb.HeartbeatRequest(group_id="grp", member_id=member, generation=generation))
    stub.CommitOffsets(
        pb.CommitOffsetsRequest(
            group_id="grp",
            member_id=joined.member_id,
            generation=joined.generation,
            offsets=[pb.PartitionOffset(topic="g", partition=1, offset=0)],
        )
    )
    fetched = stub.FetchOffsets(pb.FetchOffsetsRequest(group_id="grp"))
    assert [(o.topic, o.partition, o.offset) for o in fetched.offsets] == [("g", 1, 0)]
    described = stub.DescribeGroup(pb.DescribeGroupRequest(group_id="grp"))
    assert described.state == "Stable"
    assert len(described.members) == 1
    with pytest.raises(grpc.RpcError) as err:
        stub.Heartbeat(pb.HeartbeatRequest(group_id="grp", member_id="nobody", generation=1))
    assert reason(err.value) == "UNKNOWN_MEMBER_ID"
    stub.LeaveGroup(pb.LeaveGroupRequest(group_id="grp", member_id=joined.member_id))
    groups = stub.ListGroups(pb.ListGroupsRequest()).groups
    assert [(g.group_id, g.state) for g in groups] == [("grp", "Empty")]


def test_sigterm_exits_zero_and_keeps_data(start_broker: Callable[..., BrokerProcess]) -> None:
    broker = start_broker()
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        produce_values(stub, "durable", [b"one", b"two"])
    started = time.monotonic()
    assert broker.stop() == 0
    assert time.monotonic() - started < 10
    broker.start()
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        assert consume_all(stub, "durable") == [b"one", b"two"]


def test_second_server_on_the_same_data_dir_is_refused(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sentinel.cli.server",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--data",
            str(broker.data_dir),
            "--metrics-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "locked" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_flag_is_one_line_and_nonzero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sentinel.cli.server", "--sync", "sometimes"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "sometimes" in result.stderr


def test_malformed_request_is_refused_and_the_broker_keeps_serving(broker: BrokerProcess) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        raw_produce = channel.unary_unary(
            "/sentinel.v1.Sentinel/Produce",
            request_serializer=None,
            response_deserializer=pb.ProduceResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as err:
            raw_produce(b"\xff\xff\xff\xff\x0f not a protobuf message")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason(err.value) == "INVALID_REQUEST"
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        assert produce_values(stub, "after", [b"ok"]).base_offset == 0


@pytest.mark.parametrize("sync", ["always", "none", "interval"])
def test_kill_9_keeps_every_acknowledged_record_exactly_once(
    start_broker: Callable[..., BrokerProcess], sync: str
) -> None:
    """Every sync mode promises an acknowledged record survives the process (``none``
    and ``interval``: it is in the OS at once, through the WAL's rolls too: a 1 MiB
    memtable rolls it about every thousand records of 1 KB here)."""
    from sentinel.client import Admin, Producer

    broker = start_broker(sync=sync, memtable_mb=1)
    with Admin(broker.address) as admin:
        admin.create_topic("durable", partitions=2)
    acknowledged: list[tuple[int, int, bytes]] = []
    # (no retries, a short request timeout: the sends the kill cuts off fail at once)
    with Producer(
        broker.address, acks=1, linger_ms=1, retries=0, request_timeout_ms=2000
    ) as producer:
        values = [b"record-%05d-" % i + b"x" * 1000 for i in range(6000)]
        futures = [
            (producer.send("durable", value, partition=i % 2), value)
            for i, value in enumerate(values)
        ]
        for future, value in futures[:4000]:
            meta = future.result(30)
            acknowledged.append((meta.partition, meta.offset, value))
        broker.kill()  # SIGKILL while later sends may still be in flight
        for future, value in futures[4000:]:
            try:
                meta = future.result(60)
            except Exception:
                continue
            acknowledged.append((meta.partition, meta.offset, value))
    segments = sorted(p.name for p in broker.data_dir.glob("topics/*/0/*.wal"))
    assert len(segments) >= 2, segments  # the WAL rolled while the records arrived
    broker.start()
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        stored: dict[tuple[int, int], bytes] = {}
        for partition in (0, 1):
            for message in stub.Consume(
                pb.ConsumeRequest(topic="durable", partition=partition, offset=0)
            ):
                for view in iter_batches(message.record_batches):
                    for record in decode_records(view):
                        stored[(partition, record.offset)] = record.value or b""
    for partition, offset, value in acknowledged:
        assert stored.get((partition, offset)) == value
    values = list(stored.values())
    assert len(values) == len(set(values)), "a record was stored twice"


def _values_from(
    stub: pb_grpc.SentinelStub, topic: str, offset: int = 0
) -> list[tuple[bytes | None, bytes]]:
    found: list[tuple[bytes | None, bytes]] = []
    for message in stub.Consume(pb.ConsumeRequest(topic=topic, partition=0, offset=offset)):
        for view in iter_batches(message.record_batches):
            found.extend((r.key, r.value or b"") for r in decode_records(view))
    return found


def test_retention_by_time_removes_old_batches(stub: pb_grpc.SentinelStub) -> None:
    stub.CreateTopic(
        pb.CreateTopicRequest(name="short", partitions=1, configs={"retention.ms": "60000"})
    )
    old = int(time.time() * 1000) - 3_600_000
    stub.Produce(
        pb.ProduceRequest(topic="short", record_batches=build_batch([(None, b"old", (), old)]))
    )
    produce_values(stub, "short", [b"2023"])  # produce_values stamps 2023: old too
    fresh = build_batch([(None, b"fresh", (), int(time.time() * 1000))])
    stub.Produce(pb.ProduceRequest(topic="short", record_batches=fresh))

    def trimmed() -> bool:
        info = stub.DescribeTopic(pb.DescribeTopicRequest(name="short")).topic.partitions[0]
        return info.log_start_offset == 2

    wait_for(trimmed, timeout=20)  # the broker runs retention every second in tests
    assert [v for _k, v in _values_from(stub, "short", offset=2)] == [b"fresh"]
    with pytest.raises(grpc.RpcError) as err:
        _values_from(stub, "short", offset=0)
    assert reason(err.value) == "OFFSET_OUT_OF_RANGE"


def test_compacted_topic_keeps_the_latest_value_per_key(stub: pb_grpc.SentinelStub) -> None:
    stub.CreateTopic(
        pb.CreateTopicRequest(name="table", partitions=1, configs={"cleanup.policy": "compact"})
    )
    now = int(time.time() * 1000)
    for key, value in [(b"a", b"a1"), (b"b", b"b1"), (b"a", b"a2"), (b"c", b"c1")]:
        batch = build_batch([(key, value, (), now)])
        stub.Produce(pb.ProduceRequest(topic="table", record_batches=batch))

    def compacted() -> bool:
        return (b"a", b"a1") not in _values_from(stub, "table")

    wait_for(compacted, timeout=20)
    assert _values_from(stub, "table") == [(b"b", b"b1"), (b"a", b"a2"), (b"c", b"c1")]
