"""The Kafka door with a C client, beside Redis Streams and our gRPC door (issue 9, Speed).

    .venv/bin/python bench/bench_kafka.py            # 2 interleaved rounds, ~2 minutes
    .venv/bin/python bench/bench_kafka.py --quick    # 5x fewer records
    .venv/bin/python bench/bench_kafka.py --rounds 3 --messages-100 2000000

Needs ``kcat`` (librdkafka), ``redis-server``, ``redis-benchmark`` and ``redis-cli`` on the
PATH (Debian: ``apt-get install kcat redis-server``). Per round, a fresh
``sentinel-server`` (default ``--sync always``, temporary data directory) and a fresh
``redis-server --appendonly yes --appendfsync everysec`` (temporary directory), and for
each record size (100 B, 1 KiB) and partition count (1, 4), interleaved:

- Kafka door produce: ``kcat -P -l FILE`` with acks=1, linger.ms=5, batch.size=1000000
  from a pre-generated file of records (one per line); a topic created beforehand;
- Redis produce: ``redis-benchmark -P 64 -c 50 XADD key * f <payload>`` (one stream per
  partition: ``-r`` spreads the keys);
- gRPC door produce (1 KiB only): bench_client's producer, same records and settings;
- consume (100 B only): ``kcat -C -e -o beginning`` against the topic just written;
- the same with ``kafka_raw.c``, a Kafka client in plain C whose per-record cost is near
  zero (one pre-built batch sent again and again, 5 produce requests in flight; fetches
  whose batches are walked by their headers and CRC-checked), so the broker and not the
  client is what is measured; its own ceiling against ``kafka_raw sink`` (a C fake
  broker that answers every produce without storing it);
  Redis: ``redis-cli --pipe`` sending XRANGE ... COUNT 1000 commands that walk streams
  of the same records (loaded beforehand with explicit ids, so the chunks are known).

Every rate is timed from outside (process start to exit, so client start-up is counted
against us). The order of the peers alternates between rounds. Each round prints its
figures and the ratios the issue sets targets for; only same-run ratios mean anything
on this machine (its speed drifts up to 3x between days).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import psutil

from _common import emit
from bench_client import Case, server_doors
from bench_client import produce as grpc_produce
from sentinel.client import Admin

BENCH = "kafka"
SIZES = (100, 1024)
PARTITIONS = (1, 4)
KCAT_PRODUCE = ("-X", "linger.ms=5", "-X", "batch.size=1000000", "-X", "acks=1")
TARGETS = {  # ratio name: (what it compares, target)
    "produce_100B_msgs_vs_redis": ("Kafka door / Redis XADD, msgs/s at 100 B", 5.0),
    "produce_1024B_mbs_vs_redis": ("Kafka door / Redis XADD, MB/s at 1 KiB", 1.5),
    "consume_100B_msgs_vs_redis": ("Kafka door / Redis XRANGE, msgs/s at 100 B", 5.0),
    "produce_1024B_mbs_vs_grpc": ("Kafka door / gRPC door, MB/s at 1 KiB", 2.0),
}
RAW_TARGETS = {  # the same, with kafka_raw.c as the Kafka client: ratio name: (figure, target)
    f"raw_{name}": (f"{what} (kafka_raw.c)", target) for name, (what, target) in TARGETS.items()
}


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise SystemExit(
            f"bench_kafka needs {', '.join(missing)} on the PATH "
            "(Debian: apt-get install -y kcat redis-server)"
        )


def payloads(size: int, count: int) -> Iterator[bytes]:
    """``count`` distinct printable records of ``size`` bytes (no newline in them)."""
    rng = random.Random(size)
    alphabet = string.ascii_letters + string.digits
    pool = "".join(rng.choice(alphabet) for _ in range(size + 4096)).encode()
    for i in range(count):
        start = i % 4096
        yield pool[start : start + size]


def records_file(directory: str, size: int, count: int) -> str:
    path = os.path.join(directory, f"records-{size}.txt")
    with open(path, "wb") as f:
        f.write(b"\n".join(payloads(size, count)) + b"\n")
    return path


def timed_run(cmd: list[str], *, stdin: int | None = None) -> tuple[float, bytes]:
    """Seconds from start to exit of ``cmd``, and its stdout; a failure ends the bench."""
    start = time.perf_counter()
    done = subprocess.run(cmd, stdin=stdin, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0 or b"ERROR" in done.stderr:
        raise SystemExit(f"{cmd[0]} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return elapsed, done.stdout


# ---------------------------------------------------------------------- Redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    """redis-server on a free loopback port, AOF on with everysec, stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-redis-") as data:
        port = free_port()
        proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", data,
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while True:
                ping = subprocess.run(
                    ["redis-cli", "-p", str(port), "PING"], capture_output=True, check=False
                )
                if ping.stdout.strip() == b"PONG":
                    break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("redis-server did not start")
                time.sleep(0.05)
            yield port
        finally:
            proc.terminate()
            proc.wait(20)


