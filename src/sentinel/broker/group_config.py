"""The group coordinator's limits and timings, and its default member ids."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sentinel.errors import InvalidArgumentError


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """Limits and timings. Defaults follow Kafka's broker defaults where it has one."""

    min_session_timeout_s: float = 6.0  # group.min.session.timeout.ms
    max_session_timeout_s: float = 1800.0  # group.max.session.timeout.ms
    initial_rebalance_delay_s: float = 0.0  # group.initial.rebalance.delay.ms (Kafka: 3 s)
    max_group_size: int = 1000  # group.max.size
    max_group_id_length: int = 255
    max_client_id_length: int = 255
    max_protocols: int = 32  # per member
    max_protocol_metadata_bytes: int = 256 * 1024  # per member, all protocols together
    max_offset_metadata_bytes: int = 4096  # offset.metadata.max.bytes

    def __post_init__(self) -> None:
        if not 0 < self.min_session_timeout_s <= self.max_session_timeout_s:
            raise InvalidArgumentError("need 0 < min_session_timeout_s <= max_session_timeout_s")
        if self.initial_rebalance_delay_s < 0:
            raise InvalidArgumentError("initial_rebalance_delay_s must be >= 0")
        for name in (
            "max_group_size",
            "max_group_id_length",
            "max_client_id_length",
            "max_protocols",
            "max_protocol_metadata_bytes",
            "max_offset_metadata_bytes",
        ):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"{name} must be >= 1")


def counter_member_ids(start: int = 1) -> Callable[[], str]:
    """Deterministic uuid-shaped ids from a counter (the default; tests).

    A production driver should pass ``lambda: str(uuid.uuid4())``: ids handed out before
    a coordinator failover must not be handed out again after it.
    """
    counter = itertools.count(start)
    return lambda: str(uuid.UUID(int=next(counter)))
