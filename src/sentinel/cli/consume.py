"""``sentinel-cli consume``: print records of a topic.

    sentinel-cli consume -topic events -from-beginning -max-messages 100
    sentinel-cli consume -topic events -group audit -follow -print-key

Two ways to read:

- one partition (``-partition``, default 0) from a start offset: ``-offset N``,
  ``-offset earliest`` (= ``-from-beginning``; the default, as the original's offset 0)
  or ``-offset latest``. Nothing is committed.
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import click

from sentinel.cli.common import admin_client, broker_options, reporting
from sentinel.cli.errors import EXIT_INTERRUPTED, CliError, CliUsageError
from sentinel.cli.output import (
    Output,
    RecordFields,
    human_count,
    progress,
    record_dict,
    record_line,
)
from sentinel.cli.params import OFFSET, OffsetSpec
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
    partition: int | None  # None: as a group member
    offset: OffsetSpec
    group: str | None
    follow: bool
    limit: int | None  # None: no limit


def start_offset(topic: TopicDescription, partition: int, offset: OffsetSpec) -> int:
    """The offset to read ``partition`` from; ``CliError`` if it is not in the log."""
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
    if not p.log_start_offset <= offset <= p.high_watermark:
        raise CliError(
            f"offset {offset} is out of range for {topic.name}/{partition}: "
            f"the log holds offsets {p.log_start_offset} to {p.high_watermark}"
        )
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
    if group is not None and isinstance(offset, int):
        raise CliUsageError(
            "-group starts at the group's committed offsets: -offset takes earliest or latest"
        )
    return ReadPlan(
        topic=topic,
        partition=None if group is not None else (partition or 0),
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


def _open_partition(plan: ReadPlan, broker: str, admin: Admin) -> _Reader:
    assert plan.partition is not None
    topic = admin.describe_topic(plan.topic)
    start = start_offset(topic, plan.partition, plan.offset)
    tp = TopicPartition(plan.topic, plan.partition)
    consumer = Consumer(broker, auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
    except BaseException:
        consumer.close()
        raise
    end = None if plan.follow else EndOfLog({tp: topic.partitions[plan.partition].high_watermark})
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
            reader = _open_partition(plan, broker, admin)
        else:
            reader = _open_group(plan, broker, admin)
    try:
        yield reader
    finally:
        reader.consumer.close(timeout=10.0)


def _emit(out: Output, records: list[ConsumerRecord], fields: RecordFields) -> None:
    if out.json_mode:
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
            if not records:
                continue
            _emit(out, records, fields)
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
    help="Partition to read (not with -group). [default: 0]",
)
@click.option(
    "--offset",
    callback=OFFSET,
    metavar="N|earliest|latest",
    default=None,
    help="Where to start. [default: earliest]",
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
@click.option("--progress", "force_progress", is_flag=True, help="Always show a progress bar.")
def consume(  # noqa: PLR0917 - click passes every option
    broker: str,
    json_mode: bool,
    topic: str,
    partition: int | None,
    offset: OffsetSpec | None,
    from_beginning: bool,
    max_messages: int,
    group: str | None,
    follow: bool,
    print_key: bool,
    print_offset: bool,
    print_timestamp: bool,
    print_partition: bool,
    force_progress: bool,
) -> None:
    """Print a topic's records, one per line (-json: one JSON object per line)."""
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
        timestamp=print_timestamp, partition=print_partition, offset=print_offset, key=print_key
    )
    out = Output(json_mode=json_mode)
    tally = Tally()
    interrupted = False
    with reporting(broker), open_reader(plan, broker) as reader:
        try:
            read(plan, reader, out, fields=fields, bar=force_progress, tally=tally)
        except KeyboardInterrupt:
            interrupted = True
    if out.stderr_is_tty and not json_mode:
        out.note(f"consumed {human_count(tally.printed, 'record')} from {topic}")
    if interrupted and not follow:
        raise click.exceptions.Exit(EXIT_INTERRUPTED)