def redis_cli(port: int, *args: str) -> bytes:
    done = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, check=True)
    return done.stdout


def resp(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def redis_pipe(port: int, commands: bytes, directory: str, want: int) -> float:
    """Seconds ``redis-cli --pipe`` takes to send ``commands`` and read every reply."""
    path = os.path.join(directory, "pipe.resp")
    with open(path, "wb") as f:
        f.write(commands)
    with open(path, "rb") as f:
        elapsed, out = timed_run(["redis-cli", "-p", str(port), "--pipe"], stdin=f.fileno())
    if f"errors: 0, replies: {want}".encode() not in out:
        raise SystemExit(f"redis-cli --pipe: {out.decode()[-500:]}")
    return elapsed


def redis_produce(port: int, size: int, count: int, partitions: int, tag: str) -> float:
    payload = next(payloads(size, 1)).decode()
    cmd = ["redis-benchmark", "-p", str(port), "-P", "64", "-c", "50", "-n", str(count), "-q"]
    key = f"{tag}-{size}-s"
    if partitions > 1:
        cmd += ["-r", str(partitions)]
        key += "-__rand_int__"
    elapsed, _ = timed_run([*cmd, "XADD", key, "*", "f", payload])
    keys = redis_cli(port, "KEYS", f"{tag}-{size}-s*").decode().split()
    got = sum(int(redis_cli(port, "XLEN", k)) for k in keys)
    if got != count:
        raise SystemExit(f"redis-benchmark wrote {got} of {count} entries")
    return elapsed


def redis_consume(port: int, count: int, partitions: int, directory: str) -> float:
    """Loads ``partitions`` streams of 100-byte records, then walks them 1,000 at a time."""
    redis_cli(port, "FLUSHALL")
    per = count // partitions
    load = bytearray()
    for p in range(partitions):
        key = b"read-%d" % p
        for i, value in enumerate(payloads(100, per)):
            load += resp(b"XADD", key, b"0-%d" % (i + 1), b"f", value)
    redis_pipe(port, bytes(load), directory, per * partitions)
    reads = bytearray()
    chunks = 0
    for p in range(partitions):
        for start in range(1, per + 1, 1000):
            reads += resp(b"XRANGE", b"read-%d" % p, b"0-%d" % start, b"+", b"COUNT", b"1000")
            chunks += 1
    elapsed = redis_pipe(port, bytes(reads), directory, chunks)
    redis_cli(port, "FLUSHALL")
    return elapsed


# ---------------------------------------------------------------------- Kafka door


def create_topic(grpc: str, partitions: int, tag: str) -> str:
    topic = f"{tag}-{time.monotonic_ns()}"
    with Admin(grpc) as admin:
        admin.create_topic(topic, partitions=partitions)
    return topic


def c_producer(directory: str) -> str | None:
    """``kafka_producer.c`` built against librdkafka, or None (no compiler or headers)."""
    binary = os.path.join(directory, "kafka_producer")
    source = str(Path(__file__).with_name("kafka_producer.c"))
    cc = shutil.which("cc")
    if cc is None or not os.path.exists("/usr/include/librdkafka/rdkafka.h"):
        return None
    built = subprocess.run([cc, "-O2", "-o", binary, source, "-lrdkafka"], check=False)
    return binary if built.returncode == 0 else None


def c_raw(directory: str) -> str | None:
    """``kafka_raw.c`` built (no library needed), or None without a C compiler."""
    binary = os.path.join(directory, "kafka_raw")
    cc = shutil.which("cc")
    if cc is None:
        return None
    source = str(Path(__file__).with_name("kafka_raw.c"))
    subprocess.run([cc, "-O2", "-o", binary, source], check=True)
    return binary


def raw_run(cmd: list[str], count: int) -> float:
    """Seconds ``kafka_raw`` takes (timed from outside), checking it moved ``count`` records."""
    elapsed, out = timed_run(cmd)
    report = json.loads(out.decode().strip().splitlines()[-1])
    if report["records"] != count:
        raise SystemExit(f"kafka_raw {cmd[1]} moved {report['records']} records, not {count}")
    return elapsed


def raw_produce(raw: str, kafka: str, topic: str, partitions: int, size: int, count: int) -> float:
    """Seconds kafka_raw takes to produce ``count`` records (1 MB batches, acks=1, 5 in
    flight, one batch per partition per request)."""
    cmd = [raw, "produce", kafka, topic, str(partitions), str(count), str(size), "1000000", "5"]
    return raw_run(cmd, count)


def raw_consume(raw: str, kafka: str, topic: str, partitions: int, count: int) -> float:
    """Seconds kafka_raw takes to fetch ``count`` records from offset 0 (16 MiB fetches)."""
    return raw_run([raw, "consume", kafka, topic, str(partitions), str(count)], count)


@contextlib.contextmanager
def raw_sink(raw: str, directory: str) -> Iterator[str]:
    """``kafka_raw sink``: a fake broker that answers produces without storing them."""
    port_file = os.path.join(directory, f"sink-{time.monotonic_ns()}.port")
    proc = subprocess.Popen([raw, "sink", port_file])
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(port_file):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("kafka_raw sink did not start")
            time.sleep(0.01)
        with open(port_file) as f:
            yield f"127.0.0.1:{f.read().strip()}"
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def kafka_produce(
    kafka: str, topic: str, path: str, size: int, count: int, producer: str | None
) -> float:
    """Seconds the C producer (or kcat from the records file) takes to deliver them all."""
    if producer is None:
        cmd = ["kcat", "-P", "-b", kafka, "-t", topic, *KCAT_PRODUCE, "-l", path]
    else:
        configs = [c for c in KCAT_PRODUCE if c != "-X"]
        cmd = [producer, kafka, topic, str(count), str(size), *configs]
    elapsed, _ = timed_run(cmd)
    return elapsed


def client_ceiling(size: int, count: int, producer: str) -> float:
    """Seconds the C producer takes against librdkafka's in-process mock broker."""
    configs = [c for c in KCAT_PRODUCE if c != "-X"] + ["test.mock.num.brokers=1"]
    elapsed, _ = timed_run([producer, "127.0.0.1:1", "ceiling", str(count), str(size), *configs])
    return elapsed


END = re.compile(rb"Reached end of topic .* \[\d+\] at offset (\d+)")


def kafka_consume(kafka: str, topic: str, count: int) -> float:
    """Seconds ``kcat -C -e`` takes to read the topic to its end (output to /dev/null).

    ``fetch.wait.max.ms=10``: librdkafka reports a partition's end only on the answer to
    a fetch at the high watermark, which a broker holds for that long (500 ms by default,
    a constant that would swamp the figure)."""
    cmd = ["kcat", "-C", "-b", kafka, "-t", topic, "-e", "-o", "beginning",
           "-X", "fetch.wait.max.ms=10"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - start
    read = sum(int(m) for m in END.findall(done.stderr))
    if done.returncode != 0 or read != count:
        err = done.stderr.decode()[-2000:]
        raise SystemExit(f"kcat -C reached offsets summing to {read}, not {count}: {err}")
    return elapsed


def grpc_produce_rate(grpc: str, size: int, count: int, partitions: int) -> float:
    case = Case(count, size, partitions, "1", 5, 1024 * 1024, None, False)
    topic = create_topic(grpc, partitions, "grpc")
    with contextlib.redirect_stdout(io.StringIO()):  # bench_client's own figures
        return grpc_produce(grpc, None, case, topic, 1 << 30)


# ---------------------------------------------------------------------- a round


@dataclass
class Figures:
    rates: dict[str, float]

    def put(self, name: str, value: float, unit: str, **extra: object) -> None:
        self.rates[name] = value
        emit(BENCH, name, value, unit, **extra)


@dataclass(frozen=True)
class Round:
    """One round's servers, record files and counts."""

    index: int
    grpc: str
    kafka: str
    redis: int
    counts: dict[int, int]
    files: dict[int, str]
    directory: str
    producer: str | None
    raw: str | None
    broker: psutil.Process

    def server_cpu(self) -> float:
        """CPU seconds (user + system, all threads) the server has used so far."""
        times = self.broker.cpu_times()
        return float(times.user + times.system)

    def ours(self, figures: Figures, size: int, partitions: int) -> None:
        self.ours_librdkafka(figures, size, partitions)
        if self.raw is not None:
            self.ours_raw(figures, size, partitions, self.raw)

    def ours_raw(self, figures: Figures, size: int, partitions: int, raw: str) -> None:
        n = self.counts[size]
        extra = {"round": self.index, "partitions": partitions, "size": size, "messages": n,
                 "client": "kafka_raw.c"}  # fmt: skip
        topic = create_topic(self.grpc, partitions, f"raw-{size}")
        cpu = self.server_cpu()
        s = raw_produce(raw, self.kafka, topic, partitions, size, n)
        cpu = self.server_cpu() - cpu  # the server's CPU / the wall time: how busy it was
        load = {"server_cpu_s": round(cpu, 3), "server_cpu_per_wall": round(cpu / s, 2)}
        figures.put(f"raw_produce_{size}B", n / s, "msgs/s", **extra, **load)
        figures.put(f"raw_produce_{size}B_throughput", n * size / s / 1e6, "MB/s", **extra, **load)
        with raw_sink(raw, self.directory) as sink:  # what the client alone can do
            s = raw_produce(raw, sink, "sink", partitions, size, n)
        figures.put(f"raw_client_ceiling_produce_{size}B", n / s, "msgs/s", **extra,
                    peer="kafka_raw sink (answers without storing)")  # fmt: skip
        if size == 100:
            cpu = self.server_cpu()
            s = raw_consume(raw, self.kafka, topic, partitions, n)
            cpu = self.server_cpu() - cpu
            figures.put("raw_consume_100B", n / s, "msgs/s", **extra, server_cpu_s=round(cpu, 3),
                        server_cpu_per_wall=round(cpu / s, 2))  # fmt: skip

    def ours_librdkafka(self, figures: Figures, size: int, partitions: int) -> None:
        n = self.counts[size]
        extra = {"round": self.index, "partitions": partitions, "size": size, "messages": n}
        topic = create_topic(self.grpc, partitions, f"kafka-{size}")
        s = kafka_produce(self.kafka, topic, self.files[size], size, n, self.producer)
        client = {"client": "kcat" if self.producer is None else "kafka_producer.c"}
        figures.put(f"produce_{size}B", n / s, "msgs/s", **extra, **client)
        figures.put(f"produce_{size}B_throughput", n * size / s / 1e6, "MB/s", **extra, **client)
        if self.producer is not None and partitions == 1:  # what the client alone can do
            s = client_ceiling(size, n, self.producer)
            figures.put(f"client_ceiling_produce_{size}B", n / s, "msgs/s", **extra,
                        client="kafka_producer.c to librdkafka's mock broker")  # fmt: skip
        if size == 100:
            s = kafka_consume(self.kafka, topic, n)
            figures.put("consume_100B", n / s, "msgs/s", **extra)

    def peers(self, figures: Figures, size: int, partitions: int) -> None:
        n = self.counts[size]
        extra = {"round": self.index, "partitions": partitions, "size": size, "messages": n}
        s = redis_produce(self.redis, size, n, partitions, f"r{self.index}")
        figures.put(f"redis_xadd_{size}B", n / s, "msgs/s", **extra)
        figures.put(f"redis_xadd_{size}B_throughput", n * size / s / 1e6, "MB/s", **extra)
        redis_cli(self.redis, "FLUSHALL")
        if size == 100:
            s = redis_consume(self.redis, n, partitions, self.directory)
            figures.put("redis_xrange_100B", n / s, "msgs/s", **extra)
        if size == 1024:
            rate = grpc_produce_rate(self.grpc, size, n, partitions)
            figures.put("grpc_produce_1024B_throughput", rate * size / 1e6, "MB/s", **extra)


def one_round(
    index: int,
    counts: dict[int, int],
    files: dict[int, str],
    directory: str,
    producer: str | None,
    raw: str | None,
) -> None:
    with server_doors(None) as (grpc, kafka, broker), redis_server() as port:
        run = Round(index, grpc, kafka, port, counts, files, directory, producer, raw, broker)
        # every other round the peers go first
        steps = [run.peers, run.ours] if index % 2 else [run.ours, run.peers]
        for partitions in PARTITIONS:
            figures = Figures({})
            for size in SIZES:
                for step in steps:
                    step(figures, size, partitions)
            ratios(figures.rates, {"round": index, "partitions": partitions})


def ratios(r: dict[str, float], extra: dict[str, object]) -> None:
    values = {
        "produce_100B_msgs_vs_redis": r["produce_100B"] / r["redis_xadd_100B"],
        "produce_1024B_mbs_vs_redis": r["produce_1024B_throughput"]
        / r["redis_xadd_1024B_throughput"],
        "consume_100B_msgs_vs_redis": r["consume_100B"] / r["redis_xrange_100B"],
        "produce_1024B_mbs_vs_grpc": r["produce_1024B_throughput"]
        / r["grpc_produce_1024B_throughput"],
    }
    if "raw_produce_100B" in r:
        values |= {
            "raw_produce_100B_msgs_vs_redis": r["raw_produce_100B"] / r["redis_xadd_100B"],
            "raw_produce_1024B_mbs_vs_redis": r["raw_produce_1024B_throughput"]
            / r["redis_xadd_1024B_throughput"],
            "raw_consume_100B_msgs_vs_redis": r["raw_consume_100B"] / r["redis_xrange_100B"],
            "raw_produce_1024B_mbs_vs_grpc": r["raw_produce_1024B_throughput"]
            / r["grpc_produce_1024B_throughput"],
        }
    for name, value in values.items():
        what, target = (TARGETS | RAW_TARGETS)[name]
        emit(BENCH, f"ratio_{name}", value, "x", what=what, target=target,
             met=value >= target, **extra)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--messages-100", type=int, default=1_000_000)
    parser.add_argument("--messages-1024", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="5x fewer records")
    parser.add_argument("--kcat", action="store_true", help="produce with kcat, not the C producer")
    parser.add_argument("--no-raw", action="store_true", help="leave out kafka_raw.c's figures")
    args = parser.parse_args()
    need("kcat", "redis-server", "redis-benchmark", "redis-cli")
    scale = 5 if args.quick else 1
    counts = {100: args.messages_100 // scale, 1024: args.messages_1024 // scale}
    counts = {size: n - n % 4000 for size, n in counts.items()}  # whole XRANGE chunks
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-kafka-") as directory:
        files = {size: records_file(directory, size, counts[size]) for size in SIZES}
        producer = None if args.kcat else c_producer(directory)
        raw = None if args.no_raw else c_raw(directory)
        for index in range(args.rounds):
            one_round(index, counts, files, directory, producer, raw)


if __name__ == "__main__":
    main()
