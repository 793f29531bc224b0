"""Where the CLI writes and how values look.

Two modes: human (rich tables, sizes like ``1.5 MiB``, ISO-8601 times) and ``-json``
(one JSON document per line, raw numbers, times in epoch milliseconds). Results go to
stdout; errors (one line) and progress bars go to stderr, so stdout stays clean for
pipes.

Records print one per line. Human: the selected fields tab-separated, then the
value, decoded as UTF-8 with U+FFFD for invalid bytes::

    2026-01-02T03:04:05.678Z <TAB> 7 <TAB> user-1 <TAB> trace=abc <TAB> Hello, World!
    (timestamp)                    (offset) (key)      (headers)       (value)

``null`` stands for a missing key or value. JSON: ``{"topic", "partition", "offset",
"timestamp", "key", "value", "headers": [{"key", "value"}...]}``; a key or value (or a
header's value) is its UTF-8 text, or null; bytes that are not UTF-8 are base64 and the
object says so with ``"key_encoding": "base64"`` (``value_encoding``, a header's
``encoding``).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sentinel.cli.record_format import headers_text
from sentinel.client import ConsumerRecord

__all__ = [
    "PROGRESS_MIN",
    "Output",
    "RecordFields",
    "decode_text",
    "encode_bytes",
    "format_timestamp",
    "human_count",
    "human_size",
    "progress",
    "record_dict",
    "record_line",
]

PROGRESS_MIN = 1000
"""Runs of at least this many records get a progress bar (on a terminal)."""

NULL = "null"
_WIDE = 160  # table width when stdout is not a terminal (rich would assume 80)


def decode_text(data: bytes | None) -> str | None:
    """Bytes as text: UTF-8, invalid sequences replaced by U+FFFD."""
    return None if data is None else data.decode("utf-8", "replace")


def encode_bytes(data: bytes | None) -> tuple[str | None, bool]:
    """Bytes for JSON: their UTF-8 text, else base64 (the flag says which)."""
    if data is None:
        return None, False
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), True


def format_timestamp(ms: int) -> str:
    """Epoch milliseconds as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC); ``-`` when unknown."""
    if ms < 0:
        return "-"
    try:
        moment = dt.datetime.fromtimestamp(ms / 1000.0, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return str(ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def human_size(size: int) -> str:
    """Bytes as ``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024.0
        if value < 1024.0 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def human_count(n: int, noun: str) -> str:
    """``1 record``, ``2 records``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclass(frozen=True, slots=True)
class RecordFields:
    """Which fields a human record line shows before the value."""

    timestamp: bool = False
    partition: bool = False
    offset: bool = False
    key: bool = False
    headers: bool = False


def record_line(record: ConsumerRecord, fields: RecordFields) -> str:
    """One record as a human line (no trailing newline)."""
    parts: list[str] = []
    if fields.timestamp:
        parts.append(format_timestamp(record.timestamp))
    if fields.partition:
        parts.append(str(record.partition))
    if fields.offset:
        parts.append(str(record.offset))
    if fields.key:
        key = decode_text(record.key)
        parts.append(NULL if key is None else key)
    if fields.headers:
        parts.append(headers_text(record.headers))
    value = decode_text(record.value)
    parts.append(NULL if value is None else value)
    return "\t".join(parts)


def record_dict(record: ConsumerRecord) -> dict[str, Any]:
    """One record as the JSON object ``-json`` prints."""
    doc: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
    }
    for name, data in (("key", record.key), ("value", record.value)):
        doc[name], binary = encode_bytes(data)
        if binary:
            doc[f"{name}_encoding"] = "base64"
    headers = []
    for key, data in record.headers:
        text, binary = encode_bytes(data)
        header: dict[str, Any] = {"key": key, "value": text}
        if binary:
            header["encoding"] = "base64"
        headers.append(header)
    doc["headers"] = headers
    return doc


class Output:
    """stdout and stderr of one command, in human or JSON mode."""

    def __init__(
        self,
        *,
        json_mode: bool,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
    ) -> None:
        self.json_mode = json_mode
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr
        wide = None if self.stdout.isatty() else _WIDE
        self.console = Console(file=self.stdout, width=wide, highlight=False, soft_wrap=False)

    @property
    def stderr_is_tty(self) -> bool:
        return self.stderr.isatty()

    def json(self, document: Any) -> None:
        """One JSON document on one line."""
        self.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")

    def raw(self, text: str) -> None:
        """Text on stdout exactly as given (a ``-f`` format adds its own newlines)."""
        self.stdout.write(text)

    def line(self, text: str) -> None:
        """A plain line on stdout (no markup, no wrapping)."""
        self.stdout.write(text + "\n")

    def show(self, *renderables: RenderableType) -> None:
        """Rich renderables (tables, styled text) on stdout."""
        if self.console.is_terminal:
            for renderable in renderables:
                self.console.print(renderable)
            return
        with self.console.capture() as captured:  # for files and pipes: no padding at the ends
            for renderable in renderables:
                self.console.print(renderable)
        for line in captured.get().splitlines():
            self.stdout.write(line.rstrip() + "\n")

    def result(self, document: Any, human: RenderableType) -> None:
        """A command's result: ``document`` as JSON, or ``human`` (a plain line if a str)."""
        if self.json_mode:
            self.json(document)
        elif isinstance(human, str):
            self.line(human)
        else:
            self.show(human)

    def note(self, text: str) -> None:
        """A line on stderr that is not an error (summaries for a person watching)."""
        self.stderr.write(text + "\n")

    def flush(self) -> None:
        self.stdout.flush()

    def wants_progress(self, total: int | None, forced: bool, *, streaming: bool = False) -> bool:
        """Progress for ``-progress``, or for a long run when stderr is a terminal (and,
        when records ``streaming`` to stdout, stdout is not: a bar redrawn between
        records on one screen helps nobody)."""
        if forced:
            return True
        if streaming and self.stdout.isatty():
            return False
        return total is not None and total >= PROGRESS_MIN and self.stderr_is_tty


@contextlib.contextmanager
def progress(
    output: Output, enabled: bool, total: int | None, description: str
) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr; yields ``advance(n)``. A no-op when not ``enabled``."""
    if not enabled:
        yield lambda n: None
        return
    console = Console(file=output.stderr, force_terminal=output.stderr_is_tty or None)
    columns = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(
        *columns, console=console, transient=False, redirect_stdout=False, redirect_stderr=False
    ) as bar:
        task = bar.add_task(description, total=total)

        def advance(n: int) -> None:
            bar.advance(task, n)

        yield advance
