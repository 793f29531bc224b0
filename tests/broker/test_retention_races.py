"""A retention pass runs in its own thread over the topics as they were when it began;
a topic deleted meanwhile (or a replica moved away) closes its partitions under it.
The pass skips them quietly: no ERROR, no traceback in the broker's log (a kill -9 soak
saw one per partition of a topic created and deleted within 40 ms), and the other
topics' retention still runs."""

from __future__ import annotations

import logging

import pytest

from sentinel.broker.service import BrokerService
from sentinel.broker.validation import Acks
from sentinel.clock import SystemClock
from sentinel.config import BrokerConfig
from sentinel.fs import MemFS
from sentinel.record import build_batch


async def test_a_pass_over_a_topic_deleted_meanwhile_skips_it_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = BrokerConfig(data_dir="/data", node_id=1, port=9555, sync_mode="none")
    service = BrokerService(config, MemFS(), SystemClock())
    await service.start()
    try:
        await service.create_topic("gone", 2)
        await service.create_topic("kept", 1, configs={"retention.ms": "1"})
        old = build_batch([(None, b"old", (), 1_000)])  # far older than 1 ms
        await service.produce("kept", 0, old, Acks.ALL)
        await service.produce("kept", 0, old, Acks.ALL)
        snapshot = list(service.registry)  # what the periodic pass hands its thread
        await service.delete_topic("gone")  # on the loop, meanwhile: the logs close
        with caplog.at_level(logging.DEBUG, logger="sentinel"):
            service.enforce_retention(snapshot)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        kept = service.partition_log("kept", 0)
        assert kept.log_start_offset >= 1  # the other topic's pass ran
    finally:
        await service.stop()
