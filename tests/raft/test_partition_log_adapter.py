"""The Raft log on the real partition log, and the hard-state file."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from raft.sim_partition import PartitionStorage, payload
from sentinel.errors import CorruptionError
from sentinel.fs import MemFS, SimulatedCrash
from sentinel.raft.hard_state_file import DurableState, HardStateFile, encode
from sentinel.raft.log import Entry
from sentinel.raft.partition_log_adapter import entry_of, log_start_batch, log_start_of
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


# ------------------------------------------------------------ log start moves


def _filled(s: PartitionStorage) -> None:
    """Batches [0], [1,3], [4,5], [6] in terms 1, 1, 2, 3; committed to 7."""
    s.log.append([Entry(0, 1), Entry(1, 1, 3, payload(1, 3)), Entry(4, 2, 2, payload(2, 2))])
    s.log.append([Entry(6, 3, 1, payload(3, 1))])
    s.sync()
    s.store_hard(HardState(3, 1, 7))


def test_advance_start_stores_the_term_before_it_and_survives_a_reopen() -> None:
    """KIP-595 / §7: the log start moves only over committed entries, to a batch
    boundary; the term of the entry before it stays known (the AppendEntries check
    right after the start needs it), also after a crash."""
    s = PartitionStorage()
    _filled(s)
    assert s.log.advance_start(5) == 4  # rounded down to the boundary
    assert (s.log.log_start, s.log.start_term, s.log.term_at(3)) == (4, 1, 1)
    assert s.log.term_at(2) is None and s.log.batch_base(5) == 4
    s.crash()
    assert (s.log.log_start, s.log.start_term, s.log.log_end) == (4, 1, 7)
    assert [e.base for e in s.log.entries(4, 10)] == [4, 6]
    s.log.advance_start(7)  # the whole log: it starts at its end
    s.crash()
    assert (s.log.log_start, s.log.log_end, s.log.term_at(6)) == (7, 7, 3)
    assert s.log.last_term == 3


def test_advance_start_never_passes_the_commit() -> None:
    s = PartitionStorage()
    _filled(s)
    s.store_hard(HardState(3, 1, 4))
    assert s.log.advance_start(100) == 4
    assert s.log.advance_start(6, applied=1) == 4  # nor what was applied
    assert s.log.start_point(3) is None


def test_reset_past_the_log_end_starts_over_empty() -> None:
    """A follower whose next entry is below the leader's log start is brought up from
    the log start (KIP-595's snapshot-less case, as Kafka's truncateFullyAndStartAt)."""
    s = PartitionStorage()
    _filled(s)
    s.log.reset(40, 5)
    assert (s.log.log_start, s.log.log_end, s.log.last_term, s.high_watermark) == (40, 40, 5, 40)
    s.log.append([Entry(40, 5, 2, payload(9, 2))])
    s.sync()
    s.crash()
    assert (s.log.log_start, s.log.start_term, s.log.log_end) == (40, 5, 42)
    assert s.log.term_at(39) == 5 and s.log.term_at(41) == 5


def test_a_delete_records_entry_moves_the_start_once_committed_also_after_a_crash() -> None:
    s = PartitionStorage()
    _filled(s)
    s.log.append([Entry(7, 3, 1, log_start_batch(6))])  # the leader stamps it
    stored = s.log.entries(7, 1)[0]
    assert parse_header(stored.data).base_offset == 7 and log_start_of(stored.data) == 6
    assert s.log.due_start(7) is None  # not committed yet
    s.sync()
    s.crash()  # rebuilt by the scan at open
    assert s.log.has_due_starts
    follower = PartitionStorage()  # a follower stores the leader's bytes and notes it
    follower.log.append(s.log.entries(0, 10))
    assert follower.log.entries(7, 1)[0].data == stored.data
    assert follower.log.has_due_starts
    s.store_hard(HardState(3, 1, 8))
    due = s.log.due_start(8)
    assert due == 6 and s.log.advance_start(due) == 6 and not s.log.has_due_starts


def _crash_at_every_step(act: Callable[[PartitionStorage], object]) -> set[tuple[int, int]]:
    """Run ``act`` with a crash at each filesystem operation in turn; after each the
    reopened log must be consistent (its start's term known). The (start, end) seen."""
    seen: set[tuple[int, int]] = set()
    for fail_at in range(200):
        s = PartitionStorage()
        _filled(s)
        s.fs.fail_after(fail_at)
        try:
            act(s)
        except Exception as exc:  # the engine wraps the crash
            cause: BaseException | None = exc
            while cause is not None and not isinstance(cause, SimulatedCrash):
                cause = cause.__cause__ or cause.__context__
            assert cause is not None, exc
        else:
            s.fs.fail_after(None)
            s.crash()
            seen.add((s.log.log_start, s.log.log_end))
            return seen
        s.fs.fail_after(None)
        s.crash()  # reopening checks the start pair: DamagedDataError otherwise
        seen.add((s.log.log_start, s.log.log_end))
        assert s.log.term_at(s.log.log_start - 1) == {0: 0, 4: 1, 6: 2, 40: 5}[s.log.log_start]
    raise AssertionError("the operation never completed")


def test_a_crash_at_every_step_of_a_start_move_leaves_the_old_or_the_new_log() -> None:
    def act(s: PartitionStorage) -> None:
        s.log.advance_start(4)
        s.log.advance_start(6)

    assert _crash_at_every_step(act) == {(0, 7), (4, 7), (6, 7)}


def test_a_crash_at_every_step_of_a_reset_past_the_end_leaves_the_old_or_the_new_log() -> None:
    def act(s: PartitionStorage) -> None:
        s.log.reset(40, 5)
        s.sync()

    assert _crash_at_every_step(act) == {(0, 7), (40, 40)}
