"""A cluster of real ``sentinel-server`` processes on loopback, for end-to-end tests.

``Cluster(3, tmp_path)`` picks every port up front (gRPC ``P_i``, Kafka ``K_i``, metrics
``M_i``, broker-to-broker ``R_i``) and builds broker ``i`` (node ids ``1..N``) as::

    sentinel-server --node-id i --peers 1@127.0.0.1:R_1,... --port P_i --kafka-port K_i
                    --metrics-port M_i --data <root>/n<i>

With ``proxied=True`` every ordered pair (src, dst) gets its own :class:`TcpProxy` in
front of ``R_dst``, and broker ``src`` is given its own view of the peers: each other
broker's address is the proxy of that link, its own is ``R_src`` (where it listens,
``--peer-listen``). The ``--peers`` strings then differ between brokers, so the cluster
id cannot be derived from them: ``--cluster-id`` is passed too. ``isolate(i)`` cuts
every link to and from broker ``i``, ``cut(src, dst)`` one link, ``heal()`` all.

Every wait has a deadline; nothing sleeps and hopes.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import grpc

from broker_process import BrokerProcess
from cluster.tcp_proxy import TcpProxy
from metrics_polling import scrape
from sentinel.cluster.offsets_topic import OFFSETS_TOPIC, partition_for
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc
from sentinel.testing.ports import pick_ports

HOST = "127.0.0.1"
CLUSTER_ID = "sentinel-test-cluster"
RPC_TIMEOUT_S = 5.0
T = TypeVar("T")


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on loopback right now, outside the ephemeral range
    (:mod:`sentinel.testing.ports`): brokers restarted on them find them free again."""
    return pick_ports(count)


