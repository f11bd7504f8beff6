"""The kill -9 harness shared by the crash tests of keyed windows and patterns.

A producer appends live; a worker process (a consumer into a sink stream) is
SIGKILLed again and again, each time after its sink made progress; a last
worker and a never-killed reference worker then run to the end. Each test
brings its producer, its worker script and its checks.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from minibatch_rx import stream


class LiveProducer(Protocol):
    """Appends in a thread from ``start()``; ``stop()`` appends the sentinel and returns its seq."""

    def start(self) -> None: ...

    def stop(self) -> int: ...


def wait_until(predicate: Callable[[], bool], timeout: float,
               processes: Iterable[subprocess.Popen[str]], poll: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout``; the pause is a worker's
    own exit wait, and a worker that exits fails the test."""
    workers = list(processes)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        for process in workers:
            if process.poll() is not None:
                raise AssertionError(f"worker exited with {process.returncode}: "
                                     f"{process.stderr.read() if process.stderr else ''}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            workers[0].wait(timeout=poll)
    return False


def kill(process: subprocess.Popen[str]) -> None:
    """SIGKILL a worker that must still be running, and reap it."""
    assert process.poll() is None, f"worker died by itself: {process.stderr.read()}"  # type: ignore[union-attr]
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)


class Workers:
    """The worker processes of one test: started, killed, and all reaped at the end.
    A worker is ``script URL SOURCE SINK --consumer C --work W`` and prints ``ready``."""

    def __init__(self, script: Path, url: str, source: str) -> None:
        self.script, self.url, self.source = script, url, source
        self.started: list[subprocess.Popen[str]] = []

    def start(self, sink: str, consumer: str, work: float) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, str(self.script), self.url, self.source, sink, "--consumer", consumer,
             "--work", str(work)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.started.append(process)
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready", process.stderr.read() if process.stderr else ""
        return process

    def reap(self) -> None:
        """SIGKILL every worker still running, and wait for all."""
        for process in self.started:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.wait(10)


@dataclass
class Run:
    """What the killing left behind, besides the store."""

    kills: int = 0
    progress: list[int] = field(default_factory=lambda: [0])  # sink size after each kill
    behind: list[int] = field(default_factory=list)  # events unacknowledged at each kill
    produced_at_last_kill: int = 0
    sentinel: int = 0  # the sentinel's seq
    finished: bool = False  # both consumers acknowledged up to ``sentinel - settled_before``


@dataclass(frozen=True)
class Setup:
    """The streams, consumers and pacing of one crash test."""

    script: Path  # the worker
    source: str
    sink: str  # the killed worker's sink
    reference: str  # the reference worker's sink
    consumer: str
    reference_consumer: str
    kills: int
    work: float  # CPU seconds per output in the killed worker, so kills land mid-step
    later: tuple[float, float]  # the delay range of the kills that come later than "at once"
    settled_before: int  # the end: both positions at the sentinel's seq minus this


def run_with_kills(setup: Setup, url: str, rng: random.Random, producer: LiveProducer) -> Run:
    """Produce live; kill the worker ``setup.kills`` times, each after the sink
    made progress; let a last worker and the reference worker finish."""
    source, sink = stream(setup.source, url), stream(setup.sink, url)
    workers, run = Workers(setup.script, url, setup.source), Run()
    try:
        reference = workers.start(setup.reference, setup.reference_consumer, 0.0)
        try:
            producer.start()
            while run.kills < setup.kills:
                worker = workers.start(setup.sink, setup.consumer, setup.work)
                assert wait_until(lambda: sink.count() > run.progress[-1], 60, [worker, reference]), \
                    "no progress"
                # Half the kills soon after an output (often inside its step, before
                # its ack), half later.
                delay = rng.uniform(0.0, 0.05) if rng.random() < 0.5 else rng.uniform(*setup.later)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.wait(timeout=delay)
                kill(worker)
                run.kills += 1
                run.progress.append(sink.count())
                run.behind.append(source.count() - source.position(setup.consumer))
            run.produced_at_last_kill = source.count()
            # The last worker also starts on a live stream.
            worker = workers.start(setup.sink, setup.consumer, setup.work)
            assert wait_until(lambda: sink.count() > run.progress[-1]
                              and source.count() > run.produced_at_last_kill,
                              60, [worker, reference]), "no progress"
        finally:
            run.sentinel = producer.stop()
        run.finished = wait_until(
            lambda: min(source.position(setup.consumer), source.position(setup.reference_consumer))
            >= run.sentinel - setup.settled_before,
            60, [worker, reference])
    finally:
        workers.reap()
    return run
