"""fixed_time_window in virtual time: the operator on a TestScheduler, and through the DSL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from reactivex.testing import TestScheduler

from minibatch_rx import InvalidArgumentError, Message, Window, fixed_time_window
from minibatch_rx.testing import Emission, VirtualTime, seconds
from windows.marbles import append_stamped, arrive, emitted, late_log, next_values, on_completed, values


def test_fixed_windows_are_emitted_when_the_clock_reaches_their_end() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(211, 1), arrive(215, 2), arrive(223, 3), arrive(231, 4))

    results = scheduler.start(lambda: xs.pipe(fixed_time_window(10, scheduler=scheduler)))

    assert emitted(results) == [
        (220, [1, 2], 210, 220, 2),
        (230, [3], 220, 230, 3),
        (240, [4], 230, 240, 4),
    ]
    first = next_values(results)[0]
    assert first.stream == "s"
    assert first.start == datetime(1970, 1, 1, 0, 3, 30, tzinfo=UTC)  # aligned on the epoch


def test_fixed_window_bounds_are_half_open() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(210, 1), arrive(219.999, 2), arrive(220, 3), arrive(230, 4))

    results = scheduler.start(lambda: xs.pipe(fixed_time_window(10, scheduler=scheduler)))

    # t=210 opens [210, 220); t=220 belongs to [220, 230), not to the window that ends there.
    assert emitted(results) == [
        (220, [1, 2], 210, 220, 2),
        (230, [3], 220, 230, 3),
        (240, [4], 230, 240, 4),
    ]


def test_fixed_window_bounds_are_exact_for_fractional_intervals() -> None:
    # floor(200.6 / 0.1) is 2005 in floats: before the grid used integer
    # microseconds, the message at 200.6 fell into no window at all.
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(200.3, 1), arrive(200.6, 2), arrive(200.7, 3))

    results = scheduler.start(lambda: xs.pipe(fixed_time_window("100ms", quiet=0, scheduler=scheduler)))

    assert [(t, seqs, start, end) for t, seqs, start, end, _ in emitted(results)] == [
        (200.4, [1], 200.3, 200.4),
        (200.7, [2], 200.6, 200.7),
        (200.8, [3], 200.7, 200.8),
    ]


def test_fixed_windows_without_messages_are_not_emitted() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(205, 1), arrive(263, 2))

    results = scheduler.start(lambda: xs.pipe(fixed_time_window(10, scheduler=scheduler)))

    assert emitted(results) == [(210, [1], 200, 210, 1), (270, [2], 260, 270, 2)]


def test_fixed_windows_with_emit_empty_tick_every_interval_until_disposed() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(213, 1), arrive(236, 2))

    results = scheduler.start(
        lambda: xs.pipe(fixed_time_window(10, emit_empty=True, scheduler=scheduler)), disposed=255
    )

    assert emitted(results) == [
        (210, [], 200, 210, 0),  # the first window starts at subscription (t=200)
        (220, [1], 210, 220, 1),
        (230, [], 220, 230, 1),
        (240, [2], 230, 240, 2),
        (250, [], 240, 250, 2),
    ]  # nothing at 260: disposed at 255


def test_fixed_window_late_message_goes_to_the_late_side_output() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        arrive(215, 1),
        arrive(225, 2, ts=218),  # [210, 220) was emitted at 220: late
        arrive(226, 3),
        arrive(247, 4, ts=232),  # [230, 240) closed empty at 240: late as well
    )
    op = fixed_time_window(10, scheduler=scheduler)
    late = late_log(scheduler, op)

    results = scheduler.start(lambda: xs.pipe(op))

    assert emitted(results) == [(220, [1], 210, 220, 1), (230, [3], 220, 230, 3)]
    assert late == [(225, 2), (247, 4)]


def test_fixed_window_grace_delays_emission_and_admits_stragglers() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        arrive(211, 1),
        arrive(221, 2),
        arrive(223, 3, ts=218),  # within grace: joins [210, 220)
        arrive(227, 4, ts=219),  # after [210, 220) was emitted at 225: late
    )
    op = fixed_time_window(10, grace=5, scheduler=scheduler)
    late = late_log(scheduler, op)

    results = scheduler.start(lambda: xs.pipe(op))

    # [210, 220) at 225 acks 1: message 2 is still held by [220, 230); 3 is in this window
    # but everything up to 1 only is handled once it is processed.
    assert emitted(results) == [(225, [1, 3], 210, 220, 1), (235, [2], 220, 230, 4)]
    assert late == [(227, 4)]


def test_fixed_window_ack_stops_before_a_message_in_the_next_open_window() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(211, 1), arrive(214, 2), arrive(222, 3), arrive(224, 4))

    results = scheduler.start(lambda: xs.pipe(fixed_time_window(10, grace=5, scheduler=scheduler)))

    assert emitted(results) == [(225, [1, 2], 210, 220, 2), (235, [3, 4], 220, 230, 4)]


def test_fixed_window_replay_of_old_messages_is_not_misfiled_as_late() -> None:
    # A consumer catching up: messages stamped long ago arrive in one burst at t=500.
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        arrive(500, 1, ts=100), arrive(500, 2, ts=105), arrive(500, 3, ts=112),
        arrive(500, 4, ts=125), arrive(500, 5, ts=131),
    )
    op = fixed_time_window(10, scheduler=scheduler)
    late = late_log(scheduler, op)

    results = scheduler.start(lambda: xs.pipe(op))

    assert emitted(results) == [
        (500, [1, 2], 100, 110, 2),  # closed by message 3 (ts 112 >= 110)
        (500, [3], 110, 120, 3),
        (500, [4], 120, 130, 4),
        (500.25, [5], 130, 140, 5),  # closed once the stream was quiet for 0.25 s
    ]
    assert late == []


def test_fixed_window_replay_with_quiet_zero_misfiles_the_backlog() -> None:
    # The contrast that motivates ``quiet``: closing on the clock alone declares
    # the rest of the burst late.
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(500, 1, ts=100), arrive(500, 2, ts=105))
    op = fixed_time_window(10, quiet=0, scheduler=scheduler)
    late = late_log(scheduler, op)

    results = scheduler.start(lambda: xs.pipe(op))

    assert emitted(results) == [(500, [1], 100, 110, 1)]
    assert late == [(500, 2)]


def test_fixed_windows_closed_together_ack_one_by_one() -> None:
    # With grace=10 neither replayed message closes [100, 110); both windows close
    # together at 500.25. The first window must not ack message 2, which is in the
    # second window and not processed yet (it used to ack 2 for both).
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(500, 1, ts=105), arrive(500, 2, ts=115))

    results = scheduler.start(lambda: xs.pipe(fixed_time_window(10, grace=10, scheduler=scheduler)))

    # Closed in one step, they commit together with the last one (one checkpoint
    # per step, so a restart replays the whole step): the first carries no ack.
    assert emitted(results) == [(500.25, [1], 100, 110, None), (500.25, [2], 110, 120, 2)]


def test_fixed_window_disposal_cancels_the_pending_window() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(211, 1), arrive(225, 2), arrive(900, 3))

    results = scheduler.start(lambda: xs.pipe(fixed_time_window(10, scheduler=scheduler)), disposed=215)

    assert scheduler.clock == 900
    assert results.messages == []


def test_fixed_window_emit_empty_disposal_stops_the_ticks() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(900, 1))

    results = scheduler.start(
        lambda: xs.pipe(fixed_time_window(10, emit_empty=True, scheduler=scheduler)), disposed=225
    )

    assert [t for t, *_ in emitted(results)] == [210, 220]


def test_fixed_window_completion_flushes_open_windows() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(211, 1), arrive(222, 2), arrive(223, 3), on_completed(224))

    results = scheduler.start(lambda: xs.pipe(fixed_time_window(10, grace=5, scheduler=scheduler)))

    assert emitted(results) == [
        (224, [1], 210, 220, None),  # flushed together: committed with the last one
        (224, [2, 3], 220, 230, 3),
        (224, "completed"),
    ]


def test_fixed_window_completion_does_not_invent_empty_windows() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(211, 1), on_completed(235))

    results = scheduler.start(
        lambda: xs.pipe(fixed_time_window(10, emit_empty=True, scheduler=scheduler))
    )

    assert emitted(results) == [
        (210, [], 200, 210, 0),
        (220, [1], 210, 220, 1),
        (230, [], 220, 230, 1),
        (235, "completed"),
    ]


# -- through the DSL -------------------------------------------------------------


def test_dsl_fixed_time_window_emits_at_each_window_end() -> None:
    vt = VirtualTime()
    s = vt.stream("readings")
    for t, v in [(1, 10), (2, 20), (10, 30), (19.5, 40), (31, 50)]:
        vt.append_at(t, s, {"v": v})

    out = vt.run(s.fixed_time_window(10).map(values), until=60)

    assert out == [Emission(10.0, [10, 20]), Emission(20.0, [30, 40]), Emission(40.0, [50])]
    assert s.position("default") == 5


def test_dsl_fixed_time_window_emit_empty() -> None:
    vt = VirtualTime()
    s = vt.stream("readings")
    vt.append_at(12, s, {"v": 1})

    out = vt.run(s.fixed_time_window(10, emit_empty=True).map(values), until=35)

    assert out == [Emission(10.0, []), Emission(20.0, [1]), Emission(30.0, [])]


def test_dsl_late_message_lands_in_the_late_stream() -> None:
    vt = VirtualTime()
    s = vt.stream("readings")
    vt.append_at(3, s, {"v": 1})
    append_stamped(vt, 14, s, ts=7, payload={"v": 2})  # its window [0, 10) went out at 10
    vt.append_at(15, s, {"v": 3})

    out = vt.run(s.fixed_time_window(10).map(values), until=40)

    assert out == [Emission(10.0, [1]), Emission(20.0, [3])]
    late = list(vt.stream("readings.late").read())
    assert [m.data for m in late] == [{"v": 2}]
    assert late[0].seq == 1
    assert s.position("default") == 3  # the late message counts as handled


def test_dsl_late_messages_go_to_a_late_callable() -> None:
    vt = VirtualTime()
    s = vt.stream("readings")
    vt.append_at(3, s, {"v": 1})
    append_stamped(vt, 14, s, ts=7, payload={"v": 2})
    seen: list[tuple[float, Message]] = []

    out = vt.run(s.fixed_time_window(10).late(lambda m: seen.append((vt.now, m))).map(values), until=40)

    assert out == [Emission(10.0, [1])]
    assert [(t, m.seq, m.data, m.ts.timestamp()) for t, m in seen] == [(14.0, 2, {"v": 2}, 7.0)]
    assert list(vt.stream("readings.late").read()) == []


def test_dsl_grace_admits_a_lagging_producer() -> None:
    vt = VirtualTime()
    s = vt.stream("readings")
    vt.append_at(3, s, {"v": 1})
    append_stamped(vt, 11, s, ts=8, payload={"v": 2})

    out = vt.run(s.fixed_time_window(10, grace=2).map(values), until=40)

    assert out == [Emission(12.0, [1, 2])]
    assert list(vt.stream("readings.late").read()) == []


def test_dsl_catch_up_replay_emits_windows_in_order_with_nothing_late() -> None:
    vt = VirtualTime()
    s = vt.stream("readings")
    for t, v in [(1, 1), (2, 2), (12, 3), (25, 4), (26, 5)]:
        vt.append_at(t, s, {"v": v})
    vt.advance_to(100)  # the pipeline starts long after the messages were written

    out = vt.run(s.fixed_time_window(10).map(lambda w: (seconds(w.start), values(w))), until=200)

    assert out == [
        Emission(100.0, (0.0, [1, 2])),
        Emission(100.0, (10.0, [3])),
        Emission(100.25, (20.0, [4, 5])),
    ]
    assert list(vt.stream("readings.late").read()) == []


def test_dsl_failing_window_is_dead_lettered_after_virtual_backoff_and_the_next_follows() -> None:
    vt = VirtualTime()
    s = vt.stream("readings")
    for t, v in [(1, 1), (4, "x"), (12, 3), (15, 4)]:
        vt.append_at(t, s, {"v": v})

    def total(window: Window) -> int:
        return sum(int(v) for v in values(window))  # ValueError on the window holding "x"

    out = vt.run(s.fixed_time_window(10).map(total).with_retries(max_retries=2, backoff=1), until=40)

    assert out == [Emission(20.0, 7)]  # [10, 20) still closes on time
    dead = list(vt.stream("readings.dead").read())
    assert [(m.ts.timestamp(), m.data["data"], m.data["attempts"]) for m in dead] == [
        (13.0, [{"v": 1}, {"v": "x"}], 3)  # window [0, 10) at 10, plus 1 s and 2 s of back-off
    ]
    assert dead[0].data["error"] == "ValueError: invalid literal for int() with base 10: 'x'"
    assert s.position("default") == 4


# -- bad arguments -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "hint"),
    [
        ({"interval": 0}, "fixed_time_window interval must be > 0, got 0"),
        ({"interval": -10}, "fixed_time_window interval must be > 0, got -10"),
        ({"interval": "5 parsecs"}, "fixed_time_window interval '5 parsecs' is not an interval; write e.g."),
        ({"interval": True}, "fixed_time_window interval must be seconds, a timedelta or a string"),
        ({"interval": None}, "got NoneType"),
        ({"interval": 10, "grace": -1}, "fixed_time_window grace must be >= 0, got -1"),
        ({"interval": 10, "quiet": "soon"}, "fixed_time_window quiet 'soon' is not an interval"),
    ],
)
def test_fixed_time_window_rejects_bad_arguments(kwargs: dict[str, Any], hint: str) -> None:
    with pytest.raises(ValueError) as info:
        fixed_time_window(**kwargs)
    assert isinstance(info.value, InvalidArgumentError)
    assert hint in str(info.value)


def test_dsl_fixed_time_window_validates_when_the_pipeline_is_built() -> None:
    with pytest.raises(InvalidArgumentError, match="interval must be > 0"):
        VirtualTime().stream("s").fixed_time_window(-5)


def test_a_backlog_replayed_right_after_subscribing_is_not_declared_late() -> None:
    """Subscribed just before a boundary; the replayed message (stamped before
    the boundary) arrives just after it. The empty-window timer must not close
    its window first: subscribing counts as activity for the quiet rule."""
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(210.05, 1, ts=205))
    op = fixed_time_window(10, emit_empty=True, scheduler=scheduler)
    late = late_log(scheduler, op)

    results = scheduler.start(lambda: xs.pipe(op), subscribed=209.9, disposed=225)

    assert late == []
    first = emitted(results)[0]
    assert first[1:4] == ([1], 200.0, 210.0)
    assert first[0] == pytest.approx(210.3)
