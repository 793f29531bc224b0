"""``sentinel-cli produce``: send records to a topic.

    sentinel-cli produce -topic events -message "Hello, World!" -count 10
    tail -f app.log | sentinel-cli produce -topic logs -key web-1
    printf 'user-1:hello\\n' | sentinel-cli produce -topic t -key-delimiter : -header src=cli
    sentinel-cli produce -topic t -message x -compression zstd

With ``-message`` it sends that value ``-count`` times; without, one record per line
of standard input (the line's bytes as they are, without the line ending; every line
``-count`` times). ``-key-delimiter D`` (kcat's ``-K``) splits each line at its first
D into key and value (a line without D is all value, without a key). ``-header k=v``
(repeatable) goes on every record; ``-compression`` compresses the batches.

Then it prints where the records went: how many per partition and their offset range
(``-json``: one document). The topic is created on first use if the broker
auto-creates topics.

A record the broker did not store makes the run fail (exit 1) after the others were
sent; sending stops at the first failure seen.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import repeat
from typing import IO, Any

import click

from sentinel.cli.common import CONNECT_TIMEOUT_S, broker_options, reporting
from sentinel.cli.errors import CliError, CliUsageError, explain
from sentinel.cli.interrupts import INTERRUPTS
from sentinel.cli.output import Output, human_count, progress
from sentinel.cli.params import ACKS, HEADER, Acks
from sentinel.client import Producer, RecordMetadata

__all__ = ["ProduceTally", "produce", "split_key", "stdin_values"]

COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")

_HARVEST_EVERY = 8192  # check the oldest futures after this many sends
_CLOSE_TIMEOUT_S = 30.0


@dataclass(slots=True)
class PartitionTally:
    """Records stored in one partition and their offset range (-1: unknown, acks=0)."""

    records: int = 0
    first_offset: int = -1
    last_offset: int = -1

    def add(self, offset: int) -> None:
        self.records += 1
        if offset >= 0:
            if self.first_offset < 0 or offset < self.first_offset:
                self.first_offset = offset
            self.last_offset = max(self.last_offset, offset)


@dataclass(slots=True)
class ProduceTally:
    """The outcome of a produce run: stored records per partition, and failures."""

    topic: str
    acks: Acks
    partitions: dict[int, PartitionTally] = field(default_factory=dict)
    stored: int = 0
    failed: int = 0
    first_error: BaseException | None = None

    def ok(self, metadata: RecordMetadata) -> None:
        self.stored += 1
        self.partitions.setdefault(metadata.partition, PartitionTally()).add(metadata.offset)

    def fail(self, error: BaseException) -> None:
        self.failed += 1
        if self.first_error is None:
            self.first_error = error

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "records": self.stored,
            "failed": self.failed,
            "acks": str(self.acks),
            "partitions": [
                {
                    "partition": p,
                    "records": t.records,
                    "first_offset": t.first_offset,
                    "last_offset": t.last_offset,
                }
                for p, t in sorted(self.partitions.items())
            ],
        }

    def text(self) -> str:
        head = f"produced {human_count(self.stored, 'record')} to {self.topic}"
        if not self.partitions:
            return head
        parts = []
        for p, t in sorted(self.partitions.items()):
            if t.first_offset < 0:
                where = ", offsets not reported with acks=0"
            elif t.first_offset == t.last_offset:
                where = f" at offset {t.first_offset}"
            else:
                where = f" at offsets {t.first_offset}-{t.last_offset}"
            parts.append(f"partition {p}: {t.records}{where}")
        return f"{head} [{'; '.join(parts)}]"


def stdin_values(stream: IO[bytes], count: int) -> Iterator[bytes]:
    """Each line of ``stream`` without its ending (``\\n`` or ``\\r\\n``), ``count`` times.
    Waiting for the next line, Ctrl-C stops it at once (``INTERRUPTS.raising``)."""
    while True:
        with INTERRUPTS.raising():
            line = stream.readline()
        if not line:
            return
        value = line[:-1] if line.endswith(b"\n") else line
        if value.endswith(b"\r"):
            value = value[:-1]
        for _ in range(count):
            yield value


def split_key(value: bytes, delimiter: bytes) -> tuple[bytes | None, bytes]:
    """``key<D>value`` as (key, value), at the first ``delimiter``; no delimiter: no key."""
    key, sep, rest = value.partition(delimiter)
    return (key, rest) if sep else (None, value)


def _harvest(pending: deque[Future[RecordMetadata]], tally: ProduceTally, wait: bool) -> None:
    """Move finished futures (all of them when ``wait``) from ``pending`` into ``tally``."""
    while pending and (wait or pending[0].done()):
        future = pending.popleft()
        error = future.exception()
        if error is None:
            tally.ok(future.result())
        else:
            tally.fail(error)


def send_all(
    producer: Producer,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    *,
    headers: list[tuple[str, bytes]],
    partition: int | None,
    tally: ProduceTally,
    advance: Any,
) -> None:
    """Send every (key, value) (stopping at the first failure seen), flush, and tally."""
    pending: deque[Future[RecordMetadata]] = deque()
    for sent, (key, value) in enumerate(records, 1):
        pending.append(
            producer.send(topic, value, key=key, headers=headers or None, partition=partition)
        )
        advance(1)
        INTERRUPTS.check()
        if sent % _HARVEST_EVERY == 0:
            _harvest(pending, tally, wait=False)
            if tally.failed:
                break
    producer.flush()
    _harvest(pending, tally, wait=True)


@click.command("produce")
@broker_options
@click.option("--topic", required=True, help="Topic to write to.")
@click.option("--message", default=None, help="The value to send. [default: lines of stdin]")
@click.option("--key", default=None, help="Key of every record (sets its partition).")
@click.option(
    "--partition",
    type=click.IntRange(min=-1),
    default=-1,
    show_default=True,
    help="Partition to write to; -1: chosen by key (or spread when there is none).",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Send each message this many times.",
)
@click.option(
    "--acks",
    callback=ACKS,
    metavar="0|1|all",
    default="1",
    show_default=True,
    help="0: do not wait; 1: the leader stored it; all: every in-sync replica did.",
)
@click.option(
    "--header",
    "headers",
    callback=HEADER,
    metavar="KEY=VALUE",
    multiple=True,
    help="A header on every record; repeat for more.",
)
@click.option(
    "--key-delimiter",
    metavar="D",
    default=None,
    help="Split each line of stdin at its first D into key and value (kcat's -K).",
)
@click.option(
    "--compression",
    type=click.Choice(COMPRESSIONS, case_sensitive=False),
    default="none",
    show_default=True,
    help="Compress the record batches.",
)
@click.option("--progress", "force_progress", is_flag=True, help="Always show a progress bar.")
def produce(  # noqa: PLR0917 - click passes every option
    broker: str,
    json_mode: bool,
    topic: str,
    message: str | None,
    key: str | None,
    partition: int,
    count: int,
    acks: Acks,
    headers: tuple[tuple[str, bytes], ...],
    key_delimiter: str | None,
    compression: str,
    force_progress: bool,
) -> None:
    """Send records to a topic: -message VALUE (-count times), or one per line of stdin."""
    if key_delimiter is not None and (key is not None or message is not None):
        raise CliUsageError("-key-delimiter splits lines of stdin: not with -key or -message")
    if key_delimiter == "":
        raise CliUsageError("-key-delimiter needs at least one character")
    out = Output(json_mode=json_mode)
    key_bytes = None if key is None else key.encode("utf-8")
    records: Iterable[tuple[bytes | None, bytes]]
    if message is not None:
        records = repeat((key_bytes, message.encode("utf-8")), count)
        total: int | None = count
    else:
        values = stdin_values(sys.stdin.buffer, count)
        if key_delimiter is not None:
            delimiter = key_delimiter.encode("utf-8")
            records = (split_key(value, delimiter) for value in values)
        else:
            records = ((key_bytes, value) for value in values)
        total = None
    tally = ProduceTally(topic, acks)
    with reporting(broker):
        producer = Producer(
            broker,
            acks=acks,
            max_block_ms=int(CONNECT_TIMEOUT_S * 1000),
            compression=None if compression.lower() == "none" else compression.lower(),
        )
        try:
            show = out.wants_progress(total, force_progress)
            with progress(out, show, total, f"produce {topic}") as advance, INTERRUPTS.deferred():
                send_all(
                    producer,
                    topic,
                    records,
                    headers=list(headers),
                    partition=None if partition < 0 else partition,
                    tally=tally,
                    advance=advance,
                )
        finally:
            producer.close(_CLOSE_TIMEOUT_S)
    if json_mode:
        out.json(tally.as_dict())
    else:
        out.line(tally.text())
    out.flush()
    if tally.first_error is not None:
        raise CliError(
            f"{tally.failed} of {tally.stored + tally.failed} records were not stored: "
            f"{_describe(tally.first_error, broker)}"
        )


def _describe(error: BaseException, broker: str) -> str:
    reported = explain(error, broker) if isinstance(error, Exception) else None
    if reported is not None:
        return reported.message
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