def poll(check: Callable[[], T | None], what: str, timeout: float) -> T:
    """Call ``check`` until it returns something other than None; fail after
    ``timeout`` seconds naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Cluster:
    """``size`` brokers (node ids 1..size) under ``root``. ``flags``: more
    ``sentinel-server`` options for every broker (``BrokerProcess`` style)."""

    def __init__(
        self,
        size: int,
        root: Path,
        *,
        proxied: bool = False,
        cluster_id: str = CLUSTER_ID,
        flags: Mapping[str, object] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"a cluster has at least one broker, got {size}")
        self.size = size
        self.root = root
        self.proxied = proxied
        self.cluster_id = cluster_id
        ids = self.node_ids
        ports = free_ports(4 * size + (size * (size - 1) if proxied else 0))
        self.grpc_ports = {i: ports.pop() for i in ids}
        self.kafka_ports = {i: ports.pop() for i in ids}
        self.metrics_ports = {i: ports.pop() for i in ids}
        self.raft_ports = {i: ports.pop() for i in ids}
        self.proxies: dict[tuple[int, int], TcpProxy] = {}
        if proxied:
            for src in ids:
                for dst in ids:
                    if src != dst:
                        self.proxies[src, dst] = TcpProxy(HOST, self.raft_ports[dst], ports.pop())
        self.brokers: dict[int, BrokerProcess] = {
            i: BrokerProcess(root / f"n{i}", None, **{**self.broker_flags(i), **(flags or {})})
            for i in ids
        }

    @property
    def node_ids(self) -> list[int]:
        return list(range(1, self.size + 1))

    def peers_for(self, src: int) -> str:
        """The ``--peers`` value broker ``src`` is given (its view of the cluster)."""
        items = []
        for dst in self.node_ids:
            if self.proxied and dst != src:
                port = self.proxies[src, dst].port
            else:
                port = self.raft_ports[dst]
            items.append(f"{dst}@{HOST}:{port}")
        return ",".join(items)

    def broker_flags(self, i: int) -> dict[str, object]:
        flags: dict[str, object] = {
            "node_id": i,
            "peers": self.peers_for(i),
            "port": self.grpc_ports[i],
            "kafka_port": self.kafka_ports[i],
            "metrics_port": self.metrics_ports[i],
        }
        if self.proxied:
            flags["cluster_id"] = self.cluster_id
            flags["peer_listen"] = f"{HOST}:{self.raft_ports[i]}"
        return flags

    def command(self, i: int) -> list[str]:
        """Broker ``i``'s command line (nothing is started)."""
        return self.brokers[i].command()

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> Cluster:
        """Start the proxies, launch every broker, then wait for each one's ready line
        (launched together: a broker may wait for its peers before it is ready)."""
        self.start_proxies()
        try:
            for broker in self.brokers.values():
                broker.launch()
            for broker in self.brokers.values():
                broker.wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def start_proxies(self) -> None:
        """Start every link's proxy (``start()`` does; alone, to test the wiring)."""
        for proxy in self.proxies.values():
            proxy.start()

    def alive(self, i: int) -> bool:
        proc = self.brokers[i].proc
        return proc is not None and proc.poll() is None

    def live_ids(self) -> list[int]:
        return [i for i in self.node_ids if self.alive(i)]

    def kill(self, i: int) -> None:
        """kill -9 broker ``i``."""
        self.brokers[i].kill()

    def restart(self, i: int) -> None:
        """Start broker ``i`` again (same ports, same data); a running one is stopped
        gracefully first."""
        broker = self.brokers[i]
        if broker.proc is not None:
            code = broker.stop()
            assert code == 0, f"broker {i} exited with {code}; log:\n{broker.read_log()}"
        broker.start()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every live broker at once, assert each exits 0, stop the proxies."""
        live = self.live_ids()
        for i in live:
            proc = self.brokers[i].proc
            assert proc is not None
            proc.send_signal(signal.SIGTERM)
        failures = []
        for i in live:
            broker = self.brokers[i]
            assert broker.proc is not None
            try:
                code = broker.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                broker.proc.send_signal(signal.SIGUSR2)  # its asyncio tasks into the log
                time.sleep(0.5)
                broker.proc.send_signal(signal.SIGUSR1)  # its threads' stacks
                time.sleep(1.0)
                broker.kill()
                failures.append(f"broker {i} did not stop in {timeout} s; log:\n"
                                f"{broker.read_log()[-20000:]}")
                continue
            broker.kill()  # reaps and closes its pipes (the process is gone)
            if code != 0:
                failures.append(f"broker {i} exited with {code}; log:\n{broker.read_log()}")
        self.close()
        assert not failures, "\n".join(failures)

    def close(self) -> None:
        """Kill whatever is still running and stop the proxies (test teardown)."""
        for broker in self.brokers.values():
            if broker.proc is not None:
                broker.kill()
        for proxy in self.proxies.values():
            proxy.stop()

    # -- faults (proxied clusters) ----------------------------------------------------

    def proxy(self, src: int, dst: int) -> TcpProxy:
        """The link carrying the connections broker ``src`` opens to broker ``dst``."""
        if not self.proxied:
            raise ValueError("a cluster started without proxied=True has no links to cut")
        return self.proxies[src, dst]

    def cut(self, src: int, dst: int) -> None:
        self.proxy(src, dst).partition()

    def isolate(self, i: int, hang: bool = False) -> None:
        """Cut every link to and from broker ``i`` (``hang``: black-hole them)."""
        for other in self.node_ids:
            if other != i:
                self.proxy(i, other).partition(hang)
                self.proxy(other, i).partition(hang)

    def heal(self) -> None:
        if not self.proxied:
            raise ValueError("a cluster started without proxied=True has no links to heal")
        for proxy in self.proxies.values():
            proxy.heal()

    # -- addresses, metrics, metadata -------------------------------------------------

    def grpc_address(self, i: int) -> str:
        return f"{HOST}:{self.grpc_ports[i]}"

    def kafka_bootstrap(self) -> str:
        """Every broker's Kafka address, comma-separated (``bootstrap.servers``)."""
        return ",".join(f"{HOST}:{self.kafka_ports[i]}" for i in self.node_ids)

    def metrics(self, i: int) -> dict[str, float]:
        """Broker ``i``'s ``/metrics``: every sample by name with its labels."""
        return scrape(self.brokers[i])

    def partition_metric(self, i: int, name: str, topic: str, partition: int) -> float | None:
        """One per-partition sample of broker ``i`` (labels in any order), or None."""
        wanted = {f'topic="{topic}"', f'partition="{partition}"'}
        for key, value in self.metrics(i).items():
            metric, _, labels = key.partition("{")
            if metric == name and wanted <= set(labels.rstrip("}").split(",")):
                return value
        return None

    def stub(self, i: int) -> tuple[grpc.Channel, pb_grpc.SentinelStub]:
        channel = grpc.insecure_channel(self.grpc_address(i))
        return channel, pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]

    def metadata(self, i: int, topics: Iterable[str] = ()) -> pb.MetadataResponse:
        """Broker ``i``'s metadata (raises grpc.RpcError)."""
        channel, stub = self.stub(i)
        with channel:
            response: pb.MetadataResponse = stub.FetchMetadata(
                pb.MetadataRequest(topics=list(topics)), timeout=RPC_TIMEOUT_S
            )
            return response

    def leader_of(
        self,
        topic: str,
        partition: int,
        *,
        via: Iterable[int] | None = None,
        not_in: Iterable[int] = (),
        timeout: float = 30.0,
    ) -> int:
        """The node id a live broker (of ``via``, default all) names as the leader of
        ``topic``/``partition``, once one names a leader not in ``not_in``."""
        asked = list(via) if via is not None else self.node_ids
        excluded = set(not_in)

        def check() -> int | None:
            for i in asked:
                if not self.alive(i):
                    continue
                try:
                    response = self.metadata(i, [topic])
                except grpc.RpcError:
                    continue
                for info in response.topics:
                    for part in info.partitions:
                        if (
                            info.name == topic
                            and part.partition == partition
                            and part.leader > 0
                            and part.leader not in excluded
                        ):
                            return int(part.leader)
            return None

        return poll(check, f"a leader of {topic}/{partition} outside {sorted(excluded)}", timeout)

    def coordinator_of(
        self, group_id: str, *, not_in: Iterable[int] = (), timeout: float = 30.0
    ) -> int:
        """The node id a live broker names as the leader of ``group_id``'s partition
        of ``__consumer_offsets`` (the group's coordinator), outside ``not_in``."""

        def count() -> int | None:
            for i in self.live_ids():
                try:
                    response = self.metadata(i, [OFFSETS_TOPIC])
                except grpc.RpcError:
                    continue
                for info in response.topics:
                    if info.name == OFFSETS_TOPIC and info.partitions:
                        return len(info.partitions)
            return None

        partitions = poll(count, f"topic {OFFSETS_TOPIC}", timeout)
        return self.leader_of(
            OFFSETS_TOPIC, partition_for(group_id, partitions), not_in=not_in, timeout=timeout
        )

    def wait_formed(self, timeout: float = 30.0) -> None:
        """Wait until every live broker's metadata lists every broker."""
        def check() -> bool | None:
            for i in self.live_ids():
                try:
                    brokers = {b.node_id for b in self.metadata(i).brokers}
                except grpc.RpcError:
                    return None
                if brokers != set(self.node_ids):
                    return None
            return True

        poll(check, f"all {self.size} brokers to be registered", timeout)

    def create_topic(
        self, name: str, partitions: int, replication_factor: int, timeout: float = 30.0
    ) -> pb.TopicInfo:
        """Create a topic through any live broker, retrying while the cluster cannot
        (no controller yet); the last refusal is named on timeout."""
        last: list[str] = []

        def attempt() -> pb.TopicInfo | None:
            for i in self.live_ids():
                channel, stub = self.stub(i)
                with channel:
                    try:
                        response = stub.CreateTopic(
                            pb.CreateTopicRequest(
                                name=name,
                                partitions=partitions,
                                replication_factor=replication_factor,
                            ),
                            timeout=RPC_TIMEOUT_S,
                        )
                    except grpc.RpcError as error:
                        last[:] = [f"broker {i}: {error.code()} {error.details()}"]
                        if error.code() == grpc.StatusCode.ALREADY_EXISTS:
                            raise
                        continue
                topic: pb.TopicInfo = response.topic
                return topic
            return None

        try:
            return poll(attempt, f"topic {name} to be created", timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}; last refusal: {last}") from None
