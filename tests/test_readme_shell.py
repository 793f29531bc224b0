"""The README's quick start, as written: every ``sentinel-cli`` line of its shell block
runs against a real broker and succeeds, so the README cannot drift from the CLI."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

from broker_process import BrokerProcess

README = Path(__file__).resolve().parent.parent / "README.md"


def quick_start_commands() -> list[list[str]]:
    """The command lines of the first ```bash block under "## Quick start"."""
    text = README.read_text()
    section = text[text.index("## Quick start") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the quick start has a bash block"
    return [shlex.split(line) for line in block.group(1).splitlines() if line.strip()]


def test_the_quick_start_runs_as_written(broker: BrokerProcess) -> None:
    commands = quick_start_commands()
    cli_lines = [c for c in commands if c[0].endswith("sentinel-cli")]
    assert len(cli_lines) >= 4, commands
    env = {**os.environ, "SENTINEL_BROKER": broker.address}
    outputs = []
    for argv in cli_lines:
        done = subprocess.run(
            [sys.executable, "-m", "sentinel.cli.main", *argv[1:]],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        assert done.returncode == 0, (argv, done.stderr)
        outputs.append(done.stdout)
    assert outputs[1].splitlines() == ["Hello, World!"] * 10  # what the first line produced
    # The metrics line: the broker exports sentinel_* figures.
    assert any(c[0] == "curl" for c in commands)
    metrics = urllib.request.urlopen(broker.metrics_url, timeout=5).read().decode()
    assert any(line.startswith("sentinel_") for line in metrics.splitlines())
