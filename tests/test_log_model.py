"""The partition log against a list model of (base, last, bytes): random appends,
truncations, retention, DeleteRecords, restarts and crashes (sync ``always``)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.broker.topic_config import TopicConfig
from sentinel.clock import ManualClock
from sentinel.fs import MemFS
from sentinel.log.errors import OffsetOutOfRangeError
from sentinel.log.partition_log import PartitionLog
from sentinel.log.types import LogOptions
from sentinel.record import build_batch
from sentinel.storage.compaction import CompactionOptions
from sentinel.storage.options import EngineOptions

T0 = 1_700_000_000_000
ENGINE = EngineOptions(
    memtable_bytes=2048,
    background=False,
    compaction=CompactionOptions(
        l0_compaction_trigger=2, l1_target_bytes=8192, target_file_bytes=4096
    ),
)
OPTIONS = LogOptions(checkpoint_interval_bytes=1500, time_index_interval_bytes=700)


@dataclass
class Model:
    batches: list[tuple[int, int, bytes]] = field(default_factory=list)
    log_start: int = 0

    @property
    def end(self) -> int:
        return self.batches[-1][1] + 1 if self.batches else self.log_start

    @property
    def size(self) -> int:
        return sum(len(b) for _, _, b in self.batches)


def stamped(data: bytes, base: int) -> bytes:
    return struct.pack(">q", base) + data[8:12] + struct.pack(">i", 0) + data[16:]


appends = st.tuples(st.just("append"), st.integers(1, 6), st.integers(0, 300))
truncates = st.tuples(st.just("truncate"), st.integers(0, 1000), st.just(0))
retains = st.tuples(st.just("retain"), st.integers(0, 3000), st.just(0))
deletes = st.tuples(st.just("delete"), st.integers(0, 1000), st.just(0))
restarts = st.tuples(st.sampled_from(["reopen", "crash"]), st.just(0), st.just(0))
operations = st.lists(
    st.one_of(appends, appends, appends, truncates, retains, deletes, restarts),
    min_size=5,
    max_size=60,
)


def open_log(fs: MemFS, clock: ManualClock) -> PartitionLog:
    return PartitionLog.open(fs, "/p", TopicConfig(retention_ms=-1), clock, ENGINE, options=OPTIONS)


def check(log: PartitionLog, model: Model) -> None:
    assert (log.log_start_offset, log.log_end_offset) == (model.log_start, model.end)
    assert log.high_watermark == model.end
    assert log.size_bytes == model.size
    got: list[bytes] = []
    offset = model.log_start
    while offset < model.end:
        result = log.read(offset, 700)
        assert result.batches
        got.extend(result.batches)
        offset = result.next_offset
    assert got == [b for _, _, b in model.batches]
    for base, last, data in model.batches[::3]:
        middle = max((base + last) // 2, model.log_start)
        assert log.read(middle, 1).batches == (data,)
    try:
        log.read(model.end + 1, 10)
    except OffsetOutOfRangeError as exc:
        assert (exc.log_start_offset, exc.log_end_offset) == (model.log_start, model.end)
    else:
        raise AssertionError("read past the end succeeded")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_log_matches_list_model(ops: list[tuple[str, int, int]]) -> None:
    fs, clock = MemFS(), ManualClock()
    log = open_log(fs, clock)
    model = Model()
    for step, (op, a, b) in enumerate(ops):
        if op == "append":
            data = build_batch([(b"k", bytes(b), (), T0 + step)] * a)
            result = log.append(data)
            base = model.end
            assert (result.base_offset, result.last_offset) == (base, base + a - 1)
            model.batches.append((base, base + a - 1, stamped(data, base)))
        elif op == "truncate":
            targets = [base for base, _, _ in model.batches] + [model.end]
            target = targets[a % len(targets)]
            log.truncate_suffix(target)
            if target <= model.log_start:
                model.batches, model.log_start = [], target
            else:
                model.batches = [x for x in model.batches if x[0] < target]
        elif op == "retain":
            log.update_config(TopicConfig(retention_ms=-1, retention_bytes=a))
            removed = log.apply_retention()
            expected = 0
            while len(model.batches) > 1 and model.size > a:
                gone = model.batches.pop(0)
                model.log_start = max(model.log_start, gone[1] + 1)
                expected += 1
            assert removed == expected
        elif op == "delete":
            target = model.log_start + a % (model.end - model.log_start + 1)
            log.delete_records(target)
            if target > model.log_start:
                model.batches = [x for x in model.batches if x[1] + 1 > target]
                model.log_start = target
        else:
            if op == "reopen":
                log.close()
            else:
                fs.crash()
            log = open_log(fs, clock)
        check(log, model)
    log.close()
    log = open_log(fs, clock)
    check(log, model)
    log.close()
