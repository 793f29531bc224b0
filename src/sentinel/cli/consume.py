"""``sentinel-cli consume``: print records of a topic.

    sentinel-cli consume -topic events -from-beginning -max-messages 100
    sentinel-cli consume -topic events -offset -10 -f '%p:%o %k=%s\\n'
    sentinel-cli consume -topic events -since 5m -print-headers
    sentinel-cli consume -topic events -group audit -follow -print-key

Two ways to read:

- every partition of the topic (``-partition P``: that one only), as kcat, the
  console consumer and rpk do, from a start offset applied to each: ``-offset N``,
  ``-offset earliest`` (= ``-from-beginning``; the default, as the original's offset 0),
  ``-offset end`` (= ``latest``), ``-offset -N`` (the last N records),
  ``-offset @TIME`` or ``-since 5m`` (the first record at or after that time).
  Nothing is committed.
- as a member of consumer group ``-group G``: the broker assigns the topic's
  partitions; each starts at the group's committed offset, else at the earliest
  offset (``-offset latest``: the end). Offsets are committed after every batch
  printed, so a second run continues where this one stopped.

Without ``-follow`` it stops at the end of the log as it was when reading started,
or after ``-max-messages`` records (default 100, as the original; 0: no limit),
whichever comes first. With ``-follow`` it waits for new records until Ctrl-C (exit
0) or the limit.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import click

from sentinel.cli.common import admin_client, broker_options, reporting
from sentinel.cli.errors import EXIT_INTERRUPTED, CliError, CliUsageError
from sentinel.cli.interrupts import INTERRUPTS
from sentinel.cli.output import (
    Output,
    RecordFields,
    human_count,
    progress,
    record_dict,
    record_line,
)
from sentinel.cli.params import OFFSET, At, OffsetSpec, Tail, parse_since
from sentinel.cli.record_format import RecordFormat, compile_format
from sentinel.client import Admin, Consumer, ConsumerRecord, TopicPartition
from sentinel.client.errors import (
    ClientStateError,
    ClientTimeoutError,
    UnknownTopicOrPartitionError,
)
from sentinel.client.types import TopicDescription

__all__ = ["EndOfLog", "ReadPlan", "consume", "start_offset"]

POLL_TIMEOUT_S = 0.5
MAX_POLL_RECORDS = 500
ASSIGNMENT_TIMEOUT_S = 30.0
DEFAULT_MAX_MESSAGES = 100


@dataclass(frozen=True, slots=True)
class EndOfLog:
    """Where reading stops without ``-follow``: each partition's end when we started.

    A partition is done once its position reaches that end, or the high watermark of
    its latest fetch if lower (the log was truncated meanwhile). A partition with
    neither known is not done.
    """

    ends: Mapping[TopicPartition, int]

    def reached(
        self,
        positions: Mapping[TopicPartition, int],
        highwaters: Mapping[TopicPartition, int | None],
    ) -> bool:
        for tp, position in positions.items():
            known = [e for e in (self.ends.get(tp), highwaters.get(tp)) if e is not None]
            if not known or position < min(known):
                return False
        return True

    def remaining(self, positions: Mapping[TopicPartition, int]) -> int:
        """Records (offsets) left to read before the ends."""
        return sum(max(0, self.ends.get(tp, pos) - pos) for tp, pos in positions.items())


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """What to read, checked: a partition from an offset, or a group's assignment."""

    topic: str
    partition: int | None  # None: every partition (or, with a group, its assignment)
    offset: OffsetSpec
    group: str | None
    follow: bool
    limit: int | None  # None: no limit


def start_offset(
    topic: TopicDescription,
    partition: int,
    offset: OffsetSpec,
    by_time: Callable[[int, int], int] | None = None,
) -> int:
    """The offset to read ``partition`` from; ``CliError`` if it is not in the log.
    ``by_time(partition, ms)``: the first offset at or after ``ms`` (-1: none), for ``At``."""
    if not 0 <= partition < len(topic.partitions):
        count = len(topic.partitions)
        raise CliError(
            f"topic {topic.name!r} has {human_count(count, 'partition')}; "
            f"there is no partition {partition}"
        )
    p = topic.partitions[partition]
    if offset == "earliest":
        return p.log_start_offset
    if offset == "latest":
        return p.high_watermark
    if isinstance(offset, Tail):
        return max(p.log_start_offset, p.high_watermark - offset.count)
    if isinstance(offset, At):
        assert by_time is not None, "a time needs a lookup"
        found = by_time(partition, offset.timestamp_ms)
        return p.high_watermark if found < 0 else max(found, p.log_start_offset)
    if not p.log_start_offset <= offset <= p.high_watermark:
        where = f"{topic.name}/{partition}"
        if p.high_watermark <= p.log_start_offset:
            holds = f"{where} holds no records (its next offset is {p.high_watermark})"
        else:
            holds = f"{where} holds offsets {p.log_start_offset} to {p.high_watermark - 1}"
        raise CliError(f"offset {offset} is out of range, {holds}")
    return offset


