"""The most files a broker process held open at once while inside a ``with``."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from broker_process import BrokerProcess


class PeakFds:
    """The most files the broker held open at once while inside the ``with``
    (sampled every few milliseconds in a thread, bounded by the ``with``)."""

    def __init__(self, broker: BrokerProcess) -> None:
        assert broker.proc is not None
        self._fd_dir = Path(f"/proc/{broker.proc.pid}/fd")
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.most = 0

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            with contextlib.suppress(OSError):
                self.most = max(self.most, sum(1 for _ in self._fd_dir.iterdir()))

    def __enter__(self) -> PeakFds:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(10)
