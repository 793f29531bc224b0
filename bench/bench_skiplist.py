"""The skip list against ``sortedcontainers.SortedDict``, measured in the same run.

    .venv/bin/python bench/bench_skiplist.py [--n 1000000] [--node-size 128] [--clock cpu]

One JSON line per figure (see ``bench/_common.py``): our rate as ``value``, the
peer's as ``peer``, and ``ratio`` = ours / peer's. Both structures get the same
operations on the same keys: ``n`` random 16-byte keys from a seeded
``random.Random``, each with one 16-byte value.

- ``put_random``: insert the keys in random order.
- ``get_random`` / ``get_absent``: look up every key in another random order / as
  many keys that are not there.
- ``put_ascending``: insert the keys in ascending order into a fresh structure (the
  log's pattern: each key greater than all before).
- ``iterate``: walk every entry in order (``SortedDict.items()`` for the peer).

The machine is shared, so the work is cut into chunks of ``--chunk`` operations and
the two structures take turns chunk by chunk: a burst of load from elsewhere lands
on both. ``--clock cpu`` (the default) times with this thread's CPU time, which
waiting for a core does not inflate; ``--clock wall`` uses ``perf_counter``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sortedcontainers import SortedDict

sys.path.insert(0, str(Path(__file__).parent))

from _common import emit
from sentinel.storage.entry import ABSENT
from sentinel.storage.skiplist import DEFAULT_NODE_SIZE, SkipList

BENCH = "skiplist"
PEER = "sortedcontainers.SortedDict"


def race(
    ours: Callable[[Sequence[bytes]], Any],
    peer: Callable[[Sequence[bytes]], Any],
    keys: Sequence[bytes],
    chunk: int,
    clock: Callable[[], float],
) -> tuple[float, float]:
    """Seconds each side spends on all of ``keys``, taking turns chunk by chunk."""
    t_ours = t_peer = 0.0
    for lo in range(0, len(keys), chunk):
        part = keys[lo : lo + chunk]
        t0 = clock()
        peer(part)
        t1 = clock()
        ours(part)
        t2 = clock()
        t_peer += t1 - t0
        t_ours += t2 - t1
    return t_ours, t_peer


def report(metric: str, ops: int, t_ours: float, t_peer: float, **extra: Any) -> None:
    ours, peer = ops / t_ours, ops / t_peer
    emit(
        BENCH,
        metric,
        ours,
        "ops/s",
        peer=round(peer, 3),
        peer_name=PEER,
        ratio=round(ours / peer, 3),
        **extra,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--node-size", type=int, default=DEFAULT_NODE_SIZE)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    args = parser.parse_args()
    n: int = args.n
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    extra = {"n": n, "node_size": args.node_size, "clock": args.clock}

    rng = random.Random(args.seed)
    keys = [rng.randbytes(16) for _ in range(n)]
    value = rng.randbytes(16)
    lookups = keys[:]
    rng.shuffle(lookups)
    absent = [rng.randbytes(15) for _ in range(n)]  # 15 bytes: never one of the keys
    ascending = sorted(keys)

    sl = SkipList(random.Random(args.seed), node_size=args.node_size)
    sd: SortedDict = SortedDict()

    def put_ours(part: Sequence[bytes]) -> None:
        put = sl.put
        for k in part:
            put(k, value)

    def put_peer(part: Sequence[bytes]) -> None:
        for k in part:
            sd[k] = value

    report("put_random", n, *race(put_ours, put_peer, keys, args.chunk, clock), **extra)
    assert len(sl) == len(sd) == len(set(keys))

    def get_ours(part: Sequence[bytes]) -> None:
        get = sl.get
        for k in part:
            get(k)

    def get_peer(part: Sequence[bytes]) -> None:
        get = sd.get
        for k in part:
            get(k)

    report("get_random", n, *race(get_ours, get_peer, lookups, args.chunk, clock), **extra)
    report("get_absent", n, *race(get_ours, get_peer, absent, args.chunk, clock), **extra)
    assert sl.get(absent[0]) is ABSENT and sl.get(keys[0]) == value

    t_ours = t_peer = 0.0
    for _ in range(3):
        t0 = clock()
        for _entry in sd.items():
            pass
        t1 = clock()
        for _entry in sl.entries():
            pass
        t2 = clock()
        t_peer += t1 - t0
        t_ours += t2 - t1
    report("iterate", 3 * len(sl), t_ours, t_peer, **extra)

    del sl, sd
    sl = SkipList(random.Random(args.seed), node_size=args.node_size)
    sd = SortedDict()
    report("put_ascending", n, *race(put_ours, put_peer, ascending, args.chunk, clock), **extra)
    assert sl.first_key() == ascending[0] and sl.last_key() == ascending[-1]


if __name__ == "__main__":
    main()
