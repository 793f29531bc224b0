"""The cluster harness, before the cluster runs: the command lines it builds, the proxy
wiring (each broker's view of each peer reaches that peer's raft port, and isolate cuts
exactly the links of one broker), and launching brokers together then awaiting them."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker_process import BrokerProcess
from cluster.harness import CLUSTER_ID, Cluster


def option(cmd: list[str], name: str) -> str:
    assert cmd.count(name) == 1, f"{name} given {cmd.count(name)} times in {cmd}"
    return cmd[cmd.index(name) + 1]


def test_direct_cluster_command_lines(tmp_path: Path) -> None:
    cluster = Cluster(3, tmp_path)
    peers = ",".join(f"{i}@127.0.0.1:{cluster.raft_ports[i]}" for i in (1, 2, 3))
    every_port: list[int] = []
    for i in (1, 2, 3):
        cmd = cluster.command(i)
        assert option(cmd, "--node-id") == str(i)
        assert option(cmd, "--peers") == peers  # one view, shared: the id derives from it
        assert option(cmd, "--port") == str(cluster.grpc_ports[i])
        assert option(cmd, "--kafka-port") == str(cluster.kafka_ports[i])
        assert option(cmd, "--metrics-port") == str(cluster.metrics_ports[i])
        assert option(cmd, "--data") == str(tmp_path / f"n{i}")
        assert option(cmd, "--host") == "127.0.0.1"
        assert "--cluster-id" not in cmd and "--peer-listen" not in cmd
        assert cluster.grpc_address(i) == f"127.0.0.1:{cluster.grpc_ports[i]}"
        every_port += [cluster.grpc_ports[i], cluster.kafka_ports[i],
                       cluster.metrics_ports[i], cluster.raft_ports[i]]
    assert len(set(every_port)) == 12
    assert cluster.kafka_bootstrap() == ",".join(
        f"127.0.0.1:{cluster.kafka_ports[i]}" for i in (1, 2, 3)
    )
    assert cluster.proxies == {}
    with pytest.raises(ValueError, match="proxied"):
        cluster.isolate(1)


def test_extra_flags_reach_every_broker(tmp_path: Path) -> None:
    cluster = Cluster(2, tmp_path, flags={"shutdown_grace_s": 7})
    for i in (1, 2):
        assert option(cluster.command(i), "--shutdown-grace-s") == "7"


def test_proxied_cluster_command_lines(tmp_path: Path) -> None:
    cluster = Cluster(3, tmp_path, proxied=True)
    assert set(cluster.proxies) == {(s, d) for s in (1, 2, 3) for d in (1, 2, 3) if s != d}
    views = set()
    for src in (1, 2, 3):
        cmd = cluster.command(src)
        view = option(cmd, "--peers")
        views.add(view)
        expected = [
            f"{dst}@127.0.0.1:"
            + str(cluster.raft_ports[dst] if dst == src else cluster.proxies[src, dst].port)
            for dst in (1, 2, 3)
        ]
        assert view.split(",") == expected
        assert option(cmd, "--cluster-id") == CLUSTER_ID
        assert option(cmd, "--peer-listen") == f"127.0.0.1:{cluster.raft_ports[src]}"
        for dst in (1, 2, 3):
            if dst != src:  # every proxy fronts its destination's raft port
                proxy = cluster.proxies[src, dst]
                assert (proxy.target_host, proxy.target_port) == (
                    "127.0.0.1", cluster.raft_ports[dst])
    assert len(views) == 3  # each broker its own view
    ports = [p.port for p in cluster.proxies.values()] + list(cluster.raft_ports.values())
    assert len(set(ports)) == 9
    assert not any(p.running for p in cluster.proxies.values())  # inspecting starts nothing


@pytest.fixture
def wired(tmp_path: Path) -> Iterator[tuple[Cluster, dict[int, socket.socket]]]:
    """A proxied cluster whose raft ports are plain listening sockets (no brokers)."""
    cluster = Cluster(3, tmp_path, proxied=True)
    listeners: dict[int, socket.socket] = {}
    for i, port in cluster.raft_ports.items():
        sock = socket.socket()
        sock.bind(("127.0.0.1", port))
        sock.listen(16)
        sock.settimeout(10)
        listeners[i] = sock
    cluster.start_proxies()
    yield cluster, listeners
    cluster.close()
    for sock in listeners.values():
        sock.close()
    assert not any(p.running for p in cluster.proxies.values())


def peer_address(cluster: Cluster, src: int, dst: int) -> tuple[str, int]:
    """Where broker ``src`` dials broker ``dst``: parsed from its own --peers."""
    for item in option(cluster.command(src), "--peers").split(","):
        node, _, address = item.partition("@")
        if int(node) == dst:
            host, _, port = address.rpartition(":")
            return host, int(port)
    raise AssertionError(f"broker {src} has no address for {dst}")


def test_links_reach_their_destination_and_isolate_cuts_one_broker(
    wired: tuple[Cluster, dict[int, socket.socket]],
) -> None:
    cluster, listeners = wired
    pairs = [(s, d) for s in (1, 2, 3) for d in (1, 2, 3) if s != d]

    def check_link(src: int, dst: int) -> None:
        host, port = peer_address(cluster, src, dst)
        with socket.create_connection((host, port), timeout=10) as client:
            client.sendall(b"hello %d->%d" % (src, dst))
            served, _ = listeners[dst].accept()
            with served:
                served.settimeout(10)
                assert served.recv(64) == b"hello %d->%d" % (src, dst)
                served.sendall(b"ack")
                assert client.recv(3) == b"ack"

    def check_cut(src: int, dst: int) -> None:
        address = peer_address(cluster, src, dst)
        with (
            socket.create_connection(address, timeout=10) as client,
            contextlib.suppress(ConnectionError),  # closed, or reset
        ):
            assert client.recv(1) == b""

    for src, dst in pairs:
        check_link(src, dst)
    cluster.isolate(2)
    for src, dst in pairs:
        if 2 in (src, dst):
            check_cut(src, dst)
        else:
            check_link(src, dst)
    for sock in listeners.values():  # nothing from a cut link reached a raft port
        sock.settimeout(0.05)
        with pytest.raises(TimeoutError):
            sock.accept()
        sock.settimeout(10)
    cluster.heal()
    for src, dst in pairs:
        check_link(src, dst)
    cluster.cut(3, 1)
    check_cut(3, 1)
    check_link(1, 3)


def test_brokers_launched_together_then_awaited(tmp_path: Path) -> None:
    brokers = [BrokerProcess(tmp_path / f"b{i}") for i in range(2)]
    try:
        for broker in brokers:
            broker.launch()
        for broker in brokers:
            broker.wait_ready()
            assert broker.port and broker.kafka_port and broker.metrics_port
    finally:
        for broker in brokers:
            broker.kill()
