"""What one Kafka connection may make the broker hold, against a real ``sentinel-server``
over raw sockets: a client that never reads its answers (the broker stops reading it),
a frame whose body stalls (it holds no room it has not received), idle connections
(cheap, closed after ``--connections-max-idle-ms``) and ``--max-connections``.

Memory is read from the broker process's RSS (psutil), loosely: each bound here was
broken by gigabytes (the attack reports in the commit that added this file)."""

from __future__ import annotations

import contextlib
import resource
import socket
import struct
import time
from collections.abc import Callable, Iterator

import psutil
import pytest
from kafka_raw import RawKafka

from broker_process import BrokerProcess
from metrics_polling import scrape, wait_for
from sentinel.protocol.kafka.messages import fetch as fe
from sentinel.protocol.kafka.messages import metadata as md
from sentinel.protocol.kafka.messages import produce as pr
from sentinel.record import build_batch

MIB = 1024 * 1024
NOW_MS = int(time.time() * 1000)


def rss(broker: BrokerProcess) -> int:
    assert broker.proc is not None
    return int(psutil.Process(broker.proc.pid).memory_info().rss)


def connect(broker: BrokerProcess, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", broker.kafka_port), timeout=timeout)


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def api_versions_frame(correlation_id: int) -> bytes:
    return frame(struct.pack(">hhih", 18, 0, correlation_id, 4) + b"test")


def api_versions_answered(broker: BrokerProcess, timeout: float = 10.0) -> bool:
    with connect(broker, timeout) as sock:
        sock.sendall(api_versions_frame(7))
        (size,) = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))
        body = sock.recv(size, socket.MSG_WAITALL)
        return struct.unpack_from(">ih", body) == (7, 0)


def answered(broker: BrokerProcess, api: str) -> float:
    prefix = f'sentinel_kafka_requests_total{{api="{api}",'
    return sum(v for k, v in scrape(broker).items() if k.startswith(prefix))


