"""Crash test: SIGKILL a consumer again and again; nothing is lost or duplicated.

A two-stage flow (stream -> count_window -> sink stream) processes 20,000
messages while the consumer process is killed with SIGKILL at random points
at least ten times and restarted each time. The sink stream is idempotent
(keyed on the source seq range), so the final output must hold every input
exactly once.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_url

from minibatch_rx import stream

WORKER = Path(__file__).parent / "workers" / "consumer.py"
MESSAGES_PER_BACKEND = {"sqlite": 20_000, "mongodb": 8_000}  # the MongoDB test server is slower
KILLS = 10

# Per backend: window size and CPU work per window, so that a full run takes
# long enough for ten kills to land mid-flight.
PROFILE = {"sqlite": (10, 0.004), "mongodb": (100, 0.05)}


def start_worker(url: str, *extra: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(WORKER), url, "crash.in", "crash.out", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready", process.stderr.read() if process.stderr else ""
    return process


def wait_until(predicate: object, timeout: float, process: subprocess.Popen[str]) -> bool:
    """Poll ``predicate`` until true or ``timeout``; the pause is the worker's own exit wait."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        try:
            process.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            continue
        raise AssertionError(f"worker exited with {process.returncode}: {process.stderr.read()}")  # type: ignore[union-attr]
    return False


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "mongodb"])
def test_sigkilled_consumer_loses_and_duplicates_nothing(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = make_url(backend, tmp_path, request)
    size, work = PROFILE[backend]
    messages = MESSAGES_PER_BACKEND[backend]
    source, sink = stream("crash.in", url), stream("crash.out", url)
    for start in range(0, messages, 1000):
        source.extend({"producer": 0, "i": i} for i in range(start, start + 1000))

    rng = random.Random(20261125)
    kills = 0
    progress = [0]
    while kills < KILLS:
        worker = start_worker(url, "--size", str(size), "--work", str(work))
        # Let it make progress first, so every kill lands mid-flight, then kill
        # it at a random point.
        assert wait_until(lambda: sink.count() > progress[-1], 120, worker), "no progress"
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(timeout=rng.uniform(0.0, 0.3))
        assert worker.returncode is None, f"worker died by itself: {worker.stderr.read()}"  # type: ignore[union-attr]
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
        kills += 1
        progress.append(sink.count())
    assert progress[-1] < messages, "the flow finished before the last kill; slow the worker down"

    worker = start_worker(url, "--size", str(size), "--work", str(work))
    try:
        # Every output stored, and the last position written (within the commit interval).
        finished = wait_until(
            lambda: sink.count() >= messages and source.position("crash-test") == messages, 300, worker
        )
    finally:
        worker.kill()
        worker.wait(10)
    assert finished, f"only {sink.count()} of {messages} outputs after the last restart"

    sources = [m.data["src"] for m in sink.read()]
    duplicates = len(sources) - len(set(sources))
    lost = set(range(1, messages + 1)) - set(sources)
    print(f"\n{backend}: {kills} SIGKILLs, outputs after each kill {progress[1:]}, "
          f"duplicates={duplicates}, lost={len(lost)}")
    assert kills >= KILLS
    assert duplicates == 0
    assert not lost
    assert source.position("crash-test") == messages
