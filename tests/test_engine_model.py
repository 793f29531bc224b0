"""The engine against a dict, through random operations, flushes, compactions and reopens."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sentinel.fs import MemFS
from sentinel.storage.compaction import CompactionOptions
from sentinel.storage.engine import Engine
from sentinel.storage.options import EngineOptions
from sentinel.storage.write_batch import WriteBatch

KEYS = st.binary(min_size=0, max_size=6).map(lambda b: b"k" + b)
VALUES = st.binary(max_size=300)
OPTIONS = EngineOptions(
    memtable_bytes=2048,
    background=False,
    value_separation_bytes=100,  # large values stay in the WAL, tables point at them
    compaction=CompactionOptions(
        l0_compaction_trigger=2, l1_target_bytes=8192, target_file_bytes=4096
    ),
)


class EngineModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fs = MemFS()
        self.engine = Engine.open("/db", OPTIONS, fs=self.fs)
        self.model: dict[bytes, bytes] = {}

    def teardown(self) -> None:
        if not self.engine.closed:
            self.engine.close()

    @rule(key=KEYS, value=VALUES)
    def put(self, key: bytes, value: bytes) -> None:
        self.engine.put(key, value)
        self.model[key] = value

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def delete_existing(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.model)))
        self.engine.delete(key)
        del self.model[key]

    @rule(key=KEYS)
    def delete_any(self, key: bytes) -> None:
        self.engine.delete(key)
        self.model.pop(key, None)

    @rule(ops=st.lists(st.tuples(KEYS, st.none() | VALUES), max_size=8))
    def batch(self, ops: list[tuple[bytes, bytes | None]]) -> None:
        batch = WriteBatch()
        for key, value in ops:
            if value is None:
                batch.delete(key)
                self.model.pop(key, None)
            else:
                batch.put(key, value)
                self.model[key] = value
        self.engine.write(batch)

    @rule(start=KEYS, end=KEYS)
    def scan_range(self, start: bytes, end: bytes) -> None:
        got = list(self.engine.scan(start, end))
        want = sorted((k, v) for k, v in self.model.items() if start <= k < end)
        assert got == want

    @rule(key=KEYS)
    def get_and_floor(self, key: bytes) -> None:
        assert self.engine.get(key) == self.model.get(key)
        below = [k for k in self.model if k <= key]
        want = (max(below), self.model[max(below)]) if below else None
        assert self.engine.seek_floor(key) == want

    @rule()
    def flush(self) -> None:
        self.engine.flush()

    @rule()
    def compact(self) -> None:
        self.engine.compact()

    @rule()
    def reopen(self) -> None:
        self.engine.close()
        self.engine = Engine.open("/db", OPTIONS, fs=self.fs)

    @rule()
    def crash_and_reopen(self) -> None:
        # Sync is "always": everything acknowledged must survive a crash.
        self.fs.crash()
        self.engine = Engine.open("/db", OPTIONS, fs=self.fs)

    @invariant()
    def full_scan_matches(self) -> None:
        assert list(self.engine.scan()) == sorted(self.model.items())


EngineModel.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineModel = EngineModel.TestCase
