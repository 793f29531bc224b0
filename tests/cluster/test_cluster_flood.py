"""Floods on a cluster broker's peer port (real processes, loopback): many connections
left idle, a valid Hello followed by garbage or by a huge length prefix, a Hello sent
one byte at a time (slowloris). The attacked broker (the leader of the partition)
keeps acknowledging acks=all produces within a bounded time, keeps its peers, closes
the flood's connections (bounded: ``MAX_HANDSHAKES`` waiting for a Hello), and logs
its refusals at most ``REFUSAL_LINES_PER_S`` lines a second, not one per connection
or byte."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from cluster.harness import HOST, Cluster, poll
from cluster.test_cluster_e2e import Acks, producer
from sentinel.cluster.identity import cluster_id_of
from sentinel.cluster.peers import parse_peers
from sentinel.cluster.transport import MAX_HANDSHAKES, REFUSAL_LINES_PER_S
from sentinel.cluster.wire import Hello, encode

TOPIC = "flood"
IDLE = 3 * MAX_HANDSHAKES


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(3, tmp_path_factory.mktemp("flood")).start()
    try:
        cluster.wait_formed()
        cluster.create_topic(TOPIC, 1, 3)
        yield cluster
    finally:
        cluster.close()


def hello_bytes(cluster: Cluster, src: int, dst: int) -> bytes:
    cluster_id = cluster_id_of(parse_peers(cluster.peers_for(dst)))
    return b"".join(bytes(b) for b in encode(Hello(cluster_id, src, dst)))


def produce_all_acked(cluster: Cluster, count: int, within: float) -> None:
    acks = Acks()
    out = producer(cluster.kafka_bootstrap(), **{"message.timeout.ms": int(within * 1000)})
    started = time.monotonic()
    for n in range(count):
        out.produce(TOPIC, value=b"%d" % n, partition=0, on_delivery=acks)
    assert out.flush(within + 5) == 0 and not acks.failed, acks.failed
    assert len(acks.acked) == count
    assert time.monotonic() - started < within


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def slowloris(port: int, payload: bytes, done: list[float]) -> None:
    """A Hello one byte every 0.2 s; records when the broker closed the connection."""
    with socket.create_connection((HOST, port)) as sock:
        started = time.monotonic()
        try:
            for byte in payload * 10:
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
                if closed_by_peer(sock):
                    break
        except OSError:
            pass
        done.append(time.monotonic() - started)


def refusal_lines(cluster: Cluster, i: int) -> int:
    return cluster.brokers[i].read_log().count("refused a connection")


def test_peer_port_floods_leave_the_broker_serving(cluster: Cluster) -> None:
    produce_all_acked(cluster, 20, within=15)
    leader = cluster.leader_of(TOPIC, 0)
    port = cluster.raft_ports[leader]
    other = next(i for i in cluster.node_ids if i != leader)
    before = refusal_lines(cluster, leader)

    slow_done: list[float] = []
    # every byte but the last of a Hello, slowly: never completes
    slow = threading.Thread(
        target=slowloris, args=(port, hello_bytes(cluster, other, leader)[:-1], slow_done)
    )
    slow.start()
    idle = [socket.create_connection((HOST, port)) for _ in range(IDLE)]
    try:
        # A Hello of a real peer, then garbage; then a Hello and a huge length prefix;
        # a first frame announcing 1 GiB. Each is closed at once.
        attacks = [
            hello_bytes(cluster, other, leader) + struct.pack("<I", 32) + bytes(range(256)) * 64,
            hello_bytes(cluster, other, leader) + struct.pack("<I", 0xFFFFFFF0),
            struct.pack("<I", 1 << 30) + b"\x01",
        ]
        for payload in attacks:
            with socket.create_connection((HOST, port)) as sock:
                sock.sendall(payload)
                poll(lambda s=sock: closed_by_peer(s) or None, "the broker to close", 10)
        # The broker is still the cluster's: acks=all within a bounded time, meanwhile.
        produce_all_acked(cluster, 50, within=15)
        # Connections without a Hello are bounded: the oldest beyond the bound closed.
        poll(lambda: sum(map(closed_by_peer, idle)) >= IDLE - MAX_HANDSHAKES or None,
             "the idle flood to be cut to the bound", 10)
    finally:
        for sock in idle:
            sock.close()
    slow.join(30)
    assert slow_done and slow_done[0] < 10, "a slow Hello was held past the hello timeout"
    # Counted, logged at most REFUSAL_LINES_PER_S lines a second: far fewer lines than
    # the refusals (more than IDLE - MAX_HANDSHAKES of them).
    lines = refusal_lines(cluster, leader) - before
    assert 1 <= lines <= 4 * REFUSAL_LINES_PER_S < IDLE - MAX_HANDSHAKES, lines
    # The flood's connection claiming to be ``other`` replaced its real one for a
    # moment: the cluster heals by itself and keeps acknowledging.
    produce_all_acked(cluster, 20, within=15)
    assert all(cluster.alive(i) for i in cluster.node_ids)


def test_idle_connections_do_not_hold_memory_or_slots(cluster: Cluster) -> None:
    """Opened, closed, opened again, many times: nothing builds up, the broker serves."""
    leader = cluster.leader_of(TOPIC, 0)
    port = cluster.raft_ports[leader]
    for _ in range(5):
        batch = [socket.create_connection((HOST, port)) for _ in range(MAX_HANDSHAKES)]
        for sock in batch:
            sock.close()
    produce_all_acked(cluster, 20, within=15)
