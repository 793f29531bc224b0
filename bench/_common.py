"""Shared helpers for benchmarks: every figure is one JSON object on its own line."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any


def emit(bench: str, metric: str, value: float, unit: str, **extra: Any) -> None:
    """Print one figure: {"bench", "metric", "value", "unit", ...extra}."""
    record: dict[str, Any] = {
        "bench": bench,
        "metric": metric,
        "value": round(value, 3),
        "unit": unit,
    }
    record.update(extra)
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
