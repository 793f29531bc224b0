"""Damage a partition's first use finds (its files changed after the start's cheap
check): each call is refused naming the partition and the file, and the broker logs it,
once per cause (before, only the clients saw it)."""

from __future__ import annotations

import logging
import posixpath

import pytest

from sentinel.broker.meta_store import MetaStore
from sentinel.errors import StorageUnavailableError
from sentinel.record import build_batch
from test_damage import DATA, registry, two_partitions


def test_a_partition_that_cannot_open_on_first_use_is_refused_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fs = two_partitions()
    meta = MetaStore.open(fs, posixpath.join(DATA, "meta"))
    topics = registry(fs, meta)
    topics.open()
    log = topics.get("t").partition(1)
    assert not log.opened  # checked at start, opened on first use
    directory = posixpath.join(DATA, "topics", "t", "1")
    manifest = next(n for n in fs.listdir(directory) if n.startswith("MANIFEST-"))
    fs.remove(posixpath.join(directory, manifest))  # gone after the start's check
    with caplog.at_level(logging.WARNING, logger="sentinel.log.partition_log"):
        for _ in range(3):
            with pytest.raises(StorageUnavailableError, match="partition t-1") as refused:
                log.append(build_batch([(None, b"x", (), 1)]))
            assert refused.value.partition == "t-1"
            assert manifest in str(refused.value)
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(logged) == 1 and "partition t-1 cannot reopen its files" in logged[0].getMessage()
    assert len(topics.get("t").partition(0).read(0, 1 << 20).batches) == 1  # the other serves
    topics.close()
    meta.close()
