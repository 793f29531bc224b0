"""The layers import downwards only (issue 7's "Layering"): checked in fresh processes,
so that nothing imported by another test hides an import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def imported_by(module: str) -> list[str]:
    code = (
        f"import sys, json, {module}; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('sentinel.'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return list(json.loads(out))


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("sentinel.client", ("sentinel.broker", "sentinel.server", "sentinel.cluster",
                             "sentinel.storage", "sentinel.log")),
        ("sentinel.log.partition_log", ("sentinel.broker", "sentinel.server",
                                        "sentinel.cluster", "sentinel.raft")),
        ("sentinel.storage.engine", ("sentinel.log", "sentinel.broker", "sentinel.server",
                                     "sentinel.cluster", "sentinel.raft")),
        ("sentinel.raft.multi_driver", ("sentinel.broker", "sentinel.server",
                                        "sentinel.cluster")),
    ],
)
def test_a_layer_does_not_import_the_ones_above(module: str, forbidden: tuple[str, ...]) -> None:
    above = [m for m in imported_by(module) if m.startswith(forbidden)]
    assert above == [], f"{module} imports {above}"
