"""relaxed_time_window in virtual time: the operator on a TestScheduler, and through the DSL."""

from __future__ import annotations

from typing import Any

import pytest
from reactivex.testing import TestScheduler

from minibatch_rx import InvalidArgumentError, Message, relaxed_time_window
from minibatch_rx.testing import Emission, VirtualTime, seconds
from windows.marbles import arrive, emitted, next_values, on_completed


def test_relaxed_windows_hold_what_arrived_in_each_interval() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(202, 1), arrive(205, 2), arrive(212, 3), arrive(239, 4))

    results = scheduler.start(lambda: xs.pipe(relaxed_time_window(10, scheduler=scheduler)))

    # Intervals of scheduler time from the subscription (t=200); none for the empty [220, 230).
    assert emitted(results) == [
        (210, [1, 2], 200, 210, 2),
        (220, [3], 210, 220, 3),
        (240, [4], 230, 240, 4),
    ]
    assert next_values(results)[0].stream == "s"


def test_relaxed_windows_with_emit_empty_tick_until_disposed() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(215, 1))

    results = scheduler.start(
        lambda: xs.pipe(relaxed_time_window(10, emit_empty=True, scheduler=scheduler)), disposed=245
    )

    assert emitted(results) == [
        (210, [], 200, 210, 0),
        (220, [1], 210, 220, 1),
        (230, [], 220, 230, 1),
        (240, [], 230, 240, 1),
    ]


def test_relaxed_windows_take_messages_by_arrival_whatever_their_ts() -> None:
    # No late side output: an old message simply joins the current window.
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(203, 1), arrive(214, 2, ts=150), arrive(215, 3))
    op = relaxed_time_window(10, scheduler=scheduler)
    late: list[Message] = []
    op.late.subscribe(late.append)

    results = scheduler.start(lambda: xs.pipe(op))

    assert emitted(results) == [(210, [1], 200, 210, 1), (220, [2, 3], 210, 220, 3)]
    assert late == []


def test_relaxed_window_replay_burst_lands_in_one_window_in_order() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(*(arrive(204, seq, ts=100 + seq) for seq in range(1, 6)))

    results = scheduler.start(lambda: xs.pipe(relaxed_time_window(10, scheduler=scheduler)))

    assert emitted(results) == [(210, [1, 2, 3, 4, 5], 200, 210, 5)]


def test_relaxed_window_ticks_from_the_subscription_time() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(260, 1))

    results = scheduler.start(lambda: xs.pipe(relaxed_time_window(25, scheduler=scheduler)), subscribed=203)

    assert emitted(results) == [(278, [1], 253, 278, 1)]


def test_relaxed_window_completion_flushes_what_is_pending() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(203, 1), arrive(212, 2), arrive(214, 3), on_completed(216))

    results = scheduler.start(lambda: xs.pipe(relaxed_time_window(10, scheduler=scheduler)))

    assert emitted(results) == [
        (210, [1], 200, 210, 1),
        (216, [2, 3], 210, 216, 3),  # the last window ends at completion
        (216, "completed"),
    ]


def test_relaxed_window_completion_emits_no_empty_window() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(203, 1), on_completed(216))

    results = scheduler.start(
        lambda: xs.pipe(relaxed_time_window(10, emit_empty=True, scheduler=scheduler))
    )

    assert emitted(results) == [(210, [1], 200, 210, 1), (216, "completed")]


def test_relaxed_window_disposal_stops_the_ticks() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(203, 1), arrive(900, 2))

    results = scheduler.start(
        lambda: xs.pipe(relaxed_time_window(10, emit_empty=True, scheduler=scheduler)), disposed=207
    )

    assert scheduler.clock == 900
    assert results.messages == []


# -- through the DSL -------------------------------------------------------------


def test_dsl_relaxed_time_window_every_interval() -> None:
    vt = VirtualTime()
    s = vt.stream("clicks")
    for t in (2, 5, 12, 33):
        vt.append_at(t, s, {"t": t})

    out = vt.run(
        s.relaxed_time_window("10s").map(lambda w: (seconds(w.start), seconds(w.end), len(w))), until=50
    )

    assert out == [
        Emission(10.0, (0.0, 10.0, 2)),
        Emission(20.0, (10.0, 20.0, 1)),
        Emission(40.0, (30.0, 40.0, 1)),
    ]
    assert s.position("default") == 4


def test_dsl_relaxed_time_window_emit_empty() -> None:
    vt = VirtualTime()
    s = vt.stream("clicks")
    vt.append_at(12, s, {"t": 12})

    out = vt.run(s.relaxed_time_window(10, emit_empty=True).map(len), until=35)

    assert out == [Emission(10.0, 0), Emission(20.0, 1), Emission(30.0, 0)]


def test_dsl_relaxed_time_window_catch_up_replay_is_one_window() -> None:
    vt = VirtualTime()
    s = vt.stream("clicks")
    for t in (1, 2, 12, 25):
        vt.append_at(t, s, {"t": t})
    vt.advance_to(100)

    out = vt.run(s.relaxed_time_window(10).map(lambda w: [d["t"] for d in w.data]), until=130)

    assert out == [Emission(110.0, [1, 2, 12, 25])]
    assert list(vt.stream("clicks.late").read()) == []


# -- bad arguments -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "hint"),
    [
        (0, "relaxed_time_window interval must be > 0, got 0"),
        (-1, "relaxed_time_window interval must be > 0, got -1"),
        ("5 parsecs", "relaxed_time_window interval '5 parsecs' is not an interval"),
        (False, "relaxed_time_window interval must be seconds, a timedelta or a string, got False"),
        ([10], "got list"),
    ],
)
def test_relaxed_time_window_rejects_bad_intervals(interval: Any, hint: str) -> None:
    with pytest.raises(ValueError) as info:
        relaxed_time_window(interval)
    assert isinstance(info.value, InvalidArgumentError)
    assert hint in str(info.value)


def test_dsl_relaxed_time_window_validates_when_the_pipeline_is_built() -> None:
    with pytest.raises(InvalidArgumentError, match="'5 parsecs' is not an interval"):
        VirtualTime().stream("s").relaxed_time_window("5 parsecs")