def closed_by_broker(sock: socket.socket) -> bool:
    """True once the broker closed ``sock`` (EOF or reset), False while it is open."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def produce_request(topic: str, batch: bytes) -> pr.ProduceRequest:
    return pr.ProduceRequest(acks=1, timeout_ms=10000, topic_data=(
        pr.TopicProduceData(name=topic, partition_data=(
            pr.PartitionProduceData(index=0, records=batch),)),))  # fmt: skip


def produce(client: RawKafka, topic: str, records: int, size: int) -> None:
    batch = build_batch([(None, bytes([i % 256]) * size, (), NOW_MS) for i in range(records)])
    answer = client.call(0, 7, produce_request(topic, batch))
    assert answer.responses[0].partition_responses[0].error_code == 0


def fetch_request(topic: str, offset: int, max_wait_ms: int = 0) -> fe.FetchRequest:
    return fe.FetchRequest(
        replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=1, max_bytes=64 * MIB, isolation_level=0,
        topics=(fe.FetchTopic(topic=topic, partitions=(fe.FetchPartition(
            partition=0, fetch_offset=offset, partition_max_bytes=64 * MIB,
            log_start_offset=-1),)),),
    )  # fmt: skip


# ------------------------------------------------------------- unread answers


def test_a_client_that_never_reads_stops_being_read(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker(memtable_mb=2, memtable_budget_mb=4, block_cache_mb=4)
    with RawKafka(broker.kafka_address) as client:
        client.call(3, 12, md.MetadataRequest(
            topics=(md.MetadataRequestTopic(name="big"),), allow_auto_topic_creation=True))
        for _ in range(16):  # 8 MiB, more than the memtables and the block cache hold
            produce(client, "big", 512, 1024)
        base = rss(broker)
        sock = client.sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(2.0)
        sent, started = 0, time.monotonic()
        with contextlib.suppress(TimeoutError):
            while sent < 3000 and time.monotonic() - started < 6:
                offset = (sent * 997) % 7000
                _, body = client.request_bytes(1, 11, fetch_request("big", offset))
                sock.sendall(frame(body))  # blocks once the broker stops reading
                sent += 1
        time.sleep(1.0)  # what was read is answered (into a full socket) meanwhile
        grown = rss(broker) - base
        assert grown < 300 * MIB, f"{sent} unread fetches grew the broker by {grown >> 20} MiB"
        # The kernel's socket buffers take a few hundred requests of ~100 bytes; the
        # broker reads few of them.
        assert answered(broker, "fetch") < 200, "the broker answered a client that reads nothing"
        # Other clients are served meanwhile.
        assert api_versions_answered(broker)
    assert api_versions_answered(broker)


def test_a_connections_fetches_are_served_one_at_a_time(broker: BrokerProcess) -> None:
    """Pipelined long polls do not wait together (their answers would be built
    together when data comes): the second starts when the first is answered."""
    with RawKafka(broker.kafka_address) as client:
        client.call(3, 12, md.MetadataRequest(
            topics=(md.MetadataRequestTopic(name="quiet"),), allow_auto_topic_creation=True))
        ids, payload = [], b""
        for _ in range(2):
            cid, body = client.request_bytes(1, 11, fetch_request("quiet", 0, 600))
            ids.append(cid)
            payload += frame(body)
        started = time.monotonic()
        client.sock.sendall(payload)
        for cid in ids:
            client.read_response(1, 11, cid)
        assert time.monotonic() - started >= 1.1


def test_answers_held_behind_a_second_fetch_never_hold_it_back(broker: BrokerProcess) -> None:
    """A long poll, a second Fetch queued behind it, then more than
    ``HELD_RESPONSE_BYTES`` of Metadata answers (held in order behind both). The second
    Fetch, the oldest unanswered request once the first is answered, must start though
    the connection is congested: the held answers drain only after it. It waited for
    good (an outside attack found it; every answer after the first never came)."""
    with RawKafka(broker.kafka_address, timeout=30) as client:
        client.call(3, 12, md.MetadataRequest(
            topics=(md.MetadataRequestTopic(name="held"),), allow_auto_topic_creation=True))
        missing = md.MetadataRequest(  # ~85 KB answers: 400 unknown topics each
            topics=tuple(md.MetadataRequestTopic(name=f"x{i:05d}" + "a" * 200)
                         for i in range(400)),
            allow_auto_topic_creation=False)  # fmt: skip
        requests = [(1, 11, fetch_request("held", 0, 500)), (1, 11, fetch_request("held", 0, 500))]
        requests += [(3, 9, missing)] * 14
        ids, payload = [], b""
        for api, version, request in requests:
            cid, body = client.request_bytes(api, version, request)
            ids.append((api, version, cid))
            payload += frame(body)
        client.sock.sendall(payload)
        for api, version, cid in ids:  # each in order; a hang fails the socket timeout
            client.read_response(api, version, cid)


def test_unread_small_answers_stop_reading_too(broker: BrokerProcess) -> None:
    with connect(broker, timeout=2.0) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        burst = b"".join(api_versions_frame(i) for i in range(1, 1001))
        sent = 0
        with contextlib.suppress(TimeoutError):
            while sent < 200:  # 200,000 requests, ~6 MB
                sock.sendall(burst)
                sent += 1
        # The kernel's socket buffers take some (a few MB); the broker answers until its
        # answers fill the client's socket and its own write buffer, then stops.

        def settled() -> bool:
            before = answered(broker, "api_versions")
            time.sleep(0.5)
            return before > 0 and answered(broker, "api_versions") == before

        wait_for(settled, "the broker to stop answering a client that reads nothing", 8.0)
        assert answered(broker, "api_versions") < 100_000
        assert api_versions_answered(broker)


# ---------------------------------------------------------- stalled frame bodies


def test_announced_frames_hold_no_room_they_have_not_received(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker()  # 64 MiB frames, 128 MiB of requests in flight
    base = rss(broker)
    holders = [connect(broker) for _ in range(2)]
    try:
        for sock in holders:  # each announces 64 MiB, then sends 4 bytes and stalls
            sock.sendall(struct.pack(">i", 64 * MIB - 4) + b"\x00\x00\x00\x09")
        wait_for(lambda: scrape(broker)["sentinel_kafka_connections"] >= 3 - 1,
                 "the broker to take the holders' connections")
        time.sleep(0.3)  # let the broker see the prefixes
        assert scrape(broker)["sentinel_request_bytes_in_flight"] < 8 * MIB
        assert rss(broker) - base < 64 * MIB
        # A 500 KB produce goes through at once (it waited 29.5 s).
        with RawKafka(broker.kafka_address, timeout=5.0) as client:
            started = time.monotonic()
            produce(client, "victim", 1, 500_000)
            assert time.monotonic() - started < 3.0
    finally:
        for sock in holders:
            sock.close()


def test_large_frames_received_together_never_wait_for_each_other_forever(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    """Three 6 MiB produces against an 8 MiB budget, each half sent before any is
    finished: the room they hold is what they sent, so all would wait for room only
    finished frames give back; the frame received longest may go past the budget."""
    broker = start_broker(max_request_bytes_in_flight=8 * MIB, max_request_bytes=7 * MIB,
                          kafka_frame_timeout_ms=2000)
    batch = build_batch([(None, bytes(1000), (), NOW_MS) for _ in range(6000)])
    clients = [RawKafka(broker.kafka_address, timeout=15.0) for _ in range(3)]
    try:
        frames = []
        for client in clients:
            cid, body = client.request_bytes(0, 7, produce_request("together", batch))
            frames.append((cid, frame(body)))
        half = len(frames[0][1]) // 2
        for client, (_, data) in zip(clients, frames, strict=True):
            client.sock.sendall(data[:half])
        time.sleep(0.3)
        for client, (_, data) in zip(clients, frames, strict=True):
            client.sock.sendall(data[half:])
        for client, (cid, _) in zip(clients, frames, strict=True):
            answer = client.read_response(0, 7, cid)  # answered (an error code is fine)
            assert answer.responses[0].name == "together"
    finally:
        for client in clients:
            client.close()
    wait_for(lambda: scrape(broker)["sentinel_request_bytes_in_flight"] == 0,
             "the budget to be free again")


def test_a_large_produce_on_a_slow_link_arrives(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    # The body may take longer than the frame timeout as long as it keeps coming.
    broker = start_broker(kafka_frame_timeout_ms=1000)
    with RawKafka(broker.kafka_address) as client:
        batch = build_batch([(None, b"x" * 1000, (), NOW_MS) for _ in range(900)])
        cid, body = client.request_bytes(0, 7, produce_request("slow", batch))
        data = frame(body)
        step = len(data) // 12
        for start in range(0, len(data), step):  # ~900 KB over ~3 s: more than 1 s
            client.sock.sendall(data[start : start + step])
            time.sleep(0.25)
        answer = client.read_response(0, 7, cid)
        assert answer.responses[0].partition_responses[0].error_code == 0


def test_a_stalled_body_is_dropped_after_the_frame_timeout(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker(kafka_frame_timeout_ms=500)
    with connect(broker) as sock:
        sock.sendall(struct.pack(">i", 4 * MIB) + bytes(100_000))
        wait_for(lambda: closed_by_broker(sock), "the stalled frame's connection to close")
    assert api_versions_answered(broker)


# ------------------------------------------------------------ idle connections


@pytest.fixture
def many_files() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    if want < 4500:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low for 2,000 connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_idle_connections_cost_little(
    start_broker: Callable[..., BrokerProcess], many_files: None
) -> None:
    broker = start_broker()
    base = rss(broker)
    socks = [connect(broker) for _ in range(2000)]
    try:
        wait_for(lambda: scrape(broker)["sentinel_kafka_connections"] == 2000,
                 "the broker to take 2,000 connections")
        grown = rss(broker) - base
        assert grown < 100 * MIB, f"2,000 idle connections cost {grown >> 20} MiB"
        assert api_versions_answered(broker)
    finally:
        for sock in socks:
            sock.close()


def test_idle_connections_are_closed_after_the_bound(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker(connections_max_idle_ms=600)
    with connect(broker) as idle, connect(broker) as busy:
        started = time.monotonic()
        correlation_id = 0
        while not closed_by_broker(idle):
            assert time.monotonic() - started < 10, "the idle connection was not closed"
            correlation_id += 1
            busy.setblocking(True)
            busy.sendall(api_versions_frame(correlation_id))
            (size,) = struct.unpack(">i", busy.recv(4, socket.MSG_WAITALL))
            busy.recv(size, socket.MSG_WAITALL)
            time.sleep(0.1)
        assert time.monotonic() - started >= 0.5
        assert not closed_by_broker(busy), "a connection in use was closed as idle"
    figures = scrape(broker)
    assert figures['sentinel_kafka_closed_connections_total{reason="idle"}'] >= 1


def test_a_client_that_never_reads_is_closed_once_idle(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    """Its answers stay unwritten: nothing moves either way, so it is idle."""
    broker = start_broker(connections_max_idle_ms=800)
    with connect(broker, timeout=2.0) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        burst = b"".join(api_versions_frame(i) for i in range(1, 1001))
        with contextlib.suppress(TimeoutError, OSError):
            for _ in range(200):
                sock.sendall(burst)
        wait_for(lambda: scrape(broker)["sentinel_kafka_connections"] == 0,
                 "the broker to close the connection that reads nothing")
    figures = scrape(broker)
    assert figures['sentinel_kafka_closed_connections_total{reason="idle"}'] == 1


def test_connections_beyond_the_cap_are_refused(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker(max_connections=4)
    kept = [connect(broker) for _ in range(4)]
    try:
        wait_for(lambda: scrape(broker)["sentinel_kafka_connections"] == 4,
                 "the broker to take 4 connections")
        with connect(broker) as refused:
            wait_for(lambda: closed_by_broker(refused), "the fifth connection to be closed")
        assert scrape(broker)["sentinel_kafka_refused_connections_total"] == 1
        kept.pop().close()
        wait_for(lambda: scrape(broker)["sentinel_kafka_connections"] == 3,
                 "the broker to see one leave")
        assert api_versions_answered(broker)
    finally:
        for sock in kept:
            sock.close()
