"""Event-loop stall tracer for a broker under a benchmark.

Put ``bench/stalltrace`` on the server's PYTHONPATH and set ``STALLTRACE_FILE`` to a
file: its ``sitecustomize`` calls ``install`` in a ``sentinel.cli.server`` process only
(it works under uvloop, whose handles cannot be patched). A heartbeat task ticks every
millisecond on the loop; a thread samples the loop thread's stack every millisecond
while a tick is late by half of ``STALLTRACE_MS`` (default 5). A gap of ``STALLTRACE_MS``
or more between ticks is a stall (one long callback or a burst of them): one line per stall goes
to the file: its duration, and the sampled stacks (innermost sentinel frames) with
how often each was seen. ``python bench/stall_tracer.py FILE`` summarizes a file.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

_samples: list[str] = []


def _stack(frame: FrameType | None) -> str:
    entries = traceback.extract_stack(frame, limit=40)
    keep = [e for e in entries if "sentinel" in e.filename or "grpc" in e.filename]
    tail = keep[-8:] if keep else entries[-6:]
    return " < ".join(
        f"{os.path.basename(e.filename)}:{e.lineno}:{e.name}" for e in reversed(tail)
    )


_PARKED = {"wait", "get", "select", "poll", "_wait_for_tstate_lock", "sleep", "_worker", "_work"}


def _parked(frame: FrameType) -> bool:
    """Waiting, or in a C function run as a thread's target (not seen holding the GIL)."""
    code = frame.f_code
    return code.co_name in _PARKED or (code.co_name == "run" and "threading" in code.co_filename)


def _top(frame: FrameType) -> str:
    """The innermost sentinel frame of a thread (or its top frame)."""
    entries = traceback.extract_stack(frame, limit=30)
    mine = [e for e in entries if "sentinel" in e.filename] or entries[-1:]
    e = mine[-1]
    return f"{os.path.basename(e.filename)}:{e.lineno}:{e.name}"


def install(path: str, threshold_ms: float = 5.0) -> None:
    """Wrap ``asyncio.run`` / ``uvloop.run``: a heartbeat task on the loop ticks every
    millisecond; a gap of ``threshold_ms`` or more between ticks is a stall (a callback
    that ran long, or a burst of callbacks), reported with the loop thread's stacks
    sampled during it."""
    threshold = threshold_ms / 1000
    out = open(path, "a", buffering=1)  # noqa: SIM115 - kept for the process's life
    beat = {"last": 0.0, "thread": 0.0}

    async def heartbeat() -> None:
        beat["thread"] = threading.get_ident()
        beat["last"] = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gap = now - beat["last"]
            beat["last"] = now
            if gap >= threshold:
                counts = collections.Counter(_samples)
                top = "; ".join(f"{n}x {s}" for s, n in counts.most_common(3))
                out.write(f"{gap * 1000:.1f} ms :: {top}\n")
            _samples.clear()

    def sampler() -> None:
        while True:
            time.sleep(0.001)
            last, ident = beat["last"], int(beat["thread"])
            if last and time.perf_counter() - last >= threshold * 0.5:
                frames = sys._current_frames()
                sample = _stack(frames.get(ident))
                # Other threads not parked in a wait: who may hold the GIL meanwhile.
                busy = sorted(
                    _top(f) for t, f in frames.items()
                    if t not in (ident, threading.get_ident()) and not _parked(f)
                )  # fmt: skip
                if busy:
                    sample += " || busy: " + ", ".join(busy)
                _samples.append(sample)

    def wrap(run: Callable[..., Any]) -> Callable[..., Any]:
        def traced(main: Coroutine[Any, Any, Any], *args: Any, **kwargs: Any) -> Any:
            async def with_heartbeat() -> Any:
                task = asyncio.ensure_future(heartbeat())
                try:
                    return await main
                finally:
                    task.cancel()

            return run(with_heartbeat(), *args, **kwargs)

        return traced

    asyncio.run = wrap(asyncio.run)
    try:
        import uvloop

        uvloop.run = wrap(uvloop.run)  # type: ignore[assignment]
    except ImportError:
        pass
    threading.Thread(target=sampler, name="stall-sampler", daemon=True).start()


def summarize(path: str) -> None:
    """Stalls by duration bucket and by their most seen stack."""
    causes: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    durations: list[float] = []
    with open(path) as lines:
        for line in lines:
            ms = float(line.split(" ms ", 1)[0])
            durations.append(ms)
            stack = line.split(" :: ", 1)[1].split("; ")[0].strip()
            stack = stack.split("x ", 1)[1] if "x " in stack else stack or "(no sample)"
            causes[stack] += 1
            total[stack] += ms
    durations.sort()
    print(f"{len(durations)} stalls >= threshold; max {durations[-1] if durations else 0} ms")
    for stack, n in causes.most_common(12):
        print(f"{n:5d} stalls {total[stack]:8.1f} ms  {stack}")


if __name__ == "__main__":
    summarize(sys.argv[1])
