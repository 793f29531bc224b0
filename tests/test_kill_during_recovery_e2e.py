"""kill -9 while the broker starts and recovers 512 partitions after a kill -9, again
and again; then a start that must come up and serve everything acknowledged.

One broker (``--sync always``, its journal on in most rounds, a 1 MiB memtable so
that the heavier partitions flush tables whose large values stay in their WAL
segments) gets 8 topics of 64 partitions, a few records on each (acks=all) and a few
hundred KiB to 1.5 MiB on some, in values from 300 B to 150 KiB (values of 4 KiB or
more are stored apart: value separation).
It is killed with SIGKILL, then each round starts it on the directory the last kill
left and kills it again, at a moment the round's seeded draw picks:

- ``delay``: a time from the launch, within the last start's measured time to ready
  (the interpreter starting, the journal check, the partitions' recovery, the ready);
- ``lines``: once the log shows the k-th ``recovered partition`` line of this start
  (in the middle of the partitions' recovery, whatever its speed);
- ``ready``: right after the ready line.

A round whose broker reached ready may first produce (acks=all) to a random subset of
partitions, and may be killed in the middle of a wave of produces (those answered are
acknowledged; the others may be kept or not, but only as sent). The last start must
reach ready within a generous deadline and serve every partition from offset 0: each
acknowledged record at its offset with its value, offsets without gaps, no value twice,
nothing that was never sent; its log (all starts') holds no traceback, no ERROR line
and no WARNING but those a crash explains (``EXPECTED_WARNINGS``); after a clean stop
``sentinel-server --verify`` finds the directory clean.

On a failure the data directory and the log are copied to
``/tmp/kill-during-recovery-seed<SEED>-<pid>`` and the failure names the place.

``KILL_RECOVERY_SEED`` (or ``SOAK_SEED``) repeats a run (the payloads and every draw;
where a kill by time lands depends on the machine's speed), ``KILL_RECOVERY_ROUNDS`` sets
the rounds (5 by default: 10-15 s on 2 cores; 40 rounds take about a minute):
``KILL_RECOVERY_ROUNDS=40 .venv/bin/pytest tests/test_kill_during_recovery_e2e.py``.
"""

from __future__ import annotations

import os
import random
import re
import selectors
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from broker_process import READY, BrokerProcess
from partition_reading import read_partition
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc
from sentinel.record import build_batch

ROUNDS = int(os.environ.get("KILL_RECOVERY_ROUNDS", "5"))
SEED = int(
    os.environ.get("KILL_RECOVERY_SEED")
    or os.environ.get("SOAK_SEED")
    or str(random.SystemRandom().randrange(1 << 31))
)
TOPICS, PER_TOPIC = 8, 64
HEAVY_PARTITIONS = 8
HEAVY_BYTES = (200 << 10, 1536 << 10)  # each heavy partition's first load
HEAVY_SIZES = (300, 3000, 5000, 20_000, 64_000, 150_000)  # >= 4096: value separation
FLAGS: dict[str, object] = {"sync": "always", "memtable_mb": 1}
FINAL_START_DEADLINE_S = 120.0
RECOVERED_LINE = b"recovered partition "
# The WARNING lines a crash and its recovery may leave (matched anywhere in the line):
# a torn tail cut (a WAL's or the journal's), entries the journal gave back to a WAL
# that lost them (acks=all waits for the journal's fsync, a partition's WAL is synced
# after), a journal kept for partitions not opened yet. Any other WARNING, an ERROR, a
# CRITICAL line or a traceback fails the test.
EXPECTED_WARNINGS = (
    re.compile(r"cut a torn tail of \d+ bytes"),
    re.compile(r"recovered \S+: \d+ entries from the journal its WAL had lost$"),
    re.compile(r"partitions have not taken their redo yet"),
)

Partition = tuple[str, int]


