"""Ctrl-C and SIGTERM stop the CLI's long loops cleanly (``cli/interrupts``).

CI saw ``consume -follow`` still running 30 s after a SIGINT, twice in one run: the
``KeyboardInterrupt`` landed inside the client's locking code. The signal is now taken
between two client calls; these tests send it at many moments of a busy follower and of
a producer, and ask for a clean, prompt exit every time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from sentinel.cli.interrupts import Interrupts
from sentinel.client import Admin, Consumer, Producer, TopicPartition
from sentinel.client.errors import SentinelClientError
from sentinel.testing.process import BrokerProcess

EXIT_DEADLINE_S = 15.0
WATCHDOG_S = 90.0
CLI = [sys.executable, "-m", "sentinel.cli.main"]


# --- the record of signals ------------------------------------------------------------


def test_outside_a_deferred_stretch_a_signal_raises_at_once() -> None:
    interrupts = Interrupts()
    with pytest.raises(KeyboardInterrupt):
        interrupts.handle(signal.SIGINT, None)


def test_a_deferred_signal_wakes_and_raises_at_the_next_check() -> None:
    interrupts = Interrupts()
    woken: list[int] = []
    with pytest.raises(KeyboardInterrupt), interrupts.deferred(wake=lambda: woken.append(1)):
        interrupts.handle(signal.SIGINT, None)  # recorded, not raised
        assert woken == [1]
        assert interrupts.requested
        interrupts.check()
        pytest.fail("check did not raise")


def test_a_deferred_stretch_that_ends_after_a_signal_raises_at_its_end() -> None:
    interrupts = Interrupts()
    ran_to_end = False
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        interrupts.handle(signal.SIGTERM, None)
        ran_to_end = True
    assert ran_to_end


def test_waiting_on_the_user_or_a_second_signal_raises_at_once() -> None:
    interrupts = Interrupts()
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():  # and at its end
        raised_at_once = False
        try:
            with interrupts.raising():
                interrupts.handle(signal.SIGINT, None)
        except KeyboardInterrupt:
            raised_at_once = True
        assert raised_at_once
    interrupts = Interrupts()
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        interrupts.handle(signal.SIGINT, None)
        with pytest.raises(KeyboardInterrupt):  # the user insists
            interrupts.handle(signal.SIGINT, None)
        interrupts.check()


# --- the consumer's wakeup ------------------------------------------------------------


def test_wakeup_ends_a_waiting_poll_and_the_next_one(broker: BrokerProcess) -> None:
    with Admin(broker.address) as admin:
        admin.create_topic("quiet", 1)
    with Consumer(broker.address) as consumer:
        consumer.assign([TopicPartition("quiet", 0)])
        timer = threading.Timer(0.3, consumer.wakeup)
        started = time.monotonic()
        timer.start()
        assert consumer.poll(30) == []
        assert time.monotonic() - started < 10
        consumer.wakeup()  # none waits: the next poll returns at once
        started = time.monotonic()
        assert consumer.poll(30) == []
        assert time.monotonic() - started < 10
        with Producer(broker.address) as producer:  # and polls after it wait as before
            producer.send("quiet", b"v").result(10)
        assert [r.value for r in consumer.poll(30)] == [b"v"]


# --- real processes, many moments ------------------------------------------------------


def _feed(address: str, topic: str, stop: threading.Event) -> None:
    with Producer(address, linger_ms=1) as producer:
        while not stop.is_set():
            producer.send(topic, b"tick")
            time.sleep(0.002)


def _members(address: str, group: str) -> list[object]:
    proc = subprocess.run(
        [*CLI, "groups", "-describe", group, "-json"], capture_output=True, text=True,
        env={**os.environ, "SENTINEL_BROKER": address}, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout)["members"])


@contextlib.contextmanager
def _cli(address: str, *args: str, stdin: int | None = None) -> Iterator[subprocess.Popen[str]]:
    """``sentinel-cli ARGS`` running; killed on the way out if it still runs, and by a
    watchdog after ``WATCHDOG_S`` (a read of its output that would hang fails instead)."""
    proc = subprocess.Popen(
        [*CLI, *args], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "SENTINEL_BROKER": address},
    )  # fmt: skip
    watchdog = threading.Timer(WATCHDOG_S, proc.kill)
    watchdog.start()
    try:
        yield proc
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _stop(proc: subprocess.Popen[str], signum: int) -> str:
    """Send ``signum``; the stderr of the process once it exited (``TimeoutExpired``, a
    failure, if it runs on ``EXIT_DEADLINE_S`` later)."""
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=EXIT_DEADLINE_S)
    return err


def _wait_for_offset(address: str, topic: str, end: int) -> None:
    deadline = time.monotonic() + 30
    with Admin(address) as admin:
        while True:
            with contextlib.suppress(SentinelClientError):
                if admin.describe_topic(topic).partitions[0].log_end_offset >= end:
                    return
            assert time.monotonic() < deadline, f"{topic} did not reach offset {end}"
            time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_busy_follower_stops_cleanly_whenever_the_signal_lands(
    broker: BrokerProcess, signum: int
) -> None:
    """While records stream in, the signal lands 0-0.5 s after the follower's first line:
    each time it exits 0, promptly, and leaves its group."""
    address = broker.address
    with Admin(address) as admin:
        admin.create_topic("busy", 1)
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(address, "busy", stop), daemon=True)
    feeder.start()
    try:
        # -max-messages 0: without it the follower stops by itself after 100 records (the
        # default, as the original's), which the feed has written by the second moment: it
        # then exited before the signal, or was killed by it in the interpreter's
        # shutdown (exit -2, the default handler restored; seen under CPU load).
        for moment in range(6):
            group = f"g{moment}"
            args = ("consume", "-topic", "busy", "-group", group, "-follow", "-max-messages", "0")
            with _cli(address, *args) as follower:
                assert follower.stdout is not None
                assert follower.stdout.readline() == "tick\n"
                time.sleep(moment * 0.1)  # a different moment of the poll loop each time
                err = _stop(follower, signum)
            assert follower.returncode == 0, (moment, err)
            assert "Traceback" not in err
            assert _members(address, group) == []  # it left, not timed out of it
    finally:
        stop.set()
        feeder.join(30)


def test_produce_stops_at_once_on_a_signal_while_waiting_for_stdin(broker: BrokerProcess) -> None:
    """A producer reading a terminal (here, a pipe kept open) stops on Ctrl-C with the
    lines it had already sent stored, exit 130, one line."""
    with _cli(broker.address, "produce", "-topic", "typed", stdin=subprocess.PIPE) as producer:
        assert producer.stdin is not None
        producer.stdin.write("one\ntwo\n")
        producer.stdin.flush()
        _wait_for_offset(broker.address, "typed", 2)  # sent (it lingers briefly)
        err = _stop(producer, signal.SIGINT)
    assert producer.returncode == 130, err
    assert err.strip() == "sentinel-cli: interrupted"  # (click starts a line after ^C)


def test_produce_stops_promptly_on_sigterm_in_a_long_send(broker: BrokerProcess) -> None:
    """``-message -count`` of millions: SIGTERM stops the send loop between two sends,
    the producer flushes what it took, exit 130."""
    with Admin(broker.address) as admin:
        admin.create_topic("long", 1)
    args = ("produce", "-topic", "long", "-message", "m", "-count", "50000000")
    with _cli(broker.address, *args) as producer:
        _wait_for_offset(broker.address, "long", 1)
        err = _stop(producer, signal.SIGTERM)
    assert producer.returncode == 130, err
    assert err.strip() == "sentinel-cli: interrupted"  # (click starts a line after ^C)
