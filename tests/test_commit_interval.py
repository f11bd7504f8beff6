"""Coalesced position commits: at most one write per interval, the latest
window wins, and nothing acknowledged is left unwritten on stop or when idle."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from minibatch_rx import InvalidArgumentError, Window, stream


def test_positions_are_coalesced_and_written_on_stop(store_url: str) -> None:
    src = stream("ci.in", store_url)
    src.extend({"v": v} for v in range(6))
    seen: list[int] = []

    def sink(window: Window) -> None:
        seen.append(src.position("job"))

    handle = src.count_window(2).sink(sink).with_commit_interval(60).run(consumer="job", max_windows=3)
    # The first window is written at once; the next two wait for the interval...
    assert seen == [0, 2, 2]
    # ...and the last one acknowledged is written when the pipeline stops.
    assert handle.position == 6
    assert src.position("job") == 6


def test_a_pending_position_is_written_when_the_stream_goes_quiet(tmp_path: Path) -> None:
    src = stream("ci.idle", f"sqlite://{tmp_path / 'idle.db'}")
    windows = threading.Semaphore(0)
    handle = src.count_window(2).sink(lambda w: windows.release()).with_commit_interval(0.05).start(
        consumer="job")
    try:
        src.extend({"v": v} for v in range(4))
        assert windows.acquire(timeout=10) and windows.acquire(timeout=10)
        deadline = time.monotonic() + 10
        quiet = threading.Event()
        while src.position("job") != 4:  # no stop: the interval timer must write it
            assert time.monotonic() < deadline, f"position stuck at {src.position('job')}"
            quiet.wait(0.01)
    finally:
        handle.stop()


@pytest.mark.parametrize("bad", [-1, "soon", True])
def test_commit_interval_must_be_a_duration(bad: object) -> None:
    with pytest.raises(InvalidArgumentError):
        stream("ci.bad", "memory://ci").count_window(2).with_commit_interval(bad)  # type: ignore[arg-type]
