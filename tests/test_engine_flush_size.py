"""A flush writes one table, whatever its size against the compaction policy's
``target_file_bytes``, and its manifest edit names it: a flush cut there recorded only
its first table, and every entry past the cut was lost once the WAL segments holding it
were let go (a plain flush of a large memtable; a replay after kill -9 flushed at open,
its large values read back in full)."""

from __future__ import annotations

import pytest

from sentinel.fs import MemFS
from sentinel.storage.compaction import CompactionOptions
from sentinel.storage.engine import Engine
from sentinel.storage.files import TABLE_SUFFIX
from sentinel.storage.options import EngineOptions

OPTIONS = EngineOptions(
    memtable_bytes=64 * 1024,
    background=False,
    value_separation_bytes=256,
    compaction=CompactionOptions(target_file_bytes=2048),  # far below a memtable
)
SMALL = {b"small%03d" % i: bytes([i]) * 40 for i in range(200)}  # ~10 KB of table
LARGE = {b"large%03d" % i: bytes([i]) * 1000 for i in range(20)}  # kept in the WAL


def _tables(fs: MemFS) -> list[str]:
    return sorted(n for n in fs.listdir("/db") if n.endswith(TABLE_SUFFIX))


def _everything(engine: Engine) -> dict[bytes, bytes]:
    return {k: v for k, v in engine.scan() if v is not None}


@pytest.mark.parametrize("values", [SMALL, {**SMALL, **LARGE}], ids=["inline", "with-large"])
def test_a_flush_past_the_target_file_size_keeps_every_entry(values: dict[bytes, bytes]) -> None:
    fs = MemFS()
    with Engine.open("/db", OPTIONS, fs=fs) as engine:
        for key, value in values.items():
            engine.put(key, value)
        engine.flush()
        assert len(_tables(fs)) == 1  # one table a flush
        assert _everything(engine) == values
    fs.crash()
    with Engine.open("/db", OPTIONS, fs=fs) as engine:
        assert _everything(engine) == values
        assert engine.replay_report is not None and engine.replay_report.entries == 0


def test_a_replay_flushed_at_open_keeps_every_entry() -> None:
    """Over a quarter of the memtable, the replay after kill -9 is flushed at open, its
    large values inline (the replay reads them in full): a table far past the target."""
    fs = MemFS()
    engine = Engine.open("/db", OPTIONS, fs=fs)
    values = {**SMALL, **LARGE}
    for key, value in values.items():
        engine.put(key, value)
    fs.kill()
    with Engine.open("/db", OPTIONS, fs=fs) as reopened:
        assert reopened.replay_kept_bytes == 0  # flushed, not kept
        assert _everything(reopened) == values
    fs.crash()
    with Engine.open("/db", OPTIONS, fs=fs) as again:
        assert _everything(again) == values
