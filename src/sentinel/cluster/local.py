"""``sentinel-local-cluster``: three brokers on this machine, for trying a cluster out.

Starts ``sentinel-server`` three times (node ids 1-3) on loopback with data under
``--data`` (``./cluster-data/n1`` ...), prints where each listens, and stops them all on
Ctrl-C (SIGTERM to each, then waits). Ports: gRPC 9092/9192/9292, Kafka 9093/9193/9293,
metrics 9100/9200/9300, brokers among themselves 19091-19093 (``--base-port`` moves all).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", "data_root", default="./cluster-data", show_default=True,
              help="Directory holding each broker's data directory (n1, n2, n3).")
@click.option("--brokers", type=click.IntRange(1, 9), default=3, show_default=True,
              help="How many brokers.")
@click.option("--base-port", type=click.IntRange(1024, 60000), default=9092,
              show_default=True, help="Broker i's gRPC port is base + 100*(i-1).")
@click.option("--sync", "sync_mode", type=click.Choice(["always", "interval", "none"]),
              default="always", show_default=True, help="Each broker's --sync.")
def main(data_root: str, brokers: int, base_port: int, sync_mode: str) -> None:
    """Run a local cluster of brokers until Ctrl-C."""
    ids = range(1, brokers + 1)
    peers = ",".join(f"{i}@127.0.0.1:{base_port + 10_000 - 2 + i}" for i in ids)
    procs: list[subprocess.Popen[bytes]] = []
    for i in ids:
        grpc = base_port + 100 * (i - 1)
        command = [
            sys.executable, "-m", "sentinel.cli.server",
            "--node-id", str(i), "--peers", peers,
            "--port", str(grpc), "--kafka-port", str(grpc + 1),
            "--metrics-port", str(grpc + 8), "--data", os.path.join(data_root, f"n{i}"),
            "--sync", sync_mode,
        ]
        procs.append(subprocess.Popen(command))
        click.echo(f"broker {i}: grpc 127.0.0.1:{grpc}  kafka 127.0.0.1:{grpc + 1}  "
                   f"metrics :{grpc + 8}")
    bootstrap = ",".join(f"127.0.0.1:{base_port + 100 * (i - 1) + 1}" for i in ids)
    click.echo(f"Kafka bootstrap: {bootstrap}   (Ctrl-C stops the cluster)")
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=30)
    failed = [i for i, p in zip(ids, procs, strict=True) if p.returncode not in (0, -2)]
    if failed:
        click.echo(f"broker(s) {failed} exited with an error", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
