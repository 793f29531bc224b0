"""The client's pure parts: error mapping, batching, sequence numbers, retries, record
futures, partition choice and the consumer's offset bookkeeping. No broker, no loop."""

from __future__ import annotations

import concurrent.futures
import itertools
import random
import threading

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel import errors as core_errors
from sentinel.broker.partitioner import default_partition
from sentinel.client import errors
from sentinel.client._accumulator import (
    INT32_MAX,
    Accumulator,
    Outcome,
    ProducerBatch,
    next_sequence,
    stamp_producer,
)
from sentinel.client._channel import Connections, parse_bootstrap
from sentinel.client._decode import decode_consumer_records
from sentinel.client._fetcher import FetchConfig, Fetcher
from sentinel.client._future import BatchResult, RecordFuture
from sentinel.client._metadata import Metadata
from sentinel.client._producer_config import ProducerConfig, normalize_headers
from sentinel.client._sender import ProducerCore
from sentinel.client.types import ConsumerRecord, RecordMetadata, TopicPartition
from sentinel.errors import CorruptRecordError, InvalidArgumentError
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.record import (
    BatchBuilder,
    Compression,
    decode_records,
    iter_batches,
    parse_header,
    validate_batch,
)

TP = TopicPartition("t", 0)
TS = 1_700_000_000_000

# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "kind", "retriable"),
    [
        ("UNKNOWN_TOPIC_OR_PARTITION", errors.UnknownTopicOrPartitionError, True),
        ("MESSAGE_TOO_LARGE", errors.MessageTooLargeError, False),
        ("INVALID_TOPIC", errors.InvalidTopicError, False),
        ("REBALANCE_IN_PROGRESS", errors.RebalanceInProgressError, True),
        ("ILLEGAL_GENERATION", errors.IllegalGenerationError, False),
        ("UNKNOWN_MEMBER_ID", errors.UnknownMemberIdError, False),
        ("OUT_OF_ORDER_SEQUENCE", errors.OutOfOrderSequenceError, False),
        ("TOPIC_ALREADY_EXISTS", errors.TopicAlreadyExistsError, False),
        ("NOT_ENOUGH_REPLICAS", errors.NotEnoughReplicasError, True),
        ("CORRUPT_MESSAGE", errors.CorruptMessageError, True),
        ("GROUP_ID_NOT_FOUND", errors.GroupIdNotFoundError, False),
        ("INVALID_RECORD", errors.InvalidRecordError, False),
    ],
)
def test_reason_maps_to_typed_error(reason: str, kind: type, retriable: bool) -> None:
    exc = errors.error_from_status(
        grpc.StatusCode.INVALID_ARGUMENT, "details", [("sentinel-error", reason)]
    )
    assert type(exc) is kind
    assert exc.reason == reason
    assert exc.status is grpc.StatusCode.INVALID_ARGUMENT
    assert exc.retriable is retriable
    assert str(exc) == "details"
    assert isinstance(exc, errors.SentinelClientError)


def test_offset_out_of_range_carries_the_valid_range() -> None:
    exc = errors.error_from_status(
        grpc.StatusCode.OUT_OF_RANGE,
        "offset 99",
        [
            ("sentinel-error", "OFFSET_OUT_OF_RANGE"),
            ("sentinel-log-start-offset", "3"),
            ("sentinel-log-end-offset", b"10"),  # binary metadata values decode too
        ],
    )
    assert isinstance(exc, errors.OffsetOutOfRangeError)
    assert (exc.log_start, exc.log_end) == (3, 10)
    assert isinstance(exc, core_errors.CallerError)


def test_not_leader_names_the_leader_and_is_a_core_not_leader() -> None:
    exc = errors.error_from_status(
        grpc.StatusCode.UNAVAILABLE,
        "not leader",
        [("sentinel-error", "NOT_LEADER_OR_FOLLOWER"), ("sentinel-leader", "10.0.0.2:9092")],
    )
    assert isinstance(exc, errors.NotLeaderError)
    assert isinstance(exc, core_errors.NotLeaderError)
    assert exc.leader == "10.0.0.2:9092"
    assert exc.retriable


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (grpc.StatusCode.UNAVAILABLE, errors.BrokerUnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.RequestTimedOutError),
        (grpc.StatusCode.NOT_FOUND, errors.UnknownTopicOrPartitionError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.MessageTooLargeError),
        (grpc.StatusCode.INTERNAL, errors.ServerError),
        (grpc.StatusCode.CANCELLED, errors.BrokerUnavailableError),
    ],
)
def test_status_without_reason_maps_by_code(status: grpc.StatusCode, kind: type) -> None:
    exc = errors.error_from_status(status, "", [])
    assert type(exc) is kind
    assert exc.reason is None
    assert str(exc) == status.name


