"""A running pipeline uses a fixed number of threads, however much input it sees.

reactivex's default scheduler starts an OS thread per timer; a time window
re-armed its timer on every message, so a busy time-windowed pipeline used to
start a thread per message (issue 10, point 8).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from minibatch_rx import Window, stream

WAIT = 30.0


@pytest.mark.parametrize("strategy", ["fixed", "sliding", "session", "count-timeout"])
def test_threads_do_not_grow_with_input(
    strategy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = [0]
    real_start = threading.Thread.start

    def counting_start(thread: threading.Thread) -> None:
        started[0] += 1
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    url = f"sqlite://{tmp_path / 'threads.db'}"
    src = stream("in", url)
    baseline = threading.active_count()
    peak = [baseline]
    seen = [0]
    done = threading.Event()
    total = 4_000

    def count(window: Window) -> dict[str, Any]:
        peak[0] = max(peak[0], threading.active_count())
        seen[0] += len(window)
        if seen[0] >= total:
            done.set()
        return {"n": len(window)}

    windows = {
        "fixed": lambda: src.fixed_time_window("20ms"),
        "sliding": lambda: src.sliding_window("40ms", "20ms", by="time"),
        "session": lambda: src.session_window("5ms"),
        "count-timeout": lambda: src.count_window(50, timeout="10ms"),
    }
    handle = windows[strategy]().map(count).sink(lambda _: None).start(consumer="threads")
    try:
        pause = threading.Event()
        for burst in range(40):  # bursts, so windows close by the clock as well as by data
            src.extend({"i": burst * 100 + i} for i in range(100))
            pause.wait(0.01)
        if strategy == "sliding":
            total *= 2  # each message is in two windows
        deadline = time.monotonic() + WAIT
        while not done.is_set() and time.monotonic() < deadline:
            done.wait(0.05)
            peak[0] = max(peak[0], threading.active_count())
        assert done.is_set(), f"only {seen[0]} of {total} messages windowed"
    finally:
        handle.stop(timeout=5)
    # A reader thread, a timer thread, the stop thread: a handful, not one per message or window.
    assert started[0] <= 4, f"{started[0]} threads started for {total} messages"
    assert peak[0] - baseline <= 4, f"{peak[0] - baseline} threads at once for {total} messages"


def test_a_backlog_replayed_through_relaxed_windows_is_cut_by_the_clock_not_held_whole(
    tmp_path: Path,
) -> None:
    # Time windows wait until the reader has caught up before the clock closes
    # anything (else the backlog would be misfiled as late); relaxed windows have
    # no late messages, and holding the whole backlog in one window would defeat
    # the prefetch bound.
    src = stream("in", f"sqlite://{tmp_path / 'backlog.db'}")
    total = 20_000
    for start in range(0, total, 5_000):
        src.extend({"i": i} for i in range(start, start + 5_000))
    sizes: list[int] = []
    done = threading.Event()

    def slow(window: Window) -> int:
        deadline = time.process_time() + 0.005  # CPU work, not a sleep
        while time.process_time() < deadline:
            pass
        sizes.append(len(window))
        if sum(sizes) >= total:
            done.set()
        return len(window)

    handle = (src.relaxed_time_window("20ms").with_prefetch(50).map(slow).sink(lambda _: None)
              .start(consumer="backlog"))
    try:
        assert done.wait(WAIT), f"{sum(sizes)} of {total} delivered"
    finally:
        handle.stop(timeout=5)
    assert sum(sizes) == total
    assert len(sizes) >= 3 and max(sizes) < total / 2, sizes
