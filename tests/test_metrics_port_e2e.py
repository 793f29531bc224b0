"""A real broker's ``/metrics`` port attacked from outside: a burst of connects, many
idle connections held open, a flood of scrapes at once, and requests that are not HTTP.

Before, the port was prometheus-client's ``ThreadingWSGIServer``: a listen queue of 5
(a burst of connects overflowed it, and each dropped connect waited for a 1 s SYN
retransmit), one thread per connection with no read deadline (300 idle connections held
300 threads for as long as their clients liked), and one render per scrape.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import grpc
import psutil
import pytest

from broker_process import BrokerProcess
from listen_queue import burst_overflows
from metrics_polling import scrape, wait_for
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc

Start = Callable[..., BrokerProcess]

IDLE_CONNECTIONS = 300
"""Connections opened to the metrics port that never send a byte."""
THREAD_GROWTH_BOUND = 8
"""The broker's threads may grow by at most this while those are open (one per
connection before: +300)."""
FLOOD = 200
"""Scrapes sent at once, each on its own connection."""


def exchange(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send ``request`` on a new connection and read until the broker closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def broker(start_broker: Start) -> BrokerProcess:
    return start_broker()


def test_a_burst_of_connects_fits_the_listen_queue(broker: BrokerProcess) -> None:
    assert burst_overflows(broker.metrics_port) == 0
    with urllib.request.urlopen(broker.metrics_url, timeout=5) as response:
        assert b"sentinel_active_connections" in response.read()


@pytest.fixture
def idle_connections(broker: BrokerProcess) -> Iterator[list[socket.socket]]:
    with ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.create_connection(("127.0.0.1", broker.metrics_port)))
            for _ in range(IDLE_CONNECTIONS)
        ]
        yield sockets


def test_idle_connections_hold_no_thread_and_do_not_block_a_scrape(
    broker: BrokerProcess, idle_connections: list[socket.socket]
) -> None:
    assert broker.proc is not None
    process = psutil.Process(broker.proc.pid)
    before = process.num_threads()
    started = time.monotonic()
    figures = scrape(broker)  # served beside the 300 idle connections
    assert time.monotonic() - started < 5.0
    assert any(name.startswith("sentinel_active_connections") for name in figures)
    assert process.num_threads() - before <= THREAD_GROWTH_BOUND, (before, process.num_threads())


def test_a_connection_that_sends_no_request_is_closed_after_the_read_deadline(
    start_broker: Start,
) -> None:
    broker = start_broker(**{"metrics-read-timeout-ms": 300})
    with socket.create_connection(("127.0.0.1", broker.metrics_port), timeout=10) as sock:
        sock.sendall(b"GET /metr")  # and nothing more
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed by the broker
        assert time.monotonic() - started < 5.0


def test_a_flood_of_scrapes_is_answered_and_produce_goes_on(broker: BrokerProcess) -> None:
    stub = pb_grpc.SentinelStub(grpc.insecure_channel(broker.address))
    stub.CreateTopic(pb.CreateTopicRequest(name="t", partitions=1))
    answers: list[int] = []
    lock = threading.Lock()

    def scrape_once() -> None:
        with urllib.request.urlopen(broker.metrics_url, timeout=30) as response:
            body = response.read()
        with lock:
            answers.append(response.status if b"sentinel_active_connections" in body else -1)

    threads = [threading.Thread(target=scrape_once) for _ in range(FLOOD)]
    for thread in threads:
        thread.start()
    produced = stub.Produce(
        pb.ProduceRequest(topic="t", records=[pb.Record(value=b"v")]), timeout=10
    )
    for thread in threads:
        thread.join(60)
    assert produced.base_offset == 0
    assert answers == [200] * FLOOD


def test_what_a_scrape_sees_is_newer_than_what_came_before_it(broker: BrokerProcess) -> None:
    stub = pb_grpc.SentinelStub(grpc.insecure_channel(broker.address))
    stub.CreateTopic(pb.CreateTopicRequest(name="t", partitions=1))
    for i in range(1, 4):
        stub.Produce(pb.ProduceRequest(topic="t", partition=0, records=[pb.Record(value=b"v")]))
        assert scrape(broker)['sentinel_log_end_offset{partition="0",topic="t"}'] == i


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", b"400"),
        (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"405"),
        (b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
        (b"GET /favicon.ico HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"200"),
    ],
)
def test_requests_that_are_not_a_scrape_get_a_status_and_the_port_goes_on(
    broker: BrokerProcess, request_bytes: bytes, status: bytes
) -> None:
    answer = exchange(broker.metrics_port, request_bytes)
    assert answer.split(b" ", 2)[1] == status, answer[:200]
    wait_for(lambda: "sentinel_active_connections" in scrape(broker), "a scrape after it")


def test_a_scrape_may_ask_for_gzip_openmetrics_and_some_names(broker: BrokerProcess) -> None:
    import gzip

    request = urllib.request.Request(
        broker.metrics_url + "?name[]=sentinel_active_connections",
        headers={
            "Accept-Encoding": "gzip",
            "Accept": "application/openmetrics-text; version=1.0.0",
        },
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        text = gzip.decompress(response.read()).decode()
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert samples and all(line.startswith("sentinel_active_connections") for line in samples)
    assert text.rstrip().endswith("# EOF")
    # HEAD: the headers only; keep-alive: two scrapes on one connection
    with socket.create_connection(("127.0.0.1", broker.metrics_port), timeout=10) as sock:
        sock.sendall(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head = _read_head(sock)
        assert head.startswith(b"HTTP/1.1 200")
        length = int(_header(head, b"content-length"))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head = _read_head(sock)
        assert head.startswith(b"HTTP/1.1 200")
        body = b""
        while chunk := sock.recv(65536):
            body += chunk
        assert abs(len(body) - length) < length // 2 and b"sentinel_active_connections" in body


def _read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        assert chunk, data
        data += chunk
    return data


def _header(head: bytes, name: bytes) -> bytes:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    raise AssertionError(f"no {name!r} in {head!r}")
