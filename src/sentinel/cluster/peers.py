"""The brokers of a cluster as ``--peers`` names them: ``id@host:port,id@host:port,...``.

The address is the one brokers use among themselves (``sentinel.cluster.transport``);
client addresses travel through the controller's metadata, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentinel.config import ConfigError

__all__ = ["Peer", "parse_peers"]


@dataclass(frozen=True, slots=True)
class Peer:
    """One broker: its node id and its broker-to-broker address."""

    node_id: int
    host: str
    port: int

    @property
    def address(self) -> str:
        """``host:port`` (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.node_id}@{self.address}"


def _parse_item(item: str) -> Peer:
    ident, at, address = item.partition("@")
    if not at:
        raise ConfigError(f"--peers item {item!r}: expected id@host:port")
    ident = ident.strip()
    if not ident.isdigit() or not ident.isascii():
        raise ConfigError(f"--peers item {item!r}: node id {ident!r} is not an integer >= 0")
    address = address.strip()
    if address.startswith("["):  # [ipv6]:port
        host, close, rest = address[1:].partition("]")
        if not close or not rest.startswith(":"):
            raise ConfigError(f"--peers item {item!r}: expected id@[ipv6]:port")
        port_text = rest[1:]
    else:
        host, colon, port_text = address.rpartition(":")
        if not colon:
            raise ConfigError(f"--peers item {item!r}: expected id@host:port")
        if ":" in host:
            raise ConfigError(f"--peers item {item!r}: an IPv6 host goes in brackets")
    if not host or any(c.isspace() for c in host):
        raise ConfigError(f"--peers item {item!r}: empty or invalid host")
    if not port_text.isdigit() or not port_text.isascii() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"--peers item {item!r}: port {port_text!r} is not in 1..65535")
    return Peer(int(ident), host, int(port_text))


def parse_peers(text: str) -> dict[int, Peer]:
    """The peers of ``text`` by node id; ``ConfigError`` names the first bad item
    (malformed, a node id or an address given twice)."""
    peers: dict[int, Peer] = {}
    addresses: dict[tuple[str, int], int] = {}
    items = text.split(",")
    if not text.strip():
        raise ConfigError("--peers is empty: expected id@host:port,...")
    for raw in items:
        item = raw.strip()
        if not item:
            raise ConfigError(f"--peers {text!r}: an empty item")
        peer = _parse_item(item)
        if peer.node_id in peers:
            raise ConfigError(f"--peers item {item!r}: node id {peer.node_id} given twice")
        key = (peer.host.lower(), peer.port)
        if key in addresses:
            raise ConfigError(
                f"--peers item {item!r}: address {peer.address} is also node {addresses[key]}'s"
            )
        peers[peer.node_id] = peer
        addresses[key] = peer.node_id
    return peers