def test_unknown_reason_falls_back_to_the_status() -> None:
    exc = errors.error_from_status(grpc.StatusCode.UNAVAILABLE, "x", [("sentinel-error", "NEW")])
    assert type(exc) is errors.BrokerUnavailableError


def test_client_side_errors_join_the_core_tree() -> None:
    assert issubclass(errors.ClientClosedError, core_errors.ClosedError)
    assert issubclass(errors.ClientStateError, core_errors.StateError)
    assert issubclass(errors.ClientTimeoutError, TimeoutError)


def test_parse_bootstrap() -> None:
    assert parse_bootstrap("a:1, b:2") == ["a:1", "b:2"]
    assert parse_bootstrap(["h:9092"]) == ["h:9092"]
    for bad in ("", "nohost", "h:", ":9", "h:x"):
        with pytest.raises(InvalidArgumentError):
            parse_bootstrap(bad)


# --- the accumulator ----------------------------------------------------------------


def make_acc(**overrides: object) -> Accumulator:
    options: dict[str, object] = {
        "batch_size": 1000,
        "linger_s": 0.005,
        "compression": 0,
        "max_in_flight": 5,
        "retries": 3,
        "retry_backoff_s": 0.1,
        "producer_id": 77,
        "sink_factory": BatchResult,
    }
    options.update(overrides)
    return Accumulator(**options)  # type: ignore[arg-type]


def append(acc: Accumulator, n: int, tp: TopicPartition = TP, now: float = 0.0) -> None:
    for i in range(n):
        acc.append(*tp, None, b"v%03d" % i, (), TS + i, now)


def drain_all(acc: Accumulator, now: float = 1.0) -> list[ProducerBatch]:
    batches, _ = acc.drain(now)
    for batch in batches:
        Accumulator.encode(batch)
    return batches


def test_batches_close_at_batch_size_and_keep_record_order() -> None:
    acc = make_acc(batch_size=300)
    for i in range(30):
        acc.append(*TP, None, b"x" * 20, (), TS + i, 0.0)
    batches = drain_all(acc)
    assert len(batches) >= 3
    assert all(len(Accumulator.encode(b)) <= 300 for b in batches)
    values = [r.value for b in batches for r in decode_records(b.data or b"")]
    assert values == [b"x" * 20] * 30
    assert sum(b.count for b in batches) == 30


def test_a_record_larger_than_batch_size_gets_a_batch_of_its_own() -> None:
    acc = make_acc(batch_size=100)
    acc.append(*TP, None, b"small", (), TS, 0.0)
    acc.append(*TP, None, b"L" * 500, (), TS, 0.0)
    acc.append(*TP, None, b"small", (), TS, 0.0)
    batches = drain_all(acc, now=1.0)
    assert [b.count for b in batches] == [1, 1, 1]


def test_linger_holds_a_batch_until_it_expires() -> None:
    acc = make_acc(linger_s=0.010)
    append(acc, 3, now=5.0)
    batches, wake = acc.drain(5.005)
    assert batches == []
    assert wake == pytest.approx(5.010)
    batches, wake = acc.drain(5.010)
    assert [b.count for b in batches] == [3]
    assert wake is None


def test_a_lingered_batch_stays_open_while_its_partition_is_at_its_in_flight_limit() -> None:
    """The client pipeline's stall: with every in-flight slot taken, batches closed at
    each linger would queue as many small requests, one round trip each; instead the
    open batch keeps taking records and goes out as one when a slot frees."""
    acc = make_acc(linger_s=0.001, max_in_flight=1, batch_size=100_000)
    append(acc, 2, now=0.0)
    (first,), _ = acc.drain(0.001)
    for step in range(1, 50):  # a record a millisecond while the first is in flight
        now = step * 0.001
        acc.append(*TP, None, b"r%d" % step, (), TS + step, now)
        batches, wake = acc.drain(now + 0.001)
        assert batches == []
        assert wake is None  # the response wakes the sender, not a timer
    acc.succeeded(first)
    (second,), _ = acc.drain(0.051)
    assert second.count == 49  # one request for all that waited, not 49


