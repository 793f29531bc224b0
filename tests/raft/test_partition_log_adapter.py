"""The Raft log on the real partition log, and the hard-state file."""

from __future__ import annotations

import pytest

from raft.sim_partition import PartitionStorage, payload
from sentinel.errors import CorruptionError
from sentinel.fs import MemFS
from sentinel.raft.hard_state_file import DurableState, HardStateFile, encode
from sentinel.raft.log import Entry
from sentinel.raft.partition_log_adapter import entry_of
from sentinel.raft.state import HardState
from sentinel.record import parse_header


def test_hard_state_survives_a_crash_only_once_stored() -> None:
    """Figure 2: "currentTerm ... votedFor ... updated on stable storage before
    responding to RPCs": stored means durable (a crash right after keeps it); the
    previous state is what a crash mid-write leaves."""
    fs = MemFS()
    f = HardStateFile(fs, "/g")
    assert f.load() is None
    f.store(DurableState(HardState(3, 2, 10)))
    fs.crash()
    loaded = f.load()
    assert loaded is not None and loaded.hard == HardState(3, 2, 10)
    fs.fail_after(2)  # the temp file is written, then the crash before the rename
    with pytest.raises(Exception, match="simulated crash"):
        f.store(DurableState(HardState(4, None, 11)))
    fs.crash()
    loaded = HardStateFile(fs, "/g").load()
    assert loaded is not None and loaded.hard == HardState(3, 2, 10)


def test_a_damaged_hard_state_file_is_refused_naming_it() -> None:
    fs = MemFS()
    fs.makedirs("/g")
    data = bytearray(encode(DurableState(HardState(5, 1, 0))))
    data[6] ^= 1
    out = fs.create("/g/raft-state")
    out.write(bytes(data))
    out.close()
    with pytest.raises(CorruptionError, match="/g/raft-state"):
        HardStateFile(fs, "/g").load()


def test_follower_stores_the_leaders_bytes_and_truncates_conflicts() -> None:
    """KIP-595: the log is the partition log; entry index = offset, term = the batch's
    partition leader epoch. §5.3: "If an existing entry conflicts with a new one (same
    index but different terms), delete the existing entry and all that follow it"."""
    leader, follower = PartitionStorage(), PartitionStorage()
    leader.log.append([Entry(0, 1)])  # the leader's no-op: a control batch
    leader.log.append([Entry(1, 1, 3, payload(1, 3)), Entry(4, 1, voters=frozenset({1, 2}))])
    sent = leader.log.entries(0, 10)
    assert [(e.base, e.term, e.count) for e in sent] == [(0, 1, 1), (1, 1, 3), (4, 1, 1)]
    assert sent[2].voters == frozenset({1, 2})
    assert parse_header(sent[1].data).leader_epoch == 1
    follower.log.append(sent)
    assert [e.data for e in follower.log.entries(0, 10)] == [e.data for e in sent]
    assert follower.log.term_at(3) == 1 and follower.log.batch_base(3) == 1
    follower.log.truncate_suffix(1)
    assert follower.log.log_end == 1 and follower.log.term_at(1) is None
    follower.log.append([Entry(1, 2, 2, payload(9, 2))])
    assert entry_of(follower.log.entries(1, 1)[0].data).term == 2


def test_a_crash_keeps_exactly_the_synced_log_and_hard_state() -> None:
    s = PartitionStorage()
    s.log.append([Entry(0, 1), Entry(1, 1, 2, payload(1, 2))])
    s.sync()
    s.store_hard(HardState(1, 1, 3))
    s.log.append([Entry(3, 1, 1, payload(2, 1))])  # written, never synced
    s.crash()
    assert (s.log.log_end, s.log.last_term, s.hard) == (3, 1, HardState(1, 1, 3))
    assert s.high_watermark == 3  # the durable commit: what consumers may read
