"""--peers parsing: every malformed item is refused with one line naming it."""

from __future__ import annotations

import pytest

from sentinel.cluster.peers import Peer, parse_peers
from sentinel.config import ConfigError


def test_three_peers() -> None:
    peers = parse_peers("1@127.0.0.1:19091,2@127.0.0.1:19092, 3@localhost:19093")
    assert peers == {
        1: Peer(1, "127.0.0.1", 19091),
        2: Peer(2, "127.0.0.1", 19092),
        3: Peer(3, "localhost", 19093),
    }
    assert peers[1].address == "127.0.0.1:19091"
    assert str(peers[3]) == "3@localhost:19093"


def test_ipv6_in_brackets() -> None:
    peers = parse_peers("0@[::1]:9000")
    assert peers[0] == Peer(0, "::1", 9000)
    assert peers[0].address == "[::1]:9000"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("", "empty"),
        ("1@127.0.0.1:1,", "empty item"),
        ("127.0.0.1:9000", "'127.0.0.1:9000'"),
        ("x@127.0.0.1:9000", "'x@127.0.0.1:9000'"),
        ("-1@127.0.0.1:9000", "'-1@127.0.0.1:9000'"),
        ("1@127.0.0.1", "'1@127.0.0.1'"),
        ("1@:9000", "'1@:9000'"),
        ("1@h:0", "'1@h:0'"),
        ("1@h:65536", "'1@h:65536'"),
        ("1@h:port", "'1@h:port'"),
        ("1@::1:9000", "brackets"),
        ("1@[::1]9000", "'1@[::1]9000'"),
        ("1@a:1,1@b:2", "'1@b:2'"),
        ("1@a:1,2@a:1", "'2@a:1'"),
        ("1@a b:1", "'1@a b:1'"),
        ("\u0661@h:1", "'\u0661@h:1'"),
    ],
)
def test_bad_items_are_named(text: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_peers(text)
    message = str(info.value)
    assert "\n" not in message
    assert named in message
