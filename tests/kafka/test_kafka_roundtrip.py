"""Every API, every version, request and response: generated value -> encode -> decode."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka_values import all_versions, message_values

from sentinel.protocol.kafka import serde
from sentinel.protocol.kafka.schema import Message

CASES = all_versions()


@pytest.mark.parametrize(("api", "kind", "message", "version"), CASES,
                         ids=[f"{a}-{k}-v{v}" for a, k, _, v in CASES])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip(api: str, kind: str, message: Message, version: int, data: Any) -> None:
    value = data.draw(message_values(message, version))
    encoded = serde.encode(message, version, value)
    assert serde.decode(message, version, encoded) == value


def test_every_listed_api_and_version_is_covered() -> None:
    listed = {0: (3, 9), 1: (4, 11), 2: (1, 7), 3: (1, 12), 8: (2, 8), 9: (1, 8),
              10: (0, 2), 11: (0, 5), 12: (0, 3), 13: (0, 4), 14: (0, 3), 15: (0, 5),
              16: (0, 1), 18: (0, 4), 19: (2, 4), 20: (1, 4), 22: (0, 4), 32: (1, 1),
              23: (2, 4), 37: (0, 1), 21: (0, 2), 33: (0, 2), 44: (0, 1), 45: (0, 0),
              46: (0, 0), 42: (0, 2), 47: (0, 0),
              60: (0, 1)}
    covered: dict[int, set[int]] = {}
    for _, _, message, version in CASES:
        covered.setdefault(message.api_key, set()).add(version)
    assert {k: (min(v), max(v)) for k, v in covered.items()} == listed