def make_plan(
    *,
    topic: str,
    partition: int | None,
    offset: OffsetSpec | None,
    from_beginning: bool,
    group: str | None,
    follow: bool,
    max_messages: int,
) -> ReadPlan:
    """Check that the flags fit together (``CliUsageError`` if not)."""
    if from_beginning and offset not in (None, "earliest"):
        raise CliUsageError("-from-beginning and -offset conflict: give one of them")
    if group is not None and partition is not None:
        raise CliUsageError("-group and -partition conflict: a group's partitions are assigned")
    if group is not None and offset not in (None, "earliest", "latest"):
        raise CliUsageError(
            "-group starts at the group's committed offsets: -offset takes earliest or latest"
        )
    return ReadPlan(
        topic=topic,
        partition=None if group is not None else partition,
        offset="earliest" if offset is None else offset,
        group=group,
        follow=follow,
        limit=max_messages or None,
    )


class _Reader:
    """A consumer set up by a plan, with the ends to stop at (None: follow)."""

    def __init__(self, consumer: Consumer, end: EndOfLog | None) -> None:
        self.consumer = consumer
        self.end = end

    def positions(self) -> dict[TopicPartition, int]:
        positions: dict[TopicPartition, int] = {}
        for tp in self.consumer.assignment():
            with contextlib.suppress(ClientStateError):  # taken away by a rebalance
                positions[tp] = self.consumer.position(tp)
        return positions

    def at_end(self) -> bool:
        if self.end is None:
            return False
        positions = self.positions()
        highwaters = {tp: self.consumer.highwater(tp) for tp in positions}
        return self.end.reached(positions, highwaters)


