"""Real processes: kill -9 during synced writes, and bounded memory over 2 GiB."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sentinel.storage.engine import Engine

CHILD = str(Path(__file__).with_name("engine_child.py"))


def test_kill_9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    rng = random.Random(2024)
    directory = str(tmp_path / "db")
    acked = -1
    for _round in range(3):
        proc = subprocess.Popen(
            [sys.executable, CHILD, "writer", directory],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        target = acked + rng.randint(200, 3000)
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked = max(acked, int(line))
            if acked >= target:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert acked >= target, "the writer did not make progress"
        with Engine.open(directory) as engine:
            for i in range(acked + 1):
                key = b"%010d" % i
                assert engine.get(key) == key * 20, i


@pytest.mark.slow
def test_two_gib_write_keeps_peak_rss_under_400_mib(tmp_path: Path) -> None:
    total = 2 * 1024 * 1024 * 1024
    result = subprocess.run(
        [sys.executable, CHILD, "bulk", str(tmp_path / "db"), str(total)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    peak_kib, count, flushes, compaction_bytes = map(int, result.stdout.split())
    assert count == total // (16 * 1024)
    assert flushes >= 2 * 1024 // 64 - 2
    assert compaction_bytes == 0  # ascending keys are moved, never rewritten
    assert peak_kib < 400 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"
