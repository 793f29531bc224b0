"""The pure parts behind the operator's metrics: the connection count and the ledger."""

from __future__ import annotations

from sentinel.server.connections import ConnectionCount, count_established
from sentinel.server.consumption import ConsumptionLedger

PROC = """  sl  local_address rem_address   st tx_queue rx_queue
   0: 0100007F:2384 00000000:0000 0A 00000000:00000000
   1: 0100007F:2384 0100007F:D3A2 01 00000000:00000000
   2: 0100007F:D3A2 0100007F:2384 01 00000000:00000000
   3: 0100007F:2384 0100007F:D3A4 06 00000000:00000000
   4: 0100007F:2384 0100007F:D3A6 01 00000000:00000000
""".splitlines()


def test_only_established_sockets_on_the_broker_port_count() -> None:
    # 0x2384 = 9092: the listener (0A), the client's own end (local D3A2) and a
    # TIME_WAIT (06) do not count.
    assert count_established(PROC, 9092) == 2
    assert ConnectionCount(lambda: 9092, read=lambda _path: PROC)() == 4  # tcp and tcp6


def test_an_unreadable_proc_is_unknown() -> None:
    def fail(path: str) -> list[str]:
        raise OSError(path)

    assert ConnectionCount(lambda: 9092, read=fail)() == -1


def test_commits_count_what_they_move_past() -> None:
    ledger = ConsumptionLedger()
    ledger.fetched("peer-a", "t", 0, 100)
    ledger.fetched("peer-a", "t", 0, 600)  # read ahead: the start stays 100
    assert ledger.committed("peer-a", "g", "t", 0, 600) == 500
    assert ledger.committed("peer-b", "g", "t", 0, 650) == 50  # the group's last commit
    assert ledger.committed("peer-b", "g", "t", 0, 640) == 0  # moved back
    assert ledger.committed("peer-c", "other", "t", 0, 900) == 0  # nothing known: baseline


def test_the_ledger_is_bounded() -> None:
    ledger = ConsumptionLedger(limit=2)
    for peer in ("a", "b", "c"):
        ledger.fetched(peer, "t", 0, 0)
    assert ledger.committed("a", "g", "t", 0, 10) == 0  # "a" was forgotten
    assert ledger.committed("c", "h", "t", 0, 10) == 10
