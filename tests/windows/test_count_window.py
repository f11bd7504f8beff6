"""count_window in virtual time: the operator on a TestScheduler, and through the DSL."""

from __future__ import annotations

from typing import Any

import pytest
from reactivex.testing import ReactiveTest, TestScheduler

from minibatch_rx import InvalidArgumentError, Window, count_window
from minibatch_rx.testing import Emission, VirtualTime
from windows.marbles import arrive, emitted, next_values, on_completed


def test_count_window_emits_every_n_messages_when_the_nth_arrives() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        arrive(210, 1), arrive(220, 2), arrive(230, 3), arrive(240, 4), arrive(250, 5)
    )

    results = scheduler.start(lambda: xs.pipe(count_window(2, scheduler=scheduler)))

    assert emitted(results) == [
        (220, [1, 2], None, None, 2),
        (240, [3, 4], None, None, 4),
    ]  # message 5 waits for a partner forever: no timeout, no completion
    assert all(w.stream == "s" for w in next_values(results))


def test_count_window_ack_excludes_the_held_partial_window() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(210, 1), arrive(211, 2), arrive(212, 3))

    results = scheduler.start(lambda: xs.pipe(count_window(2, scheduler=scheduler)))

    # The first window acks 2: message 3 is buffered, not handled.
    assert emitted(results) == [(211, [1, 2], None, None, 2)]


def test_count_window_completion_flushes_the_partial_window() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(210, 1), arrive(220, 2), arrive(230, 3), on_completed(300))

    results = scheduler.start(lambda: xs.pipe(count_window(2, scheduler=scheduler)))

    assert emitted(results) == [
        (220, [1, 2], None, None, 2),
        (300, [3], None, None, 3),
        (300, "completed"),
    ]


def test_count_window_on_an_empty_source_emits_no_window() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(on_completed(300))

    results = scheduler.start(lambda: xs.pipe(count_window(3, timeout=5, scheduler=scheduler)))

    assert emitted(results) == [(300, "completed")]


def test_count_window_of_one_emits_each_message_at_arrival() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(205, 1), arrive(207, 2))

    results = scheduler.start(lambda: xs.pipe(count_window(1, scheduler=scheduler)))

    assert emitted(results) == [(205, [1], None, None, 1), (207, [2], None, None, 2)]


def test_count_window_timeout_flushes_a_partial_window_and_restarts_for_the_next() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        arrive(210, 1), arrive(212, 2),                  # partial: flushed at 210 + 5
        arrive(230, 3),                                  # new window, new timer: flushed at 235
        arrive(240, 4), arrive(241, 5), arrive(242, 6),  # full before its timeout (245)
        arrive(244, 7),                                  # its own timer: 249, not the stale 245
    )

    results = scheduler.start(lambda: xs.pipe(count_window(3, timeout=5, scheduler=scheduler)))

    assert emitted(results) == [
        (215, [1, 2], None, None, 2),
        (235, [3], None, None, 3),
        (242, [4, 5, 6], None, None, 6),
        (249, [7], None, None, 7),
    ]


def test_count_window_timeout_accepts_interval_strings() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(210, 1))

    results = scheduler.start(lambda: xs.pipe(count_window(4, timeout="1500ms", scheduler=scheduler)))

    assert emitted(results) == [(211.5, [1], None, None, 1)]


def test_count_window_timeout_fires_on_time_for_fractional_seconds() -> None:
    # 200.3 + 0.3 is 200.60000000000002 as a float; the timer fires at the
    # microsecond-rounded 200.6 and must still flush (it used to wait for the
    # TestScheduler's 1 s spin advance, i.e. fire at 201.6).
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(200.3, 1))

    results = scheduler.start(lambda: xs.pipe(count_window(5, timeout=0.3, scheduler=scheduler)))

    assert emitted(results) == [(200.6, [1], None, None, 1)]


def test_count_window_disposal_cancels_the_pending_timeout() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(210, 1), arrive(212, 2), arrive(600, 3), arrive(601, 4))

    results = scheduler.start(
        lambda: xs.pipe(count_window(2, timeout=50, scheduler=scheduler)), disposed=230
    )

    # Nothing at 211 (one message), nothing at 260 (timer disposed), nothing later.
    assert emitted(results) == [(212, [1, 2], None, None, 2)]
    assert xs.subscriptions == [ReactiveTest.subscribe(200, 230)]


def test_count_window_disposed_with_a_partial_window_emits_nothing_later() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(210, 1), arrive(900, 2))

    results = scheduler.start(
        lambda: xs.pipe(count_window(2, timeout=50, scheduler=scheduler)), disposed=220
    )

    # The clock ran to 900, past the disposed timer (260): nothing came out.
    assert scheduler.clock == 900
    assert results.messages == []


