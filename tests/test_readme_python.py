"""The README's Python examples, run as they are written (the address swapped for a
real broker's), twice in a row: they cannot drift from what works, and running one
again (topics and groups already there) must work too and consume what it produced."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from broker_process import BrokerProcess

README = Path(__file__).resolve().parent.parent / "README.md"
DEFAULT_ADDRESS = "127.0.0.1:9092"
KAFKA_ADDRESS = "127.0.0.1:9093"  # the Kafka protocol listener's default
# what each block prints when it worked: its first words, then its own check
EXPECTED = {
    "orders": re.compile(r"^consumed 1000 records$", re.M),
    "payments": re.compile(r"^9\.5$", re.M),
    "clicks": re.compile(r"^10 clicks, from b'click \d'$", re.M),
    "shipments": re.compile(r"^b'parcel-1' b'shipped'$", re.M),
}


def python_blocks() -> list[str]:
    """The blocks that are scripts (pytest examples are run by tests/test_sentinel_testing.py)."""
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.M | re.S)
    return [block for block in blocks if "def test_" not in block]


def _expectation(block: str) -> re.Pattern[str]:
    for topic, pattern in EXPECTED.items():
        if f'"{topic}"' in block:
            return pattern
    pytest.fail(f"a README python block this test does not know; add it to EXPECTED:\n{block}")


def test_the_readme_has_the_python_examples_this_test_checks() -> None:
    blocks = python_blocks()
    assert len(blocks) == len(EXPECTED)
    assert all(DEFAULT_ADDRESS in block or KAFKA_ADDRESS in block for block in blocks)


def test_readme_python_examples_run_twice_against_a_broker(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    blocks = python_blocks()
    env = dict(os.environ)
    for run in (1, 2):
        for index, block in enumerate(blocks):
            script = tmp_path / f"readme_{index}.py"
            script.write_text(block.replace(DEFAULT_ADDRESS, broker.address)
                              .replace(KAFKA_ADDRESS, broker.kafka_address))
            done = subprocess.run(
                [sys.executable, str(script)],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
                check=False,
            )
            where = f"README python block {index + 1}, run {run}"
            assert done.returncode == 0, f"{where} failed:\n{done.stderr}"
            assert done.stderr == "", f"{where} wrote to stderr:\n{done.stderr}"
            assert _expectation(block).search(done.stdout), f"{where} printed:\n{done.stdout}"
