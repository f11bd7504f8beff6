"""session_window in virtual time: the operator on a TestScheduler, and through the DSL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from reactivex.testing import TestScheduler

from minibatch_rx import InvalidArgumentError, Message, Window, session_window
from minibatch_rx.testing import Emission, VirtualTime, seconds
from windows.marbles import append_stamped, arrive, emitted, late_log, next_values, on_completed


def test_session_closes_when_the_clock_passes_last_message_plus_gap() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        arrive(211, 1), arrive(213, 2), arrive(216, 3),  # each within 5 s of the previous one
        arrive(230, 4), arrive(232, 5),
    )

    results = scheduler.start(lambda: xs.pipe(session_window(5, scheduler=scheduler)))

    assert emitted(results) == [
        (221, [1, 2, 3], 211, 221, 3),  # start: first ts; end: last ts + gap
        (237, [4, 5], 230, 237, 5),
    ]
    assert next_values(results)[0].stream == "s"


def test_session_gap_splits_a_replayed_burst() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        arrive(500, 1, ts=100), arrive(500, 2, ts=102),
        arrive(500, 3, ts=110), arrive(500, 4, ts=111),
        arrive(500, 5, ts=130),
    )
    op = session_window(5, scheduler=scheduler)
    late = late_log(scheduler, op)

    results = scheduler.start(lambda: xs.pipe(op))

    assert emitted(results) == [
        (500, [1, 2], 100, 107, 2),   # closed by message 3, 8 s after message 2
        (500, [3, 4], 110, 116, 4),   # closed by message 5; ack stops before it
        (500.25, [5], 130, 135, 5),   # closed once the stream was quiet for 0.25 s
    ]
    assert late == []


def test_session_messages_exactly_gap_apart_are_separate_sessions() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(500, 1, ts=100), arrive(500, 2, ts=105))

    results = scheduler.start(lambda: xs.pipe(session_window(5, scheduler=scheduler)))

    assert emitted(results) == [(500, [1], 100, 105, 1), (500.25, [2], 105, 110, 2)]


def test_session_waits_for_quiet_before_closing_on_the_clock() -> None:
    # Messages stamped in the past keep trickling in, each within 0.25 s of the
    # previous one, after the session's end (205) has passed on the clock: the
    # session closes only once the stream has been quiet for 0.25 s.
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        arrive(210, 1, ts=200), arrive(210.1, 2, ts=201), arrive(210.2, 3, ts=202)
    )
    op = session_window(3, scheduler=scheduler)
    late = late_log(scheduler, op)

    results = scheduler.start(lambda: xs.pipe(op))

    assert emitted(results) == [(210.45, [1, 2, 3], 200, 205, 3)]
    assert late == []


def test_session_out_of_order_message_extends_the_session_start() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(213, 1), arrive(214, 2, ts=211))

    results = scheduler.start(lambda: xs.pipe(session_window(5, scheduler=scheduler)))

    assert emitted(results) == [(218, [1, 2], 211, 218, 2)]


def test_session_out_of_order_message_behind_the_watermark_is_late() -> None:
    # A lagging producer's messages, 6-7 s before the open session (gap 5): the
    # watermark (ts 210) is past them, so a session of their own would already be
    # over: they are late, never merged into one "session" across a 7 s silence.
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        arrive(210, 1), arrive(211, 2, ts=203), arrive(212, 3, ts=204), arrive(212.5, 4, ts=208.5)
    )
    op = session_window(5, scheduler=scheduler)
    late = late_log(scheduler, op)

    results = scheduler.start(lambda: xs.pipe(op))

    assert emitted(results) == [
        (215, [1, 4], 208.5, 215, 4),  # ts 208.5 is within 5 s of 210: joins the open session
    ]
    assert late == [(211, 2), (212, 3)]


def test_session_late_message_goes_to_the_late_side_output() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        arrive(211, 1), arrive(213, 2),
        arrive(220, 3, ts=215),  # inside the session emitted at 218: late
        arrive(221, 4, ts=218),  # exactly at its end: starts the next session
    )
    op = session_window(5, scheduler=scheduler)
    late = late_log(scheduler, op)

    results = scheduler.start(lambda: xs.pipe(op))

    assert emitted(results) == [(218, [1, 2], 211, 218, 2), (223, [4], 218, 223, 4)]
    assert late == [(220, 3)]


def test_session_disposal_cancels_the_pending_session() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(211, 1), arrive(900, 2))

    results = scheduler.start(lambda: xs.pipe(session_window(5, scheduler=scheduler)), disposed=214)

    assert scheduler.clock == 900
    assert results.messages == []


def test_session_completion_flushes_the_open_session() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(211, 1), arrive(213, 2), on_completed(215))

    results = scheduler.start(lambda: xs.pipe(session_window(5, scheduler=scheduler)))

    assert emitted(results) == [(215, [1, 2], 211, 218, 2), (215, "completed")]


def test_session_without_messages_emits_nothing() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(on_completed(400))

    results = scheduler.start(lambda: xs.pipe(session_window(5, scheduler=scheduler)))

    assert emitted(results) == [(400, "completed")]


# -- through the DSL -------------------------------------------------------------


def summary(window: Window) -> tuple[Any, ...]:
    return seconds(window.start), seconds(window.end), [d["v"] for d in window.data]


def test_dsl_session_window_closes_sessions_on_the_virtual_clock() -> None:
    vt = VirtualTime()
    s = vt.stream("visits")
    for t, v in [(1, "a"), (3, "b"), (12, "c"), (14, "d")]:
        vt.append_at(t, s, {"v": v})

    out = vt.run(s.session_window(timedelta(seconds=5)).map(summary), until=40)

    assert out == [Emission(8.0, (1.0, 8.0, ["a", "b"])), Emission(19.0, (12.0, 19.0, ["c", "d"]))]
    assert s.position("default") == 4


def test_dsl_session_window_late_message_to_callable_and_default_stream() -> None:
    vt = VirtualTime()
    s = vt.stream("visits")
    vt.append_at(1, s, {"v": "a"})
    append_stamped(vt, 9, s, ts=2, payload={"v": "late"})
    seen: list[Message] = []

    out = vt.run(s.session_window(5).late(seen.append).map(summary), until=20)

    assert out == [Emission(6.0, (1.0, 6.0, ["a"]))]
    assert [(m.seq, m.data) for m in seen] == [(2, {"v": "late"})]

    vt2 = VirtualTime()
    s2 = vt2.stream("visits")
    vt2.append_at(1, s2, {"v": "a"})
    append_stamped(vt2, 9, s2, ts=2, payload={"v": "late"})
    vt2.run(s2.session_window(5).map(summary), until=20)
    assert [m.data for m in vt2.stream("visits.late").read()] == [{"v": "late"}]


def test_dsl_session_window_catch_up_replay() -> None:
    vt = VirtualTime()
    s = vt.stream("visits")
    for t, v in [(1, "a"), (3, "b"), (12, "c")]:
        vt.append_at(t, s, {"v": v})
    vt.advance_to(100)

    out = vt.run(s.session_window(5).map(summary), until=200)

    assert out == [Emission(100.0, (1.0, 8.0, ["a", "b"])), Emission(100.25, (12.0, 17.0, ["c"]))]
    assert list(vt.stream("visits.late").read()) == []


# -- bad arguments -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "hint"),
    [
        ({"gap": 0}, "session_window gap must be > 0, got 0"),
        ({"gap": -1}, "session_window gap must be > 0, got -1"),
        ({"gap": "5 parsecs"}, "session_window gap '5 parsecs' is not an interval"),
        ({"gap": True}, "session_window gap must be seconds, a timedelta or a string, got True"),
        ({"gap": timedelta(seconds=-3)}, "session_window gap must be > 0"),
        ({"gap": 5, "quiet": -0.5}, "session_window quiet must be >= 0, got -0.5"),
    ],
)
def test_session_window_rejects_bad_arguments(kwargs: dict[str, Any], hint: str) -> None:
    with pytest.raises(ValueError) as info:
        session_window(**kwargs)
    assert isinstance(info.value, InvalidArgumentError)
    assert hint in str(info.value)


def test_dsl_session_window_validates_when_the_pipeline_is_built() -> None:
    with pytest.raises(InvalidArgumentError, match="gap must be > 0"):
        VirtualTime().stream("s").session_window("0s")
