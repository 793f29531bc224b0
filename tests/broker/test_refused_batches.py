"""``RefusedBatches``: which of a producer's batches are answered NOT_LEADER_OR_FOLLOWER
because an earlier one was (the gap is that batch, still to be re-sent), and for how
long. Values in, answers out: headers, the log's producer entry, the time."""

from __future__ import annotations

from sentinel.broker.producer_order import REFUSAL_MEMORY_S, RefusedBatches
from sentinel.log.producer_state import INT32_MAX, ProducerBatch, ProducerEntry
from sentinel.record import BatchHeader, build_batch, parse_header

PID = 7


def header(seq: int, epoch: int = 0, pid: int = PID, records: int = 1) -> BatchHeader:
    return parse_header(
        build_batch(
            [(None, b"v", (), 1_700_000_000_000)] * records,
            producer_id=pid, producer_epoch=epoch, base_sequence=seq,
        )
    )


def stored_up_to(last_seq: int, epoch: int = 0) -> ProducerEntry:
    """The log's state of producer ``PID``: its last batch ends at ``last_seq``."""
    return ProducerEntry(PID, epoch, (ProducerBatch(last_seq, last_seq, 0, 0, -1),), 0)


def test_a_batch_after_the_refused_one_is_behind_it_until_the_log_holds_it() -> None:
    gaps = RefusedBatches()
    gaps.refused(header(5), now=0.0)
    log = stored_up_to(4)  # the log expects 5: the refused batch
    assert gaps.behind_refusal(log, header(6), now=0.1)
    assert gaps.behind_refusal(log, header(9), now=0.1)
    # The refused batch itself, and those before it, go to the log as ever.
    assert not gaps.behind_refusal(log, header(5), now=0.1)
    assert not gaps.behind_refusal(log, header(3), now=0.1)
    # Re-sent and stored: the refusal is forgotten, a gap is the log's to judge again.
    assert not gaps.behind_refusal(stored_up_to(5), header(7), now=0.2)
    assert len(gaps) == 0
    assert not gaps.behind_refusal(stored_up_to(4), header(7), now=0.2)


def test_an_unknown_producer_is_held_too() -> None:
    """A producer the log does not know may start anywhere: without the rule, the
    batch after the refused one would be stored first and the re-sent one refused."""
    gaps = RefusedBatches()
    gaps.refused(header(40), now=0.0)
    assert gaps.behind_refusal(None, header(41), now=0.0)


def test_the_refusal_expires() -> None:
    gaps = RefusedBatches()
    gaps.refused(header(5), now=10.0)
    assert gaps.behind_refusal(stored_up_to(4), header(6), now=10.0 + REFUSAL_MEMORY_S)
    assert not gaps.behind_refusal(stored_up_to(4), header(6), now=10.1 + REFUSAL_MEMORY_S)
    assert len(gaps) == 0


def test_later_refusals_do_not_move_the_gap_or_extend_it() -> None:
    """The batches behind the gap are refused too; the gap still starts at the first
    refused one, and its time is that refusal's (a producer that never re-sends it
    cannot keep the rule alive by sending more)."""
    gaps = RefusedBatches()
    gaps.refused(header(5), now=0.0)
    gaps.refused(header(6), now=1.0)
    gaps.refused(header(7), now=REFUSAL_MEMORY_S)
    assert gaps.behind_refusal(stored_up_to(4), header(6), now=REFUSAL_MEMORY_S)
    assert not gaps.behind_refusal(stored_up_to(4), header(6), now=REFUSAL_MEMORY_S + 0.1)
    # The refused batch refused again (still no leader): its time is renewed.
    gaps.refused(header(5), now=20.0)
    gaps.refused(header(5), now=24.0)
    assert gaps.behind_refusal(stored_up_to(4), header(6), now=24.0 + REFUSAL_MEMORY_S)


def test_other_epochs_and_producers_are_not_affected() -> None:
    gaps = RefusedBatches()
    gaps.refused(header(5, epoch=2), now=0.0)
    assert not gaps.behind_refusal(None, header(6, pid=PID + 1), now=0.0)
    assert not gaps.behind_refusal(None, header(6, epoch=1), now=0.0)  # a zombie's
    assert len(gaps) == 1
    # A new epoch numbers from 0 again: the old gap no longer matters.
    assert not gaps.behind_refusal(None, header(3, epoch=3), now=0.0)
    assert len(gaps) == 0
    # The log moved to a newer epoch than the refused batch's: forgotten as well.
    gaps.refused(header(5, epoch=2), now=0.0)
    assert not gaps.behind_refusal(stored_up_to(0, epoch=3), header(6, epoch=2), now=0.0)
    assert len(gaps) == 0


def test_non_idempotent_batches_are_never_remembered_or_held() -> None:
    gaps = RefusedBatches()
    gaps.refused(header(-1, epoch=-1, pid=-1), now=0.0)
    assert len(gaps) == 0
    assert not gaps.behind_refusal(None, header(-1, epoch=-1, pid=-1), now=0.0)


def test_sequences_wrap() -> None:
    gaps = RefusedBatches()
    gaps.refused(header(INT32_MAX), now=0.0)
    log = stored_up_to(INT32_MAX - 1)
    assert gaps.behind_refusal(log, header(0), now=0.0)
    assert gaps.behind_refusal(log, header(3), now=0.0)
    assert not gaps.behind_refusal(stored_up_to(INT32_MAX), header(0), now=0.0)


def test_a_multi_record_refused_batch_is_held_until_the_log_holds_its_start() -> None:
    gaps = RefusedBatches()
    gaps.refused(header(10, records=5), now=0.0)
    assert gaps.behind_refusal(stored_up_to(9), header(15, records=5), now=0.0)
    assert not gaps.behind_refusal(stored_up_to(14), header(15, records=5), now=0.0)


def test_bounded_the_oldest_refusal_goes_first() -> None:
    gaps = RefusedBatches(capacity=3)
    for pid in (1, 2, 3, 4):
        gaps.refused(header(5, pid=pid), now=float(pid))
    assert len(gaps) == 3
    assert not gaps.behind_refusal(None, header(6, pid=1), now=4.0)
    assert all(gaps.behind_refusal(None, header(6, pid=p), now=4.0) for p in (2, 3, 4))
