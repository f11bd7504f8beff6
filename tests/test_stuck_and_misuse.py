"""Stuck user code, oversize dead letters, programming errors and silent misuse.

Issue 9, points 2, 3 and 9: a function that never returns cannot hang
``stop()`` or ``run()``; a per-call time limit turns an overrun into a normal
failure; a dead letter always fits; errors a retry cannot fix are not
retried; misuse that used to pass silently is refused or reported.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from conftest import make_url
from pipeline_helpers import seeded, values

from minibatch_rx import InvalidArgumentError, Stream, Window, list_streams, stream
from minibatch_rx.usage import PipelineNeverRunWarning

WAIT = 10.0  # seconds: upper bound for waits on a condition


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return make_url(str(request.param), tmp_path, request)


class Blocking:
    """A map that blocks on the window holding ``stuck_on`` until released."""

    def __init__(self, stuck_on: int) -> None:
        self.stuck_on = stuck_on
        self.entered = threading.Event()
        self.release = threading.Event()
        self.done: list[int] = []

    def __call__(self, window: Window) -> dict[str, Any]:
        seqs = [m.seq for m in window.messages]
        if self.stuck_on in seqs and not self.release.is_set():
            self.entered.set()
            self.release.wait(60)  # the test releases it once it has checked what it needs
        self.done.append(seqs[0])
        return {"seqs": seqs}


# -- point 2: a function that never returns -------------------------------------------------
# On SQLite (a reader thread per pipeline). The memory store delivers in the appending (or
# subscribing) thread, so there start() itself runs the catch-up.


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'stuck.db'}"


def test_stop_with_timeout_returns_names_the_stuck_stage_and_leaves_its_window_unacknowledged(
    sqlite_url: str,
) -> None:
    url = sqlite_url
    src = seeded(url, 6)
    fn = Blocking(stuck_on=3)
    handle = src.count_window(2).map(fn).sink("out").start(consumer="stuck")
    try:
        assert fn.entered.wait(WAIT)
        started = time.monotonic()
        assert handle.stop(timeout=0.3) is False
        assert time.monotonic() - started < 2.0
        assert handle.stuck is not None
        assert handle.stuck.startswith("map on window in#3..4 for ")
        assert not handle.running and handle.join(0)
        assert src.position("stuck") == 2  # window [3, 4] is not acknowledged
    finally:
        fn.release.set()
    # Even once the abandoned call returns, its window is not acknowledged...
    assert wait_for(lambda: 3 in fn.done)
    assert src.position("stuck") == 2
    # ...so the next run delivers it again, then goes on.
    again = Blocking(stuck_on=0)
    src.count_window(2).map(again).sink("out").run(consumer="stuck", max_windows=2, duration=WAIT)
    assert again.done == [3, 5]
    assert src.position("stuck") == 6


def test_run_with_duration_returns_in_bounded_time_when_a_timer_emitted_window_is_stuck(
    sqlite_url: str,
) -> None:
    url = sqlite_url
    src = seeded(url, 1)
    fn = Blocking(stuck_on=1)  # a partial count window: emitted by its timeout, in a timer thread
    try:
        started = time.monotonic()
        handle = src.count_window(5, timeout=0.05).map(fn).run(duration=0.3, stop_timeout=0.3)
        elapsed = time.monotonic() - started
        assert fn.entered.is_set()
        assert elapsed < 3.0
        assert handle.stuck is not None and "in#1..1" in handle.stuck
        assert src.position(handle.consumer) == 0
    finally:
        fn.release.set()


def test_with_timeout_fails_an_overrunning_call_then_dead_letters_it_and_goes_on(sqlite_url: str) -> None:
    url = sqlite_url
    src = seeded(url, 4)
    fn = Blocking(stuck_on=1)
    try:
        handle = (src.count_window(2).map(fn).with_timeout("200ms").with_retries(1, backoff=0)
                  .sink("out").run(max_windows=2, duration=WAIT))
    finally:
        fn.release.set()
    assert values(Stream("out", url=url)) == [{"seqs": [3, 4]}]
    dead = values(Stream("in.dead", url=url))
    assert [(d["attempts"], d["first_seq"], d["last_seq"]) for d in dead] == [(2, 1, 2)]
    assert dead[0]["error"].startswith("StageTimeoutError: map did not return within 0.2 s")
    assert handle.dead_letters == 1
    assert handle.dead_letter_stream == "in.dead"
    assert src.position(handle.consumer) == 4


def test_with_timeout_rejects_bad_limits() -> None:
    src = stream("in", "memory://timeouts")
    for bad in (0, -1, "soon"):
        with pytest.raises(InvalidArgumentError):
            src.count_window(1).with_timeout(bad)


def wait_for(predicate: Any, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    ready = threading.Event()
    while time.monotonic() < deadline:
        if predicate():
            return True
        ready.wait(0.01)  # bounded polling of a condition, not a sleep for a result
    return bool(predicate())


# -- point 3: a dead letter always fits ------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "sqlite", "mongodb"])
def test_a_failed_window_too_big_for_one_document_is_dead_lettered_and_the_stream_flows_on(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = make_url(backend, tmp_path, request)
    src = stream("big", url)
    blob = "x" * (6 * 1024 * 1024)
    src.extend([{"blob": blob, "n": i} for i in range(3)])
    src.append({"blob": "small", "n": 3})

    def fail_big(window: Window) -> dict[str, Any]:
        if len(window.data[0]["blob"]) > 100:
            raise ValueError("cannot handle big blobs")
        return {"n": [d["n"] for d in window.data]}

    handle = (src.count_window(3).map(fail_big).with_retries(0).sink("big.out")
              .run(max_windows=1, duration=60))
    src.append({"blob": "small", "n": 4})
    src.append({"blob": "small", "n": 5})
    src.count_window(3).map(fail_big).sink("big.out").run(handle.consumer, max_windows=1, duration=60)
    dead = values(Stream("big.dead", url=url))
    assert len(dead) == 1
    record = dead[0]
    assert (record["first_seq"], record["last_seq"], record["error"]) == (
        1, 3, "ValueError: cannot handle big blobs")
    assert len(record["data"]) == 1 and record["data"][0]["n"] == 0  # as much as fits
    assert record["omitted_seqs"] == [2, 3]
    assert values(Stream("big.out", url=url)) == [{"n": [3, 4, 5]}]


# -- point 9: errors a retry cannot fix, silent misuse ----------------------------------------


def test_programming_errors_are_dead_lettered_at_once_not_retried(url: str) -> None:
    src = seeded(url, 4)
    calls: list[int] = []

    def typo(window: Window) -> int:
        calls.append(window.messages[0].seq)
        return window.data[0]["v"].upper()  # type: ignore[no-any-return]  # AttributeError on ints

    handle = (src.count_window(2).map(typo).with_retries(3, backoff=0).sink(print)
              .run(max_windows=2, duration=WAIT))
    assert calls == [1, 3]  # once per window
    dead = values(Stream("in.dead", url=url))
    assert [d["attempts"] for d in dead] == [1, 1]
    assert all(d["error"].startswith("AttributeError") for d in dead)
    assert handle.dead_letters == 2


def test_a_map_returning_none_into_a_stream_sink_is_dead_lettered_at_once(url: str) -> None:
    src = seeded(url, 2)
    handle = (src.count_window(2).map(lambda w: None).with_retries(3, backoff=0).sink("out")
              .run(max_windows=1, duration=WAIT))
    dead = values(Stream("in.dead", url=url))
    assert [(d["stage"], d["attempts"]) for d in dead] == [("sink", 1)]
    assert "cannot sink a NoneType into stream 'out'" in dead[0]["error"]
    assert handle.dead_letters == 1


def test_no_retry_can_be_changed() -> None:
    src = seeded("memory://no-retry", 2)
    calls: list[int] = []

    def typo(window: Window) -> int:
        calls.append(1)
        raise TypeError("still wrong")

    (src.count_window(2).map(typo).with_retries(2, backoff=0, no_retry=()).sink(print)
     .run(max_windows=1, duration=WAIT))
    assert len(calls) == 3
    with pytest.raises(InvalidArgumentError):
        src.count_window(2).with_retries(2, no_retry=TypeError)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [2, 2.5, "", b"name"])
def test_run_refuses_a_consumer_that_is_not_a_name(bad: object) -> None:
    src = seeded("memory://consumer-name", 2)
    with pytest.raises(InvalidArgumentError, match="consumer must be a non-empty str"):
        src.count_window(2).map(len).run(bad, duration=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="consumer must be a non-empty str"):
        src.count_window(2).map(len).start(bad)  # type: ignore[arg-type]


def test_default_consumer_names_follow_the_pipeline_and_collide_loudly() -> None:
    src = seeded("memory://defaults", 4)

    def total(window: Window) -> int:
        return sum(d["v"] for d in window.data)

    first = src.count_window(2).map(total).sink("sums")
    other = src.count_window(2).map(len).sink("sizes")
    assert first.default_consumer == "count_window(2)|map:test_default_consumer_names_follow_the_pipeline" \
        "_and_collide_loudly.<locals>.total|sink:sums"
    assert other.default_consumer == "count_window(2)|map:len|sink:sizes"
    handle = first.start()
    try:
        with pytest.raises(InvalidArgumentError, match="already running"):
            src.count_window(2).map(total).sink("sums").start()
        second = other.start()  # a different pipeline: its own position
        second.stop()
    finally:
        handle.stop()
    assert src.position(first.default_consumer) == 4
    assert src.position(other.default_consumer) in (0, 2, 4)
    first.run(max_windows=None, duration=0.05)  # once stopped, the name is free again


def test_a_pipeline_never_run_warns_when_collected() -> None:
    src = stream("in", "memory://never-run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        src.count_window(2).map(len).sink("out")  # built, never run
        gc.collect()
        ran = src.count_window(2).map(len).sink("out")
        ran.to_observable().subscribe().dispose()
        del ran
        gc.collect()
    never = [w for w in caught if issubclass(w.category, PipelineNeverRunWarning)]
    assert len(never) == 1
    assert "count_window(2) | map:len | sink:out" in str(never[0].message)


def test_late_stream_is_created_only_when_something_is_late(url: str) -> None:
    src = seeded(url, 4)
    src.count_window(2).map(len).sink("out").run(max_windows=2, duration=WAIT)
    src.fixed_time_window("1h").map(len).sink(print).run(duration=0.05)
    assert "in.late" not in list_streams(url)


def test_library_logs_under_its_package_names_and_installs_no_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    src = seeded("memory://logs", 2)
    with caplog.at_level(logging.DEBUG, logger="minibatch_rx"):
        src.count_window(2).map(lambda w: 1 // 0).with_retries(0).sink(print).run(max_windows=1)
    names = {r.name for r in caplog.records}
    assert names and all(n.startswith("minibatch_rx.") for n in names)
    for name in ("minibatch_rx", *names):
        assert logging.getLogger(name).handlers == []


@pytest.mark.parametrize("window", ["count", "time"])
def test_a_sink_may_stop_its_own_pipeline(window: str, sqlite_url: str) -> None:
    src = stream("in", sqlite_url)
    src.extend({"i": i} for i in range(5))
    box: dict[str, Any] = {}

    def sink(w: Window) -> None:
        if w.data[0]["i"] >= 2:
            started = time.monotonic()
            box["stopped"] = (box["handle"].stop(), time.monotonic() - started)

    pipeline = src.count_window(2) if window == "count" else src.fixed_time_window("200ms")
    box["handle"] = handle = pipeline.sink(sink).start(consumer="self-stop")
    if window == "time":
        assert wait_for(lambda: src.position("self-stop") > 0 or "stopped" in box)
        src.append({"i": 9})  # a later message closes the window holding i >= 2
    assert handle.join(WAIT), "a stop() called from the sink deadlocked"
    returned, waited = box["stopped"]
    assert returned is False and waited < 1.0  # it cannot wait for itself: it returns at once
