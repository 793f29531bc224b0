"""A broker of a cluster restarted after kill -9 answers Metadata with every broker from
its very first answer, on both doors.

Found by ``test_cluster_kill_soak_e2e``: a librdkafka producer (acks=all, no
idempotence, ``retries=0``) stored records twice. A restarted broker opened its doors
before it had replayed its own copy of the controller's log, and its first Metadata
answers listed only itself (the others' registrations were not in its image yet), with
no controller and no partition leaders. librdkafka (2.x) decommissions every broker a
Metadata answer leaves out: it dropped its connections to the two live brokers and
failed the produce requests in flight on them as "broker handle destroyed", which it
counts as *not persisted*, so it sent those records again, whatever ``retries`` says,
though the leaders had already committed them. Now a broker names every broker the
controller's log it stored registered (``metadata_applier.registered_in``) until its
image has replayed them (``describe.cluster_metadata``).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cluster.harness import HOST, Cluster, poll
from sentinel.protocol.kafka import serde, wire
from sentinel.protocol.kafka.headers import (
    RequestHeader,
    encode_request_header,
    request_header_version,
    response_header_version,
)
from sentinel.protocol.kafka.messages import REQUESTS, RESPONSES
from sentinel.protocol.kafka.messages import metadata as md

METADATA, VERSION = 3, 12
RESTARTS = 3


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(3, tmp_path).start()
    yield cluster
    cluster.close()


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return bytes(data)


def kafka_brokers(port: int) -> list[int] | None:
    """The node ids a Kafka Metadata (v12, no topics) answer lists; None while the
    Kafka door does not accept connections yet."""
    try:
        sock = socket.create_connection((HOST, port), timeout=10)
    except ConnectionRefusedError:
        return None
    with sock:
        out = bytearray()
        encode_request_header(out, RequestHeader(METADATA, VERSION, 1, "restart-test"),
                              request_header_version(METADATA, VERSION))
        serde.encode_into(out, REQUESTS[METADATA], VERSION, md.MetadataRequest(topics=()))
        sock.sendall(struct.pack(">i", len(out)) + out)
        (size,) = struct.unpack(">i", _read_exactly(sock, 4))
        reader = wire.Reader(_read_exactly(sock, size))
        assert reader.int32() == 1
        if response_header_version(METADATA, VERSION) >= 1:
            assert reader.uvarint() == 0
        answer = serde.decode_body(reader, RESPONSES[METADATA], VERSION)
        return sorted(b.node_id for b in answer.brokers)


def grpc_brokers(cluster: Cluster, i: int) -> list[int] | None:
    """The node ids broker ``i``'s gRPC Metadata lists; None while it is not serving."""
    try:
        return sorted(b.node_id for b in cluster.metadata(i).brokers)
    except grpc.RpcError:
        return None


def test_a_restarted_broker_lists_every_broker_from_its_first_metadata_answer(
    cluster: Cluster,
) -> None:
    cluster.wait_formed()
    cluster.create_topic("t", partitions=3, replication_factor=3)
    everyone, victim = cluster.node_ids, 2
    for restart in range(RESTARTS):
        cluster.kill(victim)
        broker = cluster.brokers[victim]
        broker.launch()
        # Asked from the moment each door opens (the gRPC one opens first).
        first_grpc = poll(lambda: grpc_brokers(cluster, victim), "the gRPC door", 60)
        first_kafka = poll(lambda: kafka_brokers(cluster.kafka_ports[victim]),
                           "the Kafka door", 60)
        broker.wait_ready()
        assert (first_grpc, first_kafka) == (everyone, everyone), (
            f"restart {restart}: broker {victim}'s first Metadata answers list brokers "
            f"{first_grpc} (gRPC) and {first_kafka} (Kafka), not {everyone}"
        )
        cluster.wait_formed()