@dataclass
class Ledger:
    """What was sent to each partition and what of it was acknowledged, at which offset."""

    acked: dict[Partition, dict[int, bytes]] = field(default_factory=dict)
    sent: dict[Partition, set[bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sending(self, partition: Partition, values: list[bytes]) -> None:
        with self.lock:
            self.sent.setdefault(partition, set()).update(values)

    def acknowledged(self, partition: Partition, base: int, values: list[bytes]) -> None:
        with self.lock:
            acked = self.acked.setdefault(partition, {})
            for i, value in enumerate(values):
                assert base + i not in acked, f"{partition}: offset {base + i} acked twice"
                acked[base + i] = value


def all_partitions() -> list[Partition]:
    return [(f"rec{t}", p) for t in range(TOPICS) for p in range(PER_TOPIC)]


def value(rng: random.Random, partition: Partition, tag: str, size: int) -> bytes:
    """A payload no other record has: its partition and a tag, then seeded bytes."""
    topic, p = partition
    return f"{topic}-{p}/{tag}|".encode() + rng.randbytes(size)


def produce_wave(
    stub: pb_grpc.SentinelStub,
    ledger: Ledger,
    batches: dict[Partition, list[bytes]],
    timeout: float = 30,
) -> int:
    """One acks=all produce per partition, all in flight at once (so one per partition:
    their order is the order sent); the answered ones are acknowledged. Returns how
    many produces failed (the broker died under them)."""
    now = int(time.time() * 1000)
    futures = []
    for partition, values in batches.items():
        ledger.sending(partition, values)
        request = pb.ProduceRequest(
            topic=partition[0],
            partition=partition[1],
            record_batches=build_batch([(None, v, (), now) for v in values]),
            acks=pb.ACKS_ALL,
        )
        futures.append((partition, values, stub.Produce.future(request, timeout=timeout)))
    failed = 0
    for partition, values, future in futures:
        try:
            answer = future.result()
        except grpc.RpcError:
            failed += 1
            continue
        ledger.acknowledged(partition, answer.base_offset, values)
    return failed


def small_batches(
    rng: random.Random, partitions: list[Partition], tag: str
) -> dict[Partition, list[bytes]]:
    """1-4 records of 20-600 B for each partition (now and then one of 5-20 KiB)."""
    batches = {}
    for partition in partitions:
        count = rng.randrange(1, 5)
        sizes = [
            rng.randrange(5000, 20_000) if rng.random() < 0.05 else rng.randrange(20, 600)
            for _ in range(count)
        ]
        batches[partition] = [value(rng, partition, f"{tag}.{i}", s) for i, s in enumerate(sizes)]
    return batches


def heavy_load(
    stub: pb_grpc.SentinelStub, ledger: Ledger, rng: random.Random, heavy: list[Partition]
) -> None:
    """Each heavy partition gets HEAVY_BYTES of values of HEAVY_SIZES, one record per
    produce, the partitions' produces in waves (one in flight per partition)."""
    budget = {partition: rng.randrange(*HEAVY_BYTES) for partition in heavy}
    seq = 0
    while budget:
        seq += 1
        wave = {}
        for partition in list(budget):
            size = rng.choice(HEAVY_SIZES)
            wave[partition] = [value(rng, partition, f"heavy.{seq}", size)]
            budget[partition] -= size
            if budget[partition] <= 0:
                del budget[partition]
        assert produce_wave(stub, ledger, wave) == 0


@dataclass
class Start:
    """What one start did before it was killed (or left running)."""

    ready: bool = False
    seconds: float = 0.0  # from the launch to the ready line, or to the kill
    recovered_lines: int = 0  # ``recovered partition`` lines it logged meanwhile
    exit_code: int | None = None  # set when it exited by itself before ready


def run_start(
    broker: BrokerProcess,
    kill_after_s: float | None = None,
    kill_after_lines: int | None = None,
    deadline_s: float = FINAL_START_DEADLINE_S,
) -> Start:
    """Launch the broker and watch its stdout (the ready line) and its log (the
    recovered-partition lines of this start) every few ms; SIGKILL it once
    ``kill_after_s`` has passed or ``kill_after_lines`` lines were logged, whichever
    comes first, unless it was ready first. A broker that became ready is left running
    (the caller uses it, then kills or stops it); one that is neither ready nor killed
    after ``deadline_s`` fails the test."""
    log_from = broker.log_path.stat().st_size if broker.log_path.exists() else 0
    started = time.monotonic()
    broker.launch()
    assert broker.proc is not None and broker.proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(broker.proc.stdout, selectors.EVENT_READ)
    outcome = Start()
    try:
        while True:
            elapsed = time.monotonic() - started
            if broker.log_path.exists():
                with open(broker.log_path, "rb") as log:
                    log.seek(log_from)
                    outcome.recovered_lines = log.read().count(RECOVERED_LINE)
            killing = (kill_after_s is not None and elapsed >= kill_after_s) or (
                kill_after_lines is not None and outcome.recovered_lines >= kill_after_lines
            )
            if killing:
                broker.kill()
                outcome.seconds = elapsed
                return outcome
            if elapsed > deadline_s:
                broker.kill()
                raise AssertionError(f"the start did not reach ready in {deadline_s} s")
            if selector.select(timeout=0.003):
                line = broker.proc.stdout.readline()
                match = READY.search(line)
                if match:
                    outcome.ready = True
                    outcome.seconds = time.monotonic() - started
                    broker.port, broker.metrics_port = int(match.group(2)), int(match.group(3))
                    broker.kafka_port = int(match.group(5) or 0)
                    return outcome
                if not line:  # stdout closed: it exited
                    outcome.exit_code = broker.proc.wait(timeout=10)
                    broker.kill()
                    return outcome
            elif broker.proc.poll() is not None:
                outcome.exit_code = broker.proc.returncode
                broker.kill()
                return outcome
    finally:
        selector.close()


def check_everything(stub: pb_grpc.SentinelStub, ledger: Ledger, where: str) -> int:
    """Every partition read from offset 0 against the ledger; returns the records read."""
    listed = {t.name for t in stub.ListTopics(pb.ListTopicsRequest(), timeout=30).topics}
    assert {f"rec{t}" for t in range(TOPICS)} <= listed, f"{where}: topics {sorted(listed)}"
    total = 0
    for partition in all_partitions():
        name = f"{where}: {partition[0]}-{partition[1]}"
        stored, end = read_partition(stub, *partition)
        total += len(stored)
        offsets = sorted(stored)
        assert offsets == list(range(len(offsets))), f"{name}: offsets {offsets[:5]}.. not 0..n"
        assert end == len(offsets), f"{name}: high watermark {end}, {len(offsets)} records"
        for offset, acked in sorted(ledger.acked.get(partition, {}).items()):
            got = stored.get(offset)
            assert got == acked, (
                f"{name} offset {offset}: acknowledged {acked[:40]!r}.. ({len(acked)} B), "
                f"served {None if got is None else got[:40]!r}"
                f"{'' if got is None else f'.. ({len(got)} B)'}"
            )
        sent = ledger.sent.get(partition, set())
        for offset, got in stored.items():
            assert got in sent, f"{name} offset {offset}: served {got[:40]!r}.., never sent"
        values = list(stored.values())
        assert len(values) == len(set(values)), f"{name}: a record served twice"
    return total


def check_log(log: str, where: str) -> int:
    """Fails on a traceback, an ERROR/CRITICAL line or a WARNING not expected; returns
    the expected warnings logged."""
    assert "Traceback" not in log, f"{where}: a traceback in the log:\n{log[-6000:]}"
    lines = log.splitlines()
    errors = [line for line in lines if re.search(r" (ERROR|CRITICAL) ", line)]
    assert not errors, f"{where}: ERROR lines in the log:\n" + "\n".join(errors[:20])
    warnings = [line for line in lines if " WARNING " in line]
    odd = [line for line in warnings if not any(p.search(line) for p in EXPECTED_WARNINGS)]
    assert not odd, f"{where}: warnings not expected in the log:\n" + "\n".join(odd[:20])
    return len(warnings)


def keep_aside(data: Path, log: Path) -> str:
    """Copies the data directory and the log out of pytest's tmp (kept past its
    cleanup); says where, or why not."""
    kept = Path(f"/tmp/kill-during-recovery-seed{SEED}-{os.getpid()}")
    try:
        shutil.rmtree(kept, ignore_errors=True)
        kept.mkdir(parents=True)
        if data.exists():
            shutil.copytree(data, kept / data.name)
        if log.exists():
            shutil.copy(log, kept / log.name)
    except OSError as error:
        return f"not kept: {error!r}"
    return f"kept in {kept}"


def kill_during_wave(
    broker: BrokerProcess,
    stub: pb_grpc.SentinelStub,
    ledger: Ledger,
    batches: dict[Partition, list[bytes]],
    delay_s: float,
) -> None:
    """A wave of produces in flight and a SIGKILL after ``delay_s``."""
    thread = threading.Thread(target=produce_wave, args=(stub, ledger, batches, 10), daemon=True)
    thread.start()
    time.sleep(delay_s)
    broker.kill()
    thread.join(30)
    assert not thread.is_alive(), "a produce wave hangs after the kill"


def play(broker: BrokerProcess, rng: random.Random, ledger: Ledger) -> list[str]:
    """The whole attack; returns the rounds' descriptions (printed with a failure)."""
    history: list[str] = []
    partitions = all_partitions()
    first = run_start(broker)
    assert first.ready, f"the first start failed: {first}"
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        for t in range(TOPICS):
            stub.CreateTopic(
                pb.CreateTopicRequest(name=f"rec{t}", partitions=PER_TOPIC), timeout=60
            )
        assert produce_wave(stub, ledger, small_batches(rng, partitions, "r0")) == 0
        heavy_load(stub, ledger, rng, rng.sample(partitions, HEAVY_PARTITIONS))
    broker.kill()
    history.append("setup: killed after the first load")

    start_s = 2 * first.seconds  # until a start after a kill is measured
    lines_seen = len(partitions)
    for round_ in range(1, ROUNDS + 1):
        mode = rng.choices(("delay", "lines", "ready"), weights=(4, 4, 2))[0]
        kill_s = rng.uniform(0.0, start_s * 1.1) if mode == "delay" else None
        kill_lines = rng.randrange(max(1, lines_seen)) if mode == "lines" else None
        produce = rng.random() < 0.6
        in_wave = rng.random() < 0.4
        # A quarter of the rounds start without the journal (each ack then waits for
        # the partition's own WAL fsync), on what a start with it left, and back.
        journal = rng.random() < 0.75
        broker.flags["journal"] = journal
        wave_delay = rng.uniform(0.0, 0.25)
        subset = rng.sample(partitions, rng.randrange(16, len(partitions) // 2))
        tag = f"r{round_}"
        outcome = run_start(broker, kill_after_s=kill_s, kill_after_lines=kill_lines)
        note = (
            f"round {round_}: {'' if journal else 'no-journal '}{mode} "
            f"kill_s={kill_s and round(kill_s, 3)} "
            f"kill_lines={kill_lines}: ready={outcome.ready} after {outcome.seconds:.3f} s, "
            f"{outcome.recovered_lines} recovered-partition lines"
        )
        assert outcome.exit_code is None, (
            f"{note}: the start exited by itself with {outcome.exit_code}:\n"
            f"{broker.read_log()[-4000:]}"
        )
        if outcome.ready:
            start_s, lines_seen = outcome.seconds, max(1, outcome.recovered_lines)
            if produce or in_wave:
                with grpc.insecure_channel(broker.address) as channel:
                    stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
                    if produce:
                        failed = produce_wave(stub, ledger, small_batches(rng, subset, tag))
                        assert failed == 0, f"{note}: {failed} produces failed"
                        note += f", produced to {len(subset)} partitions"
                    if in_wave:
                        wave = small_batches(rng, rng.sample(partitions, 64), tag + "w")
                        kill_during_wave(broker, stub, ledger, wave, wave_delay)
                        note += f", killed {wave_delay:.3f} s into a wave of 64 produces"
            broker.kill()
        history.append(note)
        print(note, flush=True)
    return history


@pytest.mark.timeout(120 + 25 * ROUNDS)
def test_kill_9_during_recovery_repeatedly_then_everything_acknowledged_is_served(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    ledger = Ledger()
    data = tmp_path / "broker"
    broker = BrokerProcess(data, **FLAGS)
    where = f"seed {SEED} ({ROUNDS} rounds)"
    print(where, flush=True)
    try:
        history = play(broker, rng, ledger)
        where += "\n" + "\n".join(history)
        broker.flags["journal"] = True  # the final start: the default flags
        final = run_start(broker, deadline_s=FINAL_START_DEADLINE_S)
        assert final.ready, (
            f"{where}\nthe final start failed ({final}):\n" + (broker.read_log()[-6000:])
        )
        summary = [line for line in broker.read_log().splitlines() if "partitions ready in" in line]
        print(f"final start: ready in {final.seconds:.2f} s; {summary[-1]}", flush=True)
        checking = time.monotonic()
        with grpc.insecure_channel(broker.address) as channel:
            stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
            served = check_everything(stub, ledger, where)
        print(f"read back in {time.monotonic() - checking:.2f} s", flush=True)
        acked = sum(map(len, ledger.acked.values()))
        assert served >= acked > len(all_partitions()), (served, acked)
        assert broker.stop(timeout=60) == 0, f"{where}: the clean stop failed"
        verifying = time.monotonic()
        verify = subprocess.run(
            [sys.executable, "-m", "sentinel.cli.server", "--data", str(data), "--verify"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert verify.returncode == 0, f"{where}: --verify:\n{verify.stdout}{verify.stderr}"
        print(
            f"verified in {time.monotonic() - verifying:.2f} s: "
            f"{verify.stdout.strip().splitlines()[-1]}",
            flush=True,
        )
        warned = check_log(broker.read_log(), where)
        print(
            f"{acked} acknowledged records checked ({served} served), "
            f"{warned} expected warnings logged",
            flush=True,
        )
    except BaseException as error:
        broker.kill()
        error.add_note(f"{where}\ndata directory and log {keep_aside(data, broker.log_path)}")
        raise
