"""The job runner of an ``OpenLogLimit`` in tests: releases run inline, in the call that
made them due, so that a test sees them at once; delayed retries are dropped."""

from __future__ import annotations

from collections.abc import Callable


def run_now(job: Callable[[], None], delay: float) -> None:
    if delay <= 0:
        job()
