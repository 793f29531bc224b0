"""Child processes for tests/test_engine_process.py (run with ``python -m``-free path).

``writer DIR``: put keys with sync ``always`` forever, printing each acknowledged key.
``bulk DIR BYTES``: write BYTES of 16 KiB values with default options; print peak RSS.
"""

from __future__ import annotations

import resource
import sys

from sentinel.storage.engine import Engine
from sentinel.storage.options import EngineOptions
from sentinel.storage.wal import SyncMode, WalOptions


def writer(directory: str) -> None:
    opts = EngineOptions(memtable_bytes=256 * 1024, wal=WalOptions(sync_mode=SyncMode.ALWAYS))
    engine = Engine.open(directory, opts)
    i = 0
    while True:
        key = b"%010d" % i
        engine.put(key, key * 20)
        sys.stdout.write(f"{i}\n")
        sys.stdout.flush()
        i += 1


def bulk(directory: str, total: int) -> None:
    opts = EngineOptions(wal=WalOptions(sync_mode=SyncMode.NONE))
    value = bytes(range(256)) * 64  # 16 KiB
    with Engine.open(directory, opts) as engine:
        written = 0
        i = 0
        while written < total:
            engine.put(i.to_bytes(8, "big"), value)
            written += len(value)
            i += 1
        stats = engine.stats()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{peak_kib} {i} {stats.flushes} {stats.compaction_bytes_written}")


if __name__ == "__main__":
    if sys.argv[1] == "writer":
        writer(sys.argv[2])
    else:
        bulk(sys.argv[2], int(sys.argv[3]))
