"""RecordBatch v2 benchmarks. One JSON object per figure.

    .venv/bin/python bench/bench_record.py [--quick]

- build: records/s appending 100-byte values into batches of 500 (the producer's
  per-record cost; target 300k msgs/s for the whole client), per codec;
- validate: MB/s of ``validate_batch`` on 1 MiB batches (the broker's produce path),
  and of ``iter_batches`` + ``validate_batch`` + ``stamp_batch`` on a 16 MiB buffer;
- decode: records/s of ``decode_records`` (the consumer's per-record cost), per codec;
- murmur2: keys/s for 16-byte keys.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import emit
from sentinel.broker.partitioner import murmur2
from sentinel.record import (
    BatchBuilder,
    Compression,
    decode_records,
    iter_batches,
    stamp_batch,
    validate_batch,
)

BENCH = "record"
T0 = 1_700_000_000_000
MiB = 1024 * 1024


def measure(metric: str, amount: float, unit: str, fn: Callable[[], object], **extra: Any) -> None:
    """Emit ``amount`` per second of the fastest of three runs of ``fn``.

    ``cpu_share`` is that run's CPU seconds over its wall seconds: near 1 on a quiet
    machine, well below 1 when neighbours took the cores (the figure is then low).
    """
    best, best_cpu = float("inf"), 0.0
    for _ in range(3):
        cpu = time.process_time()
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        if elapsed < best:
            best, best_cpu = elapsed, time.process_time() - cpu
    emit(BENCH, metric, amount / best, unit, cpu_share=round(best_cpu / best, 2), **extra)


def make_values(count: int, size: int) -> list[bytes]:
    rng = random.Random(1)
    # Half random, half repetitive: compressible like real payloads.
    return [rng.randbytes(size // 2) + b"x" * (size - size // 2) for _ in range(count)]


def build_batches(values: list[bytes], per_batch: int, codec: Compression, keyed: bool) -> int:
    built = 0
    for start in range(0, len(values), per_batch):
        builder = BatchBuilder(compression=codec)
        append = builder.append
        for i, value in enumerate(values[start : start + per_batch]):
            append(value[:16] if keyed else None, value, (), T0 + i // 50)
        built += len(builder.build())
    return built


def bench_build(quick: bool) -> None:
    values = make_values(20_000 if quick else 100_000, 100)
    for codec in Compression:
        for keyed in (False, True) if codec == Compression.NONE else (False,):
            measure(
                f"build_100B_x500_{codec.name.lower()}{'_keyed' if keyed else ''}",
                len(values),
                "records/s",
                lambda c=codec, k=keyed: build_batches(values, 500, c, k),
                target=300_000,
            )


def one_mib_batch(codec: Compression) -> bytes:
    builder = BatchBuilder(compression=codec)
    for i, value in enumerate(make_values(MiB // 110, 100)):
        builder.append(None, value, (), T0 + i)
    return builder.build()


def bench_validate(quick: bool) -> None:
    batch = one_mib_batch(Compression.NONE)
    rounds = 50 if quick else 300

    def validate() -> None:
        for _ in range(rounds):
            validate_batch(batch, max_batch_bytes=2 * MiB)

    measure("validate_1MiB", rounds * len(batch) / 1e6, "MB/s", validate)

    buffer = bytearray(b"".join(_small_batches(16 * MiB // 16384)))

    def produce_path() -> None:
        offset = 0
        for view in iter_batches(buffer):
            header = validate_batch(view, max_batch_bytes=MiB)
            stamp_batch(view, offset, 1)
            offset += header.record_count

    measure(
        "split_validate_stamp_16KiB_batches",
        len(buffer) / 1e6,
        "MB/s",
        produce_path,
        batches=len(buffer) // 16384,
    )


def _small_batches(count: int) -> list[bytes]:
    values = make_values(140, 100)
    out = []
    for _ in range(count):
        builder = BatchBuilder()
        for i, value in enumerate(values):
            builder.append(None, value, (), T0 + i)
        out.append(builder.build())
    return out


def bench_decode(quick: bool) -> None:
    for codec in Compression:
        batch = one_mib_batch(codec)
        count = len(decode_records(batch))
        rounds = 2 if quick else 5
        measure(
            f"decode_100B_{codec.name.lower()}",
            rounds * count,
            "records/s",
            lambda b=batch, r=rounds: [decode_records(b) for _ in range(r)],
            batch_bytes=len(batch),
        )


def bench_murmur2(quick: bool) -> None:
    rng = random.Random(2)
    keys = [rng.randbytes(16) for _ in range(20_000 if quick else 200_000)]
    measure("murmur2_16B", len(keys), "keys/s", lambda: [murmur2(k) for k in keys])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs, for CI")
    quick = parser.parse_args().quick
    bench_build(quick)
    bench_validate(quick)
    bench_decode(quick)
    bench_murmur2(quick)


if __name__ == "__main__":
    main()
