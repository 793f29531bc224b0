"""The engine crash suites' one workload driver: apply key-value operations to an
engine on the in-memory filesystem until a simulated crash stops it, then check what a
reopened engine serves against what was acknowledged."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

from sentinel.fs import MemFS, caused_by_crash
from sentinel.storage.engine import Engine
from sentinel.storage.options import EngineOptions

Op = tuple[bytes, bytes | None]  # (key, value); None deletes the key
DIRECTORY = "/db"


def workload(seed: int, count: int = 120, keys: int = 40, padding: int = 90) -> list[Op]:
    """``count`` seeded operations over ``keys`` keys: 15 % deletes, the rest puts of a
    value naming its op, padded with up to ``padding`` zero bytes."""
    rng = random.Random(seed)
    ops: list[Op] = []
    for i in range(count):
        key = b"k%03d" % rng.randrange(keys)
        if rng.random() < 0.15:
            ops.append((key, None))
        else:
            ops.append((key, b"v%d-" % i + bytes(rng.randrange(padding))))
    return ops


def run_until_crash(
    fs: MemFS,
    options: EngineOptions,
    ops: Sequence[Op],
    *,
    acked_before: Mapping[bytes, bytes | None] | None = None,
    finish: Callable[[Engine], None] = Engine.close,
) -> tuple[dict[bytes, bytes | None], Op | None]:
    """Open, apply ``ops``, then ``finish`` the engine; return the acknowledged state
    (on top of ``acked_before``) and the op in flight when a simulated crash hit."""
    acked = dict(acked_before or {})
    try:
        engine = Engine.open(DIRECTORY, options, fs=fs)
    except Exception as exc:
        if not caused_by_crash(exc):
            raise
        return acked, None
    for key, value in ops:
        try:
            if value is None:
                engine.delete(key)
            else:
                engine.put(key, value)
        except Exception as exc:
            if not caused_by_crash(exc):
                raise
            return acked, (key, value)
        acked[key] = value
    try:
        finish(engine)
    except Exception as exc:
        if not caused_by_crash(exc):
            raise
    return acked, None


def check_recovered(
    fs: MemFS,
    options: EngineOptions,
    acked: Mapping[bytes, bytes | None],
    in_flight: Op | None,
) -> None:
    """A reopened engine serves every acknowledged op, and nothing else but the op a
    crash cut short (which may or may not have landed)."""
    with Engine.open(DIRECTORY, options, fs=fs) as engine:
        seen = dict(engine.scan())
    for key, value in acked.items():
        allowed = {value}
        if in_flight is not None and in_flight[0] == key:
            allowed.add(in_flight[1])
        assert seen.get(key) in allowed, key
    extra = set(seen) - set(acked)
    assert extra <= ({in_flight[0]} if in_flight is not None else set())
