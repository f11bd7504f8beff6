"""Failures in user code: retries with back-off, dead letters, logging, and the
failures that must stop a pipeline (a dead-letter append that fails)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import reactivex.operators as ops
from pipeline_helpers import failing_dead_letters, seeded, values

from minibatch_rx import Stream, Window, stream
from minibatch_rx.store import Store, open_store
from minibatch_rx.testing import VirtualTime

# A lost message would otherwise block a run until the session-wide timeout.
pytestmark = pytest.mark.timeout(120)

WAIT = 10.0  # seconds: safety net for real-time runs



def vs(window: Window) -> list[int]:
    return [d["v"] for d in window.data]


class Flaky:
    """Raises ``failures`` times per window (keyed by first seq), then returns its values."""

    def __init__(self, failures: int | float, only: set[int] | None = None) -> None:
        self.failures = failures
        self.only = only
        self.calls: list[int | None] = []

    def __call__(self, window: Window) -> dict[str, Any]:
        self.calls.append(window.first_seq)
        failing = self.only is None or window.first_seq in self.only
        if failing and self.calls.count(window.first_seq) <= self.failures:
            raise ValueError(f"bad window {window.first_seq}")
        return {"vs": vs(window)}


@pytest.fixture
def broken_dead_letters(fast_url: str) -> Iterator[Store]:
    """The store of ``fast_url``, failing every append to a ``*.dead`` stream."""
    with failing_dead_letters(open_store(fast_url)) as store:
        yield store


# -- retries -----------------------------------------------------------------------------


def test_a_function_failing_twice_then_succeeding_delivers_once(fast_url: str) -> None:
    src = seeded(fast_url, 4)
    flaky = Flaky(failures=2, only={1})
    handle = (src.count_window(2).map(flaky).with_retries(max_retries=3, backoff=0).sink("out")
              .run(max_windows=2, duration=WAIT))

    assert flaky.calls == [1, 1, 1, 3]
    assert values(Stream("out", url=fast_url)) == [{"vs": [1, 2]}, {"vs": [3, 4]}]
    assert Stream("in.dead", url=fast_url).count() == 0
    assert handle.position == 4


def test_always_failing_window_is_dead_lettered_after_max_retries_plus_one_attempts(store_url: str) -> None:
    src = seeded(store_url, 4)
    flaky = Flaky(failures=float("inf"), only={1})
    handle = (src.count_window(2).map(flaky).with_retries(max_retries=2, backoff=0).sink("out")
              .run(max_windows=2, duration=WAIT))

    assert flaky.calls == [1, 1, 1, 3]  # 3 attempts for window 1, then window 2 goes on
    assert values(Stream("out", url=store_url)) == [{"vs": [3, 4]}]
    dead = values(Stream("in.dead", url=store_url))
    assert dead == [{
        "stage": "map",
        "error": "ValueError: bad window 1",
        "attempts": 3,
        "stream": "in",
        "first_seq": 1,
        "last_seq": 2,
        "data": [{"v": 1}, {"v": 2}],
    }]
    assert handle.position == src.position(handle.consumer) == 4
    assert handle.error is None


@pytest.mark.parametrize("stage", ["filter", "flat_map", "sink"])
def test_every_stage_kind_dead_letters_under_its_own_name(stage: str) -> None:
    src = seeded("memory://stages", 2)

    def boom(_: Any) -> Any:
        raise RuntimeError(f"{stage} exploded")

    pipeline = getattr(src.count_window(1).with_retries(0), stage)(boom)
    handle = pipeline.run(max_windows=2)
    dead = values(Stream("in.dead", url="memory://stages"))
    assert [(d["stage"], d["first_seq"], d["error"]) for d in dead] == [
        (stage, 1, f"RuntimeError: {stage} exploded"), (stage, 2, f"RuntimeError: {stage} exploded"),
    ]
    assert handle.position == 2


def test_flat_map_errors_while_iterating_are_retried_and_dead_lettered() -> None:
    src = seeded("memory://flat", 3)
    got: list[int] = []

    def explode_lazily(window: Window) -> Iterator[int]:
        for v in vs(window):
            if v == 2:
                raise KeyError("no 2s")
            yield v

    handle = src.count_window(1).flat_map(explode_lazily).with_retries(1, backoff=0).sink(got.append).run(
        max_windows=3
    )
    assert got == [1, 3]  # no partial output from the failed window
    dead = values(Stream("in.dead", url="memory://flat"))
    assert [(d["stage"], d["first_seq"], d["attempts"]) for d in dead] == [("flat_map", 2, 2)]
    assert dead[0]["error"] == "KeyError: 'no 2s'"
    assert (handle.error, handle.position) == (None, 3)


@pytest.mark.parametrize("result", [42, None, "abc", {"a": 1}], ids=["int", "none", "str", "dict"])
def test_flat_map_must_return_an_iterable_of_values(result: Any) -> None:
    src = seeded("memory://flat-bad", 1)
    handle = src.pipeline().flat_map(lambda _m: result).with_retries(0).sink(print).run(max_windows=1)
    dead = values(Stream("in.dead", url="memory://flat-bad"))
    assert len(dead) == 1
    assert dead[0]["error"].startswith("TypeError: flat_map function must return an iterable")
    assert handle.error is None


# -- logging ------------------------------------------------------------------------------


def test_retries_and_dead_letters_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    src = seeded("memory://logged", 2)
    with caplog.at_level(logging.WARNING, logger="minibatch_rx"):
        src.count_window(2).map(Flaky(failures=float("inf"))).with_retries(2, backoff=0).run(max_windows=1)

    # Only this pipeline's records (a pipeline another test left behind may log meanwhile).
    records = [r for r in caplog.records if r.name.startswith("minibatch_rx.")
               and ("in#1..2" in r.getMessage() or "'in.dead'" in r.getMessage())]
    assert [(r.name, r.levelno) for r in records] == [
        ("minibatch_rx.stages", logging.WARNING), ("minibatch_rx.stages", logging.WARNING),
        ("minibatch_rx.stages", logging.ERROR),
        ("minibatch_rx.running", logging.WARNING),  # the run's summary: what went to the dead letters
    ]
    assert "attempt 1 of 3" in records[0].getMessage()
    assert "bad window 1" in records[0].getMessage()
    final = records[2].getMessage()
    assert "after 3 attempt(s)" in final
    assert "ValueError('bad window 1')" in final
    assert "'in.dead'" in final
    assert "in#1..2" in final


# -- failures that stop the pipeline --------------------------------------------------------


def test_failing_dead_letter_append_makes_run_raise(fast_url: str, broken_dead_letters: Store) -> None:
    src = seeded(fast_url, 4)
    with pytest.raises(OSError, match="dead-letter store is full"):
        src.count_window(2).map(Flaky(failures=float("inf"), only={3})).with_retries(0).sink("out").run(
            "default", max_windows=2, duration=WAIT
        )
    # Window 1 was handled; window 2 was neither handled nor buried: not acknowledged.
    assert src.position("default") == 2
    assert values(Stream("out", url=fast_url)) == [{"vs": [1, 2]}]


def test_failing_dead_letter_append_is_the_handle_error(fast_url: str, broken_dead_letters: Store) -> None:
    src = seeded(fast_url, 2)
    handle = src.count_window(2).map(Flaky(failures=float("inf"))).with_retries(0).start()
    try:
        assert handle.join(WAIT), "the pipeline kept running after a fatal error"
    finally:
        handle.stop()
    assert isinstance(handle.error, OSError)
    assert not handle.running
    assert src.position(handle.consumer) == 0


def test_fatal_error_in_a_timer_emitted_window_reaches_the_handle(
    fast_url: str, broken_dead_letters: Store
) -> None:
    """A count window flushed by its timeout is processed in a timer thread; a
    fatal error there must still stop the pipeline and show on the handle."""
    src = seeded(fast_url, 1)
    handle = src.count_window(5, timeout=0.1).map(Flaky(failures=float("inf"))).with_retries(0).start()
    try:
        assert handle.join(WAIT), "the error was lost in the timer thread"
    finally:
        handle.stop()
    assert isinstance(handle.error, OSError)
    assert src.position(handle.consumer) == 0


# -- reactivex operators ------------------------------------------------------------------------


def test_an_error_inside_pipe_operators_dead_letters_and_the_chain_continues(fast_url: str) -> None:
    src = stream("in", fast_url)
    src.extend([{"v": v} for v in (5, 0, 2, 0, 1)])
    handle = (src.count_window(1)
              .pipe(ops.map(lambda w: 10 // w.data[0]["v"]), ops.map(lambda q: {"q": q}))
              .map(lambda d: {**d, "after": True})
              .sink("out")
              .run(max_windows=5, duration=WAIT))

    assert values(Stream("out", url=fast_url)) == [
        {"q": 2, "after": True}, {"q": 5, "after": True}, {"q": 10, "after": True},
    ]
    dead = values(Stream("in.dead", url=fast_url))
    assert [(d["stage"], d["first_seq"], d["error"]) for d in dead] == [
        ("pipe", 2, "ZeroDivisionError: integer division or modulo by zero"),
        ("pipe", 4, "ZeroDivisionError: integer division or modulo by zero"),
    ]
    assert handle.position == 5


# -- virtual time -------------------------------------------------------------------------------


def test_retry_back_off_advances_the_virtual_clock() -> None:
    vt = VirtualTime()
    src = vt.stream("in")
    for t in (1, 2):
        vt.append_at(t, src, {"v": t})
    attempts: list[float] = []

    def flaky(window: Window) -> list[int]:
        attempts.append(vt.now)
        if len(attempts) <= 2:
            raise TimeoutError("not yet")
        return vs(window)

    began = time.monotonic()
    out = vt.run(src.count_window(2).map(flaky).with_retries(max_retries=3, backoff=10, max_backoff=60),
                 until=100)

    assert attempts == [2.0, 12.0, 32.0]  # back-off 10 s, then 20 s, in virtual time
    assert [(e.time, e.value) for e in out] == [(32.0, [1, 2])]
    assert time.monotonic() - began < 5  # nobody really waited 30 s


def test_back_off_is_capped_and_exhausted_retries_dead_letter_in_virtual_time() -> None:
    vt = VirtualTime()
    src = vt.stream("in")
    vt.append_at(1, src, {"v": 1})
    vt.append_at(50, src, {"v": 2})
    attempts: list[float] = []

    def always(window: Window) -> list[int]:
        attempts.append(vt.now)
        if window.first_seq == 1:
            raise TimeoutError("never")
        return vs(window)

    out = vt.run(src.count_window(1).map(always).with_retries(max_retries=3, backoff=1, max_backoff=1.5),
                 until=60)

    assert attempts == [1.0, 2.0, 3.5, 5.0, 50.0]  # waits 1, 1.5 (capped), 1.5, then gives up
    assert [(e.time, e.value) for e in out] == [(50.0, [2])]
    dead = values(Stream("in.dead", store=vt.store))
    assert [(d["first_seq"], d["attempts"]) for d in dead] == [(1, 4)]
    # The dead letter was written when the last attempt failed, at virtual time 5.
    assert [m.ts.timestamp() for m in Stream("in.dead", store=vt.store).read()] == [5.0]