def test_close_open_makes_everything_ready_at_once() -> None:
    acc = make_acc(linger_s=60.0)
    append(acc, 2)
    append(acc, 2, tp=TopicPartition("t", 1))
    acc.close_open()
    batches, _ = acc.drain(0.0)
    assert sorted(b.tp.partition for b in batches) == [0, 1]


def test_sequences_follow_record_counts_per_partition() -> None:
    acc = make_acc(batch_size=120, max_in_flight=100)
    other = TopicPartition("t", 1)
    for i in range(12):
        acc.append(*TP, None, b"y" * 20, (), TS + i, 0.0)
        acc.append(*other, None, b"y" * 20, (), TS + i, 0.0)
    acc.close_open()
    batches = drain_all(acc)
    for tp in (TP, other):
        mine = [b for b in batches if b.tp == tp]
        expected = 0
        for batch in mine:
            header = validate_batch(batch.data or b"", max_batch_bytes=10_000)
            assert (header.producer_id, header.producer_epoch) == (77, 0)
            assert header.base_sequence == expected
            expected += header.record_count
        assert expected == 12


def test_non_idempotent_batches_carry_no_producer_id() -> None:
    acc = make_acc(producer_id=-1)
    append(acc, 2)
    acc.close_open()
    (batch,) = drain_all(acc)
    header = parse_header(batch.data or b"")
    assert (header.producer_id, header.base_sequence) == (-1, -1)


def test_next_sequence_wraps_like_kafka() -> None:
    assert next_sequence(5, 3) == 8
    assert next_sequence(INT32_MAX, 1) == 0
    assert next_sequence(INT32_MAX - 1, 3) == 1


def test_stamp_producer_keeps_the_batch_valid() -> None:
    data = _one_batch()
    stamped = stamp_producer(data, 5, 2, 40)
    header = validate_batch(stamped, max_batch_bytes=10_000)
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (5, 2, 40)
    assert [r.value for r in decode_records(stamped)] == [r.value for r in decode_records(data)]


def _one_batch() -> bytes:
    builder = BatchBuilder(producer_id=1, producer_epoch=0, base_sequence=0)
    builder.append(b"k", b"v1", (), TS)
    builder.append(None, b"v2", (("h", b"1"),), TS + 1)
    return builder.build()


def test_in_flight_is_limited_per_partition() -> None:
    acc = make_acc(batch_size=60, max_in_flight=2)
    append(acc, 20)
    acc.close_open()
    first = drain_all(acc)
    assert len(first) == 2
    assert drain_all(acc) == []
    acc.succeeded(first[0])
    assert len(drain_all(acc)) == 1


def test_a_retried_batch_keeps_its_sequence_and_goes_first_alone() -> None:
    acc = make_acc(batch_size=60, max_in_flight=3)
    append(acc, 20)
    acc.close_open()
    a, b, c = drain_all(acc, now=0.0)
    original = a.data
    assert acc.failed(a, errors.RequestTimedOutError("t"), now=0.0) is Outcome.RETRY
    later = errors.OutOfOrderSequenceError("gap")
    assert acc.failed(b, later, now=0.0) is Outcome.RETRY
    assert drain_all(acc, now=0.5) == []  # c is still in flight: retries go alone
    assert acc.failed(c, later, now=0.0) is Outcome.RETRY
    assert drain_all(acc, now=0.05) == []  # backoff
    assert drain_all(acc, now=0.2) == [a]  # one at a time, oldest first
    assert a.data == original  # same bytes, same sequence: the broker de-duplicates
    assert acc.succeeded(a) is Outcome.DONE
    assert drain_all(acc, now=0.3) == [b]
    acc.succeeded(b)
    assert drain_all(acc, now=0.3) == [c]
    acc.succeeded(c)
    assert len(drain_all(acc, now=0.4)) == 3  # back to pipelining


def test_non_retriable_failure_and_exhausted_retries_fail_the_batch() -> None:
    acc = make_acc(retries=1)
    append(acc, 1)
    acc.close_open()
    (batch,) = drain_all(acc)
    assert acc.failed(batch, errors.MessageTooLargeError("big"), 0.0) is Outcome.FAILED
    append(acc, 1)
    acc.close_open()
    (batch,) = drain_all(acc, now=10.0)
    assert acc.failed(batch, errors.BrokerUnavailableError("x"), 10.0) is Outcome.RETRY
    (batch,) = drain_all(acc, now=11.0)
    assert acc.failed(batch, errors.BrokerUnavailableError("x"), 11.0) is Outcome.FAILED
    assert len(acc) == 0
    assert acc.buffered_bytes == 0


