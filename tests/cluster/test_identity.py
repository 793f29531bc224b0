"""cluster.json: the first start writes it durably; a different node or cluster is refused."""

from __future__ import annotations

import contextlib
import json

import pytest

from sentinel.cluster.identity import ClusterIdentityError, check_identity, cluster_id_of
from sentinel.cluster.peers import parse_peers
from sentinel.config import ConfigError
from sentinel.errors import CorruptionError, UnsupportedFormatError
from sentinel.fs import MemFS, SimulatedCrash

PEERS = parse_peers("1@127.0.0.1:19091,2@127.0.0.1:19092,3@127.0.0.1:19093")
OTHER = parse_peers("1@127.0.0.1:19091,2@127.0.0.1:19092,3@127.0.0.1:19094")


def test_cluster_id_is_16_hex_and_order_free() -> None:
    cid = cluster_id_of(PEERS)
    assert len(cid) == 16
    int(cid, 16)
    reordered = parse_peers("3@127.0.0.1:19093,1@127.0.0.1:19091,2@127.0.0.1:19092")
    assert cluster_id_of(reordered) == cid
    assert cluster_id_of(OTHER) != cid


def test_first_start_writes_durably_then_same_start_passes() -> None:
    fs = MemFS()
    cid = check_identity(fs, "/data", 2, PEERS)
    assert cid == cluster_id_of(PEERS)
    fs.crash()  # what was written is durable
    doc = json.loads(fs.read_all("/data/cluster.json"))
    assert doc == {"format": 1, "cluster_id": cid, "node_id": 2}
    assert check_identity(fs, "/data", 2, PEERS) == cid


@pytest.mark.parametrize(("node", "peers"), [(1, PEERS), (2, OTHER)])
def test_other_node_or_cluster_refused(node: int, peers: dict[int, object]) -> None:
    fs = MemFS()
    check_identity(fs, "/data", 2, PEERS)
    with pytest.raises(ClusterIdentityError) as info:
        check_identity(fs, "/data", node, peers)  # type: ignore[arg-type]
    message = str(info.value)
    assert "/data/cluster.json" in message and "\n" not in message
    assert cluster_id_of(PEERS) in message and "node 2" in message
    assert json.loads(fs.read_all("/data/cluster.json"))["node_id"] == 2  # unchanged


def test_former_single_broker_refused() -> None:
    fs = MemFS()
    fs.makedirs("/data/topics/orders-0")
    with pytest.raises(ClusterIdentityError, match=r"/data/cluster\.json"):
        check_identity(fs, "/data", 1, PEERS)
    assert not fs.exists("/data/cluster.json")


def test_empty_topics_dir_is_fine() -> None:
    fs = MemFS()
    fs.makedirs("/data/topics")
    check_identity(fs, "/data", 1, PEERS)


def test_node_not_in_peers_refused() -> None:
    with pytest.raises(ConfigError, match="--node-id 7"):
        check_identity(MemFS(), "/data", 7, PEERS)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"\xff\xfe",
        b"[]",
        b'{"format": "1", "cluster_id": "ab", "node_id": 1}',
        b'{"format": 1, "cluster_id": 5, "node_id": 1}',
        b'{"format": 1, "cluster_id": "ab", "node_id": -1}',
        b'{"format": 1, "cluster_id": "ab", "node_id": true}',
        b'{"format": 1, "cluster_id": "ab"}',
    ],
)
def test_corrupt_file_refused_naming_it(content: bytes) -> None:
    fs = MemFS()
    fs.makedirs("/data")
    f = fs.create("/data/cluster.json")
    f.write(content)
    f.close()
    with pytest.raises(CorruptionError) as info:
        check_identity(fs, "/data", 1, PEERS)
    assert "/data/cluster.json" in str(info.value) and "\n" not in str(info.value)


def test_future_format_refused() -> None:
    fs = MemFS()
    fs.makedirs("/data")
    f = fs.create("/data/cluster.json")
    f.write(b'{"format": 2, "cluster_id": "ab", "node_id": 1}')
    f.close()
    with pytest.raises(UnsupportedFormatError, match=r"/data/cluster\.json"):
        check_identity(fs, "/data", 1, PEERS)


def test_crash_at_every_step_leaves_nothing_or_the_whole_file() -> None:
    for step in range(10):
        fs = MemFS()
        fs.makedirs("/data")
        fs.fail_after(step)
        with contextlib.suppress(SimulatedCrash):
            check_identity(fs, "/data", 1, PEERS)
        fs.fail_after(None)
        fs.crash()
        # either absent (a fresh start writes it) or whole and accepted
        assert check_identity(fs, "/data", 1, PEERS) == cluster_id_of(PEERS)
