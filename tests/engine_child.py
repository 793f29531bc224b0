"""Child processes for tests/test_engine_process.py (run with ``python -m``-free path).

``writer DIR``: put keys with sync ``always`` forever, printing each acknowledged key.
``bulk DIR BYTES``: write BYTES of 16 KiB values with default options; print peak RSS.

The peak RSS is this process's own (``peak_rss_kib``), not ``ru_maxrss``: on Linux
``ru_maxrss`` keeps the high-water mark of the memory the process had before its
``execve``. Python's ``subprocess`` starts a child with ``vfork``, so that memory is
the parent's: a child of a pytest process that once held 400 MiB reported 400 MiB,
whatever it used itself (a full test run's first hypothesis test took the process to
~350 MiB, and the tests before ``test_engine_process`` a little more).
"""

from __future__ import annotations

import resource
import sys

from sentinel.storage.engine import Engine
from sentinel.storage.options import EngineOptions
from sentinel.storage.wal import SyncMode, WalOptions


def peak_rss_kib() -> int:
    """The most memory this process has held since it started (KiB): ``VmHWM``, the
    high-water mark of its own address space, which ``execve`` starts afresh (Linux);
    ``ru_maxrss`` where there is no ``/proc`` (see the module doc for why not always)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


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
    peak_kib = peak_rss_kib()
    print(f"{peak_kib} {i} {stats.flushes} {stats.compaction_bytes_written}")


if __name__ == "__main__":
    if sys.argv[1] == "writer":
        writer(sys.argv[2])
    else:
        bulk(sys.argv[2], int(sys.argv[3]))