def test_a_failed_batch_starts_a_new_epoch_and_renumbers_the_rest() -> None:
    acc = make_acc(batch_size=60, max_in_flight=2)
    append(acc, 12)
    acc.close_open()
    a, b = drain_all(acc)
    assert acc.failed(a, errors.MessageTooLargeError("big"), 0.0) is Outcome.FAILED
    # b was sent after a gap the broker will never see filled: out of order, retried.
    assert acc.failed(b, errors.OutOfOrderSequenceError("gap"), 0.0) is Outcome.RETRY
    resent = drain_all(acc, now=1.0)
    assert resent[0] is b
    header = parse_header(b.data or b"")
    assert (header.producer_epoch, header.base_sequence) == (1, 0)


def test_out_of_order_at_the_head_resets_the_partition() -> None:
    acc = make_acc()
    append(acc, 3)
    acc.close_open()
    (batch,) = drain_all(acc)
    assert acc.failed(batch, errors.OutOfOrderSequenceError("lost"), 0.0) is Outcome.RETRY
    (again,) = drain_all(acc, now=1.0)
    header = parse_header(again.data or b"")
    assert (header.producer_epoch, header.base_sequence) == (1, 0)


def test_retry_backoff_doubles_up_to_a_second() -> None:
    acc = make_acc(retry_backoff_s=0.1)
    assert [acc.backoff(n) for n in (1, 2, 3, 4, 5, 6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert make_acc(retry_backoff_s=2.0).backoff(3) == 2.0


def test_duplicate_sequence_counts_as_success() -> None:
    acc = make_acc()
    append(acc, 1)
    acc.close_open()
    (batch,) = drain_all(acc)
    assert acc.failed(batch, errors.DuplicateSequenceError("dup"), 0.0) is Outcome.DONE
    assert len(acc) == 0


def test_fail_all_returns_unsent_batches_and_frees_the_buffer() -> None:
    acc = make_acc()
    append(acc, 3)
    assert acc.buffered_bytes > 0
    assert [b.count for b in acc.fail_all()] == [3]
    assert acc.buffered_bytes == 0


# --- record futures -----------------------------------------------------------------


def test_record_future_resolves_from_its_batch() -> None:
    result = BatchResult("t", 2)
    futures = [RecordFuture(result, i, TS + i) for i in range(3)]
    assert not futures[0].done()
    assert futures[0].running()
    with pytest.raises(TimeoutError):
        futures[0].result(timeout=0.01)
    result.complete(100, -1)
    assert [f.result() for f in futures] == [
        RecordMetadata("t", 2, 100 + i, TS + i) for i in range(3)
    ]
    assert futures[1].done() and futures[1].exception() is None
    assert not futures[2].cancel()


def test_record_future_log_append_time_and_acks_zero() -> None:
    result = BatchResult("t", 0)
    future = RecordFuture(result, 4, TS)
    result.complete(-1, TS + 99)
    assert future.result() == RecordMetadata("t", 0, -1, TS + 99)


def test_record_future_failure_callbacks_and_waiters() -> None:
    result = BatchResult("t", 0)
    futures = [RecordFuture(result, i, TS) for i in range(4)]
    seen: list[BaseException | None] = []
    futures[0].add_done_callback(lambda f: seen.append(f.exception()))
    waiter = threading.Thread(target=lambda: concurrent.futures.wait(futures[1:3]))
    waiter.start()
    error = errors.MessageTooLargeError("too big")
    threading.Timer(0.02, result.fail, args=(error,)).start()
    done = list(concurrent.futures.as_completed(futures, timeout=5))
    waiter.join(5)
    assert len(done) == 4
    assert seen == [error]
    with pytest.raises(errors.MessageTooLargeError):
        futures[3].result()
    late: list[object] = []
    futures[3].add_done_callback(late.append)  # after completion: called at once
    assert late == [futures[3]]
    result.complete(5, -1)  # a second outcome is ignored
    assert futures[0].exception() is error


def test_record_future_result_blocks_until_completion() -> None:
    result = BatchResult("t", 0)
    future = RecordFuture(result, 0, TS)
    threading.Timer(0.02, result.complete, args=(7, -1)).start()
    assert future.result(timeout=5).offset == 7
    assert "finished" in repr(future)


# --- partition choice and the send path ---------------------------------------------


def make_core(**overrides: object) -> ProducerCore:
    options: dict[str, object] = {
        "acks": 1,
        "linger_ms": 5,
        "batch_size": 200,
        "compression": None,
        "partitioner": "murmur2",
        "retries": 5,
        "retry_backoff_ms": 100,
        "enable_idempotence": True,
        "max_in_flight": 5,
        "request_timeout_ms": 1000,
        "buffer_memory": 1 << 20,
        "max_block_ms": 1000,
        "auto_create_topics": True,
    }
    options.update(overrides)
    config = ProducerConfig.build("127.0.0.1:1", **options)  # type: ignore[arg-type]
    core = ProducerCore(config, BatchResult, producer_id=9, rng=random.Random(3))
    core.metadata.partitions["t"] = 6
    return core


def test_keyed_records_go_to_the_murmur2_partition() -> None:
    core = make_core()
    for i in range(50):
        key = b"key-%d" % i
        batch, _, _ = core.append("t", None, 6, key, b"v", (), TS)
        assert batch.tp.partition == default_partition(key, 6)


def test_keyless_records_stick_to_a_partition_until_its_batch_closes() -> None:
    core = make_core(batch_size=200)
    seen: list[int] = []
    for _ in range(40):
        batch, _, _ = core.append("t", None, 6, None, b"x" * 30, (), TS)
        seen.append(batch.tp.partition)
    runs = [seen[0]]
    for p in seen[1:]:
        if p != runs[-1]:
            runs.append(p)
    assert len(runs) > 3  # moved on as batches filled
    assert all(a != b for a, b in itertools.pairwise(runs))


def test_round_robin_spreads_keyless_records() -> None:
    core = make_core(partitioner="round_robin")
    parts = [core.append("t", None, 6, None, b"x", (), TS)[0].tp.partition for _ in range(12)]
    assert parts == [0, 1, 2, 3, 4, 5] * 2


def test_the_sender_is_woken_once_per_new_batch_not_per_record() -> None:
    core = make_core(batch_size=10_000)
    wakes = [core.append("t", 0, 6, None, b"x", (), TS)[2] for _ in range(100)]
    assert wakes[0] is True
    assert not any(wakes[1:])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"acks": 2}, "acks"),
        ({"compression": "brotli"}, "compression"),
        ({"partitioner": "random"}, "partitioner"),
        ({"max_in_flight": 6}, "max_in_flight"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_producer_config_is_checked(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        make_core(**options)


def test_acks_zero_turns_idempotence_off() -> None:
    core = make_core(acks=0)
    assert core.producer_id == -1


def test_headers_are_normalized() -> None:
    assert normalize_headers({"a": b"1", "b": None}) == [("a", b"1"), ("b", None)]
    assert normalize_headers([("a", bytearray(b"2"))]) == [("a", b"2")]
    with pytest.raises(TypeError):
        normalize_headers([("a", "text")])  # type: ignore[list-item]


# --- the consumer's offset bookkeeping ----------------------------------------------


def make_fetcher(max_bytes: int = 1 << 20) -> Fetcher:
    config = FetchConfig(
        fetch_max_bytes=max_bytes,
        fetch_max_wait_ms=100,
        auto_offset_reset="earliest",
        request_timeout_ms=1000,
        retry_backoff_ms=10,
    )
    metadata = Metadata(Connections(["127.0.0.1:1"]), ["127.0.0.1:1"])
    fetcher = Fetcher(config, metadata)
    with fetcher.lock:
        from sentinel.client._fetcher import PartitionFetch

        fetcher.partitions[TP] = PartitionFetch(TP)
    return fetcher


def stored_batch(base_offset: int, count: int) -> bytes:
    builder = BatchBuilder(base_offset=base_offset)
    for i in range(count):
        builder.append(None, b"r%d" % (base_offset + i), (), TS + base_offset + i)
    return builder.build()


def answer(data: bytes, hw: int) -> pb.FetchResponse:
    return pb.FetchResponse(topic="t", partition=0, record_batches=data, high_watermark=hw)


def test_collect_skips_records_before_the_position_and_advances_it() -> None:
    fetcher = make_fetcher()
    fetcher.seek(TP, 3)  # the answer starts with the batch holding offset 3
    part = fetcher.partitions[TP]
    fetcher._store(part, part.generation, 3, answer(stored_batch(0, 5) + stored_batch(5, 5), 10))
    assert part.fetch_offset == 10
    records = fetcher.collect(4)
    assert [r.offset for r in records] == [3, 4, 5, 6]
    assert records[0] == ConsumerRecord("t", 0, 3, TS + 3, None, b"r3", ())
    assert fetcher.positions() == {TP: 7}
    assert [r.offset for r in fetcher.collect(100)] == [7, 8, 9]
    assert fetcher.positions() == {TP: 10}
    assert fetcher.collect(100) == []


def test_a_seek_drops_buffered_data_and_stale_answers() -> None:
    fetcher = make_fetcher()
    fetcher.seek(TP, 0)
    part = fetcher.partitions[TP]
    old_generation = part.generation
    fetcher._store(part, old_generation, 0, answer(stored_batch(0, 5), 5))
    fetcher.seek(TP, 2)
    fetcher._store(part, old_generation, 0, answer(stored_batch(0, 5), 5))  # too late
    assert fetcher.collect(100) == []
    fetcher._store(part, part.generation, 2, answer(stored_batch(0, 5), 5))
    assert [r.offset for r in fetcher.collect(100)] == [2, 3, 4]


def test_an_empty_answer_keeps_the_fetch_offset() -> None:
    fetcher = make_fetcher()
    fetcher.seek(TP, 5)
    part = fetcher.partitions[TP]
    fetcher._store(part, part.generation, 5, answer(b"", 5))
    assert part.fetch_offset == 5
    assert part.high_watermark == 5


def test_a_pending_error_is_raised_once_by_collect() -> None:
    fetcher = make_fetcher()
    fetcher.seek(TP, 0)
    part = fetcher.partitions[TP]
    fetcher._fail(part, errors.OffsetOutOfRangeError("gone", 4, 9))
    with pytest.raises(errors.OffsetOutOfRangeError) as info:
        fetcher.collect(10)
    assert (info.value.log_start, info.value.log_end) == (4, 9)
    assert fetcher.collect(10) == []


def test_buffered_bytes_are_accounted() -> None:
    fetcher = make_fetcher(max_bytes=100)
    fetcher.seek(TP, 0)
    part = fetcher.partitions[TP]
    data = stored_batch(0, 20)
    fetcher._store(part, part.generation, 0, answer(data, 20))
    assert part.buffered == len(data)
    assert len(fetcher.collect(5)) == 5
    assert part.buffered == 0
    assert len(list(iter_batches(data))) == 1


# --- decoding straight into ConsumerRecords -----------------------------------------

_record = st.tuples(
    st.one_of(st.none(), st.binary(max_size=300)),
    st.one_of(st.none(), st.binary(max_size=3000)),
    st.lists(
        st.tuples(st.text(max_size=10), st.one_of(st.none(), st.binary(max_size=20))),
        max_size=3,
    ),
    st.integers(min_value=-(10**6), max_value=10**9),
)


@settings(max_examples=60, deadline=None)
@given(
    records=st.lists(_record, min_size=1, max_size=40),
    codec=st.sampled_from(list(Compression)),
    base=st.integers(min_value=0, max_value=2**40),
    skip=st.integers(min_value=0, max_value=45),
)
def test_decode_consumer_records_matches_the_codec(
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]], int]],
    codec: Compression,
    base: int,
    skip: int,
) -> None:
    builder = BatchBuilder(compression=codec, base_offset=base)
    for key, value, headers, ts in records:
        builder.append(key, value, headers, TS + ts)
    data = builder.build()
    expected = [
        ConsumerRecord("t", 3, r.offset, r.timestamp, r.key, r.value, r.headers)
        for r in decode_records(data)
        if r.offset >= base + skip
    ]
    assert decode_consumer_records(data, "t", 3, base + skip) == expected


def test_decode_consumer_records_refuses_damage() -> None:
    data = bytearray(_one_batch())
    data[-3] ^= 0x40
    with pytest.raises(CorruptRecordError):
        decode_consumer_records(bytes(data), "t", 0, 0)
    with pytest.raises(CorruptRecordError):
        decode_consumer_records(_one_batch()[:-2], "t", 0, 0)