def _open_partitions(plan: ReadPlan, broker: str, admin: Admin) -> _Reader:
    """Every partition (or ``plan.partition``), each from its start offset."""
    topic = admin.describe_topic(plan.topic)

    def by_time(partition: int, ms: int) -> int:
        return admin.list_offsets(plan.topic, partition, ms).offset

    indexes = range(len(topic.partitions)) if plan.partition is None else [plan.partition]
    starts = {
        TopicPartition(plan.topic, i): start_offset(topic, i, plan.offset, by_time)
        for i in indexes
    }
    consumer = Consumer(broker, auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        consumer.assign(list(starts))
        for tp, start in starts.items():
            consumer.seek(tp, start)
    except BaseException:
        consumer.close()
        raise
    end = None
    if not plan.follow:
        end = EndOfLog({tp: topic.partitions[tp.partition].high_watermark for tp in starts})
    return _Reader(consumer, end)


def _open_group(plan: ReadPlan, broker: str, admin: Admin) -> _Reader:
    assert plan.group is not None
    with contextlib.suppress(UnknownTopicOrPartitionError):
        admin.describe_topic(plan.topic)  # is the broker there? (joining creates the topic)
    consumer = Consumer(
        broker,
        group_id=plan.group,
        auto_offset_reset="latest" if plan.offset == "latest" else "earliest",
        enable_auto_commit=False,
        client_id="sentinel-cli",
    )
    try:
        consumer.subscribe([plan.topic])
        try:
            assigned = consumer.wait_for_assignment(ASSIGNMENT_TIMEOUT_S)
        except ClientTimeoutError:
            raise CliError(
                f"group {plan.group!r} assigned no partitions within {ASSIGNMENT_TIMEOUT_S:.0f} s"
            ) from None
        end = None
        if not plan.follow:
            topic = admin.describe_topic(plan.topic)
            end = EndOfLog(
                {
                    tp: topic.partitions[tp.partition].high_watermark
                    for tp in assigned
                    if tp.partition < len(topic.partitions)
                }
            )
    except BaseException:
        consumer.close()
        raise
    return _Reader(consumer, end)


@contextlib.contextmanager
def open_reader(plan: ReadPlan, broker: str) -> Iterator[_Reader]:
    """The consumer for ``plan``, closed (leaving the group) on the way out."""
    with admin_client(broker) as admin:
        if plan.group is None:
            reader = _open_partitions(plan, broker, admin)
        else:
            reader = _open_group(plan, broker, admin)
    try:
        yield reader
    finally:
        reader.consumer.close(timeout=10.0)


def _emit(
    out: Output,
    records: list[ConsumerRecord],
    fields: RecordFields,
    fmt: RecordFormat | None = None,
) -> None:
    if fmt is not None:
        for record in records:
            out.raw(fmt.render(record))
    elif out.json_mode:
        for record in records:
            out.json(record_dict(record))
    else:
        for record in records:
            out.line(record_line(record, fields))
    out.flush()


@dataclass(slots=True)
class Tally:
    """Records printed so far (kept when Ctrl-C interrupts ``read``)."""

    printed: int = 0


def read(
    plan: ReadPlan,
    reader: _Reader,
    out: Output,
    *,
    fields: RecordFields,
    bar: bool,
    tally: Tally,
    fmt: RecordFormat | None = None,
) -> None:
    """Print records until the end (or forever with follow) or the limit."""
    consumer = reader.consumer
    total = plan.limit
    if reader.end is not None:
        remaining = reader.end.remaining(reader.positions())
        total = remaining if total is None else min(total, remaining)
    show = out.wants_progress(total, bar, streaming=True)
    with progress(out, show, total, f"consume {plan.topic}") as advance:
        while plan.limit is None or tally.printed < plan.limit:
            if reader.at_end():
                break
            want = MAX_POLL_RECORDS
            if plan.limit is not None:
                want = min(want, plan.limit - tally.printed)
            records = consumer.poll(POLL_TIMEOUT_S, max_records=want)
            INTERRUPTS.check()
            if not records:
                continue
            _emit(out, records, fields, fmt)
            tally.printed += len(records)
            advance(len(records))
            if plan.group is not None:
                consumer.commit()


@click.command("consume")
@broker_options
@click.option("--topic", required=True, help="Topic to read.")
@click.option(
    "--partition",
    type=click.IntRange(min=0),
    default=None,
    help="Read only this partition (not with -group). [default: every partition]",
)
@click.option(
    "--offset",
    callback=OFFSET,
    metavar="N|-N|earliest|end|@TIME",
    default=None,
    help="Where each partition starts: an offset, -N the last N records, earliest, "
    "end, or @TIME (epoch ms or ISO 8601). [default: earliest]",
)
@click.option(
    "--since",
    metavar="DURATION|TIME",
    default=None,
    help="Start at the first record of the last DURATION (30s, 5m, 2h, 1d) or since TIME.",
)
@click.option("--from-beginning", is_flag=True, help="Start at the earliest offset.")
@click.option(
    "--max-messages",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_MESSAGES,
    show_default=True,
    help="Stop after this many records; 0: no limit.",
)
@click.option("--group", default=None, help="Read as a member of this consumer group (commits).")
@click.option("--follow", is_flag=True, help="Wait for new records (until Ctrl-C or the limit).")
@click.option("--print-key", is_flag=True, help="Show each record's key.")
@click.option("--print-offset", is_flag=True, help="Show each record's offset.")
@click.option("--print-timestamp", is_flag=True, help="Show each record's timestamp (UTC).")
@click.option("--print-partition", is_flag=True, help="Show each record's partition.")
@click.option("--print-headers", is_flag=True, help="Show each record's headers (k=v,k2=v2).")
@click.option(
    "-f",
    "--format",
    "format_",
    metavar="FORMAT",
    default=None,
    help="kcat-style format per record: %t topic, %p partition, %o offset, %T timestamp, "
    "%k key, %K key length, %s value, %S value length, %h headers, \\n newline.",
)
@click.option("--progress", "force_progress", is_flag=True, help="Always show a progress bar.")
def consume(  # noqa: PLR0917 - click passes every option
    broker: str,
    json_mode: bool,
    topic: str,
    partition: int | None,
    offset: OffsetSpec | None,
    since: str | None,
    from_beginning: bool,
    max_messages: int,
    group: str | None,
    follow: bool,
    print_key: bool,
    print_offset: bool,
    print_timestamp: bool,
    print_partition: bool,
    print_headers: bool,
    format_: str | None,
    force_progress: bool,
) -> None:
    """Print a topic's records, one per line (-json: one JSON object per line)."""
    if since is not None:
        if offset is not None:
            raise CliUsageError("-since and -offset conflict: give one of them")
        try:
            offset = parse_since(since, int(time.time() * 1000))
        except ValueError as exc:
            raise CliUsageError(str(exc)) from None
    fmt = None
    if format_ is not None:
        if json_mode:
            raise CliUsageError("-f and -json conflict: give one of them")
        try:
            fmt = compile_format(format_)
        except ValueError as exc:
            raise CliUsageError(str(exc)) from None
    plan = make_plan(
        topic=topic,
        partition=partition,
        offset=offset,
        from_beginning=from_beginning,
        group=group,
        follow=follow,
        max_messages=max_messages,
    )
    fields = RecordFields(
        timestamp=print_timestamp,
        partition=print_partition,
        offset=print_offset,
        key=print_key,
        headers=print_headers,
    )
    out = Output(json_mode=json_mode)
    tally = Tally()
    interrupted = False
    with reporting(broker), open_reader(plan, broker) as reader:
        try:
            with INTERRUPTS.deferred(wake=reader.consumer.wakeup):
                read(plan, reader, out, fields=fields, bar=force_progress, tally=tally, fmt=fmt)
        except KeyboardInterrupt:
            interrupted = True
    if out.stderr_is_tty and not json_mode:
        out.note(f"consumed {human_count(tally.printed, 'record')} from {topic}")
    if interrupted and not follow:
        raise click.exceptions.Exit(EXIT_INTERRUPTED)
