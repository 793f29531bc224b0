"""One real ``sentinel-server`` process on loopback ports, started and stopped for tests.

It runs as ``sys.executable -m sentinel.cli.server`` (the importing interpreter, so the
same installation and ``PYTHONPATH``) and reads its ports from its ready line on stdout.
The gRPC and Kafka ports, kept across restarts, are picked outside the kernel's
ephemeral range (:mod:`sentinel.testing.ports`): a port the kernel picked could be
taken, while the broker is down, as an outgoing connection's source port. The metrics
port is the kernel's choice at every start (port 0), as nothing reuses it.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from sentinel.testing.ports import pick_port

READY = re.compile(
    r"sentinel-server ready grpc=([\d.]+):(\d+) metrics=(\d+)(?: kafka=([\d.]+):(\d+))?"
)
START_TIMEOUT_S = 30.0
_WITH_OPEN_FILES = (
    "import resource, runpy, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, ({0}, {0})); "
    "sys.argv[0] = 'sentinel-server'; "
    "runpy.run_module('sentinel.cli.server', run_name='__main__', alter_sys=True)"
)


def _given_or_picked(port: object) -> int:
    """A port flag's value, or (not given) a port picked outside the ephemeral range."""
    return pick_port() if port is None else int(str(port))


class BrokerProcess:
    """One broker process. ``address`` is ``127.0.0.1:PORT``. ``open_files``: start it
    with that RLIMIT_NOFILE, soft and hard (so that it cannot raise it). The flags
    ``port``, ``kafka_port`` and ``metrics_port`` fix those ports. Not given, ``port``
    and ``kafka_port`` are picked now outside the ephemeral range, and ``metrics_port``
    is any free one at each start, read from the ready line. Given as 0, ``port`` and
    ``kafka_port`` are the kernel's choice at the first start, read from its ready line
    and kept for restarts (which may then find one taken)."""

    def __init__(self, data_dir: Path, open_files: int | None = None, **flags: object) -> None:
        self.data_dir = data_dir
        self.open_files = open_files
        self.flags = {
            "group-min-session-timeout-ms": 500,
            "retention-check-interval-s": 1,
            **{k.replace("_", "-"): v for k, v in flags.items()},
        }
        self.proc: subprocess.Popen[str] | None = None
        self.port = _given_or_picked(self.flags.pop("port", None))
        self.kafka_port = _given_or_picked(self.flags.pop("kafka-port", None))
        self._metrics_port_flag = int(str(self.flags.pop("metrics-port", 0)))
        self.metrics_port = 0
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self._log: IO[str] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def grpc_address(self) -> str:
        """``127.0.0.1:PORT`` of the gRPC API (sentinel's client and CLI)."""
        return self.address

    @property
    def bootstrap_servers(self) -> str:
        """The Kafka clients' ``bootstrap.servers``: the Kafka listener's address."""
        return self.kafka_address

    @property
    def kafka_address(self) -> str:
        """``127.0.0.1:PORT`` of the Kafka protocol listener (bootstrap.servers)."""
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        """The command line (a port given as 0 stays 0 until the first start)."""
        if self.open_files is None:
            cmd = [sys.executable, "-m", "sentinel.cli.server"]
        else:  # lower RLIMIT_NOFILE (soft and hard) first, then run the server module
            cmd = [sys.executable, "-c", _WITH_OPEN_FILES.format(self.open_files)]
        cmd += [
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data",
            str(self.data_dir),
            "--metrics-port",
            str(self._metrics_port_flag),
            "--kafka-port",
            str(self.kafka_port),
        ]
        for key, value in self.flags.items():
            if value is True:
                cmd.append(f"--{key}")
            elif value is False:
                cmd.append(f"--no-{key}")
            else:
                cmd.extend([f"--{key}", str(value)])
        return cmd

    def start(self) -> BrokerProcess:
        """Launch the process and wait for its ready line."""
        return self.launch().wait_ready()

    def launch(self) -> BrokerProcess:
        """Start the process without waiting (several brokers that need each other to
        come up are launched first, then each awaited with :meth:`wait_ready`)."""
        self._log = open(self.log_path, "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return self

    def wait_ready(self) -> BrokerProcess:
        """Wait for the launched process's ready line and take its ports from it; kill
        it and raise (with its log) when it exits or stays silent too long."""
        assert self.proc is not None and self.proc.stdout is not None, "not launched"
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not selector.select(timeout=0.2):
                if self.proc.poll() is not None:
                    break
                continue
            line = self.proc.stdout.readline()
            if not line:
                break
            match = READY.search(line)
            if match:
                self.port = int(match.group(2))
                self.metrics_port = int(match.group(3))
                self.kafka_port = int(match.group(5) or 0)
                selector.close()
                return self
        selector.close()
        self.kill()
        raise RuntimeError(f"broker did not start; log:\n{self.read_log()}")

    def read_log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self._cleanup()
        return code

    def kill(self) -> None:
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._cleanup()

    def restart(self) -> BrokerProcess:
        """Stop gracefully and start again on the same port."""
        self.stop()
        return self.start()

    def _cleanup(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
