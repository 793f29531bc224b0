"""How the server's log lines look: text for people, one JSON object per line for shippers.

Text (``--log-format text``)::

    2026-12-02 01:21:33,120 INFO sentinel.broker.topics: topic orders created: 3 partitions

JSON (``--log-format json``), one object per line, no line breaks inside::

    {"ts": "2026-12-02T01:21:33.120+00:00", "level": "INFO",
     "logger": "sentinel.broker.topics", "message": "topic orders created: 3 partitions"}

plus ``"exception"`` (the formatted traceback) when the record carries one.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the message is formatted with its arguments."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        line: dict[str, object] = {
            "ts": stamp.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str, log_format: str) -> None:
    """Send the root logger's records to stderr at ``level`` in ``log_format``."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