def test_count_window_error_is_forwarded_after_the_windows_before_it() -> None:
    scheduler = TestScheduler()
    boom = RuntimeError("store gone")
    xs = scheduler.create_hot_observable(
        arrive(210, 1), arrive(211, 2), arrive(212, 3), ReactiveTest.on_error(213, boom)
    )

    results = scheduler.start(lambda: xs.pipe(count_window(2, timeout=5, scheduler=scheduler)))

    # The partial window [3] is not flushed on error, and its timer does not fire at 217.
    assert emitted(results) == [(211, [1, 2], None, None, 2), (213, "error", boom)]


# -- through the DSL -------------------------------------------------------------


def test_dsl_count_window_emits_when_the_window_is_full_and_commits_its_ack() -> None:
    vt = VirtualTime()
    s = vt.stream("counts")
    for t, v in [(1, 10), (2, 20), (5, 30), (9, 40), (12, 50)]:
        vt.append_at(t, s, {"v": v})

    out = vt.run(s.count_window(2).map(lambda w: [d["v"] for d in w.data]), until=30)

    assert out == [Emission(2.0, [10, 20]), Emission(9.0, [30, 40])]
    assert s.position("default") == 4  # message 5 is still waiting for its window


def test_dsl_count_window_timeout_flushes_in_virtual_time() -> None:
    vt = VirtualTime()
    s = vt.stream("counts")
    for t in (1, 2, 10):
        vt.append_at(t, s, {"t": t})

    out = vt.run(s.count_window(5, timeout="3s").map(lambda w: [d["t"] for d in w.data]), until=30)

    assert out == [Emission(4.0, [1, 2]), Emission(13.0, [10])]
    assert s.position("default") == 3


def test_dsl_failing_map_is_retried_in_virtual_time_then_dead_lettered() -> None:
    vt = VirtualTime()
    s = vt.stream("orders")
    for t, v in [(1, 1), (2, -1), (10, 3), (11, 4)]:
        vt.append_at(t, s, {"v": v})
    calls: list[tuple[float, list[int]]] = []

    def total(window: Window) -> int:
        values = [d["v"] for d in window.data]
        calls.append((vt.now, values))
        if min(values) < 0:
            raise ValueError(f"negative quantity in {values}")
        return sum(values)

    pipeline = s.count_window(2).map(total).with_retries(max_retries=2, backoff=1)
    out = vt.run(pipeline, until=60)

    # Three attempts on the bad window: at 2, after 1 s, after 2 more seconds (virtual).
    assert calls == [(2.0, [1, -1]), (3.0, [1, -1]), (5.0, [1, -1]), (11.0, [3, 4])]
    # The pipeline went on with the next window; the bad one produced nothing.
    assert out == [Emission(11.0, 7)]
    dead = list(vt.stream("orders.dead").read())
    assert len(dead) == 1
    assert dead[0].ts.timestamp() == 5.0  # after the virtual back-off, not at 2
    assert dead[0].data["error"] == "ValueError: negative quantity in [1, -1]"
    assert dead[0].data["stage"] == "map"
    assert dead[0].data["attempts"] == 3
    assert dead[0].data["data"] == [{"v": 1}, {"v": -1}]
    assert (dead[0].data["first_seq"], dead[0].data["last_seq"]) == (1, 2)
    assert s.position("default") == 4  # the dead-lettered window counts as handled


def test_dsl_map_that_recovers_on_retry_emits_after_the_virtual_backoff() -> None:
    vt = VirtualTime()
    s = vt.stream("flaky")
    vt.append_at(1, s, {"v": 1})
    vt.append_at(2, s, {"v": 2})
    attempts: list[float] = []

    def flaky(window: Window) -> int:
        attempts.append(vt.now)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return len(window)

    out = vt.run(s.count_window(2).map(flaky).with_retries(max_retries=2, backoff=1), until=30)

    assert attempts == [2.0, 3.0, 5.0]
    assert out == [Emission(5.0, 2)]
    assert list(vt.stream("flaky.dead").read()) == []


# -- bad arguments -----------------------------------------------------------------


@pytest.mark.parametrize("n", [0, -1, "abc", True, 2.5, None])
def test_count_window_rejects_a_bad_size(n: Any) -> None:
    with pytest.raises(ValueError, match=r"count_window size n must be an int > 0, got") as info:
        count_window(n)
    assert isinstance(info.value, InvalidArgumentError)
    assert repr(n) in str(info.value)


@pytest.mark.parametrize(
    ("timeout", "hint"),
    [(-1, "must be > 0, got -1"), (0, "must be > 0, got 0"), ("5 parsecs", "is not an interval"),
     (True, "got True")],
)
def test_count_window_rejects_a_bad_timeout(timeout: Any, hint: str) -> None:
    with pytest.raises(InvalidArgumentError, match="count_window timeout") as info:
        count_window(2, timeout)
    assert hint in str(info.value)


def test_dsl_count_window_validates_when_the_pipeline_is_built() -> None:
    vt = VirtualTime()
    with pytest.raises(InvalidArgumentError, match="must be an int > 0, got 0"):
        vt.stream("s").count_window(0)
