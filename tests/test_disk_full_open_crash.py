"""A crash at every filesystem step of the shared-pipeline workload (several
partitions appending, flushing, releasing and reopening their files), then a start on
a disk that is full: every partition opens, serves every acknowledged append (nothing
but whole batches in order), refuses appends, and takes them again once space is back;
a crash after that loses nothing acknowledged."""

from __future__ import annotations

import pytest

from crash_workload import stored
from sentinel.errors import StorageUnavailableError
from sentinel.record import build_batch
from sentinel.storage.sync_scheduler import SyncScheduler
from test_disk_full import FullFS
from test_shared_pipeline_crash import (
    ROUNDS,
    TOTAL_OPS,
    crash_during_workload,
    open_logs,
    value,
)

STEPS = range(0, TOTAL_OPS + 1)


@pytest.mark.parametrize("fail_at", STEPS)
def test_a_crash_at_any_step_then_a_start_on_a_full_disk(fail_at: int) -> None:
    fs = FullFS()
    acked = crash_during_workload(fs, fail_at)
    fs.full("write")  # no new bytes (a cut tail's fsync, or a replayed one's, needs none)
    scheduler = SyncScheduler(1)
    logs = open_logs(fs, scheduler)  # nothing it would write may stop it
    served: list[list[bytes]] = []
    for i, log in enumerate(logs):
        got = stored(log)
        appended = [value(i, n) for n in range(ROUNDS)]
        assert got == appended[: len(got)], (fail_at, i, got)
        assert len(got) >= len(acked[i]), (fail_at, i, got, acked[i])
        served.append(got)
    extra = build_batch([(None, b"after", (), 1_700_000_000_000)])
    with pytest.raises(StorageUnavailableError):
        for log in logs:  # (a WAL continued in a segment's last page may take one)
            log.append(extra)
            log.append(extra)
    fs.space_back()
    for log in logs:
        log.engine.resume()
        log.append(extra)
    for log in logs:
        log.close()
    fs.crash()
    for i, log in enumerate(open_logs(fs, scheduler)):
        got = stored(log)
        assert got[: len(served[i])] == served[i], (fail_at, i, got)
        assert got[-1] == b"after", (fail_at, i, got)
        log.close()
    scheduler.shutdown()
