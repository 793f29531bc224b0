"""Which node of which cluster a data directory belongs to: ``<data>/cluster.json``.

The cluster id is a digest of the ``--peers`` list, so a broker started with another
list, or with another ``--node-id``, on the same data directory is refused before it
can talk to anybody (it would otherwise vote and replicate under a name that is not
its own). The first start writes the file durably: ``cluster.json.tmp``, fsync,
rename, fsync of the directory; a crash leaves the old state or the new, never a mix.

    {"format": 1, "cluster_id": "<16 hex>", "node_id": <int>}
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping

from sentinel.cluster.peers import Peer
from sentinel.config import ConfigError
from sentinel.errors import CorruptionError, UnsupportedFormatError
from sentinel.fs import FS

__all__ = ["FORMAT", "NAME", "ClusterIdentityError", "check_identity", "cluster_id_of"]

NAME = "cluster.json"
FORMAT = 1


class ClusterIdentityError(ConfigError):
    """The data directory belongs to another node or another cluster than the one
    ``--node-id``/``--peers`` name (or to a single broker)."""


def cluster_id_of(peers: Mapping[int, Peer]) -> str:
    """16 hex chars of sha256 over the ``id@host:port`` items sorted by node id."""
    items = ",".join(str(peers[i]) for i in sorted(peers))
    return hashlib.sha256(items.encode()).hexdigest()[:16]


def _load(fs: FS, path: str) -> tuple[str, int]:
    data = fs.read_all(path)
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptionError(path, "the whole file", f"not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise CorruptionError(path, "the whole file", "not a JSON object")
    fmt = doc.get("format")
    if fmt != FORMAT:
        if isinstance(fmt, int) and not isinstance(fmt, bool):
            raise UnsupportedFormatError(f"{path}: format {fmt}, this build reads {FORMAT}")
        raise CorruptionError(path, "format", f"{fmt!r} is not a format number")
    cid, node = doc.get("cluster_id"), doc.get("node_id")
    if not isinstance(cid, str) or not cid:
        raise CorruptionError(path, "cluster_id", f"{cid!r} is not a cluster id")
    if not isinstance(node, int) or isinstance(node, bool) or node < 0:
        raise CorruptionError(path, "node_id", f"{node!r} is not a node id")
    return cid, node


def _store(fs: FS, data_dir: str, path: str, cluster_id: str, node_id: int) -> None:
    body = json.dumps({"format": FORMAT, "cluster_id": cluster_id, "node_id": node_id})
    tmp = path + ".tmp"
    fs.makedirs(data_dir)
    f = fs.create(tmp)
    try:
        f.write((body + "\n").encode())
        f.sync()
    finally:
        f.close()
    fs.rename(tmp, path)
    fs.sync_dir(data_dir)


def check_identity(
    fs: FS,
    data_dir: str,
    node_id: int,
    peers: Mapping[int, Peer],
    cluster_id: str | None = None,
) -> str:
    """The cluster id (``cluster_id`` if given, else derived from ``peers``), after
    checking ``data_dir`` is node ``node_id``'s of it.

    The first start writes ``cluster.json`` (durable when this returns). A different
    node id or cluster id stored there, or a data directory holding topics of a former
    single broker without the file, raises ``ClusterIdentityError`` naming the file;
    a damaged file raises ``CorruptionError``."""
    if node_id not in peers:
        known = ",".join(str(i) for i in sorted(peers))
        raise ConfigError(f"--node-id {node_id} is not in --peers (node ids {known})")
    if cluster_id is not None and not (
        0 < len(cluster_id) <= 64 and cluster_id.isascii() and cluster_id.isprintable()
        and " " not in cluster_id
    ):
        raise ConfigError(f"--cluster-id {cluster_id!r}: 1-64 printable ASCII characters")
    given = cluster_id or cluster_id_of(peers)
    path = posixpath.join(data_dir, NAME)
    if fs.exists(path):
        stored, stored_node = _load(fs, path)
        if (stored, stored_node) != (given, node_id):
            raise ClusterIdentityError(
                f"{path}: this data directory is node {stored_node} of cluster id {stored}, "
                f"but --node-id/--peers/--cluster-id make it node {node_id} of cluster id "
                f"{given}"
            )
        return given
    topics = posixpath.join(data_dir, "topics")
    if fs.is_dir(topics) and fs.listdir(topics):
        raise ClusterIdentityError(
            f"{path} is missing but {topics} holds topics: the data directory of a "
            f"single broker cannot join cluster {given} as node {node_id}"
        )
    _store(fs, data_dir, path, given, node_id)
    return given
