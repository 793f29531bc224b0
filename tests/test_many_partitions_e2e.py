"""One real broker holding 2,000 partitions (20 topics of 100, created through the
Python client): it starts, serves a produce and a fetch on every partition, restarts,
and keeps its threads and open files under the documented bounds (README, "Many
partitions"): the worker pool, the sync pipeline and the open-files limit
(``--max-open-partitions``) do not grow with the number of partitions."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import psutil

from broker_process import BrokerProcess
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
    broker = start_broker(max_partitions=20_000)  # --max-open-partitions: derived, 128
    with Admin(broker.address) as admin:
        for t in range(TOPICS):
            admin.create_topic(f"t{t}", PER_TOPIC)
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
