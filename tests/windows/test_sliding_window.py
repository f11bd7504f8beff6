"""sliding_window (by count and by time) in virtual time: the operator on a
TestScheduler, and through the DSL."""

from __future__ import annotations

from typing import Any

import pytest
from reactivex.testing import TestScheduler

from minibatch_rx import InvalidArgumentError, Message, sliding_window
from minibatch_rx.testing import Emission, VirtualTime, seconds
from windows.marbles import append_stamped, arrive, emitted, late_log, on_completed, values

# -- by count ----------------------------------------------------------------------


def test_sliding_count_size_3_step_1_overlaps() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(*(arrive(200 + 10 * seq, seq) for seq in range(1, 6)))

    results = scheduler.start(lambda: xs.pipe(sliding_window(3, 1, scheduler=scheduler)))

    # Each ack stops before the first message a later window still needs.
    assert emitted(results) == [
        (230, [1, 2, 3], None, None, 1),
        (240, [2, 3, 4], None, None, 2),
        (250, [3, 4, 5], None, None, 3),
    ]


def test_sliding_count_size_2_step_3_hops_over_messages() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(*(arrive(200 + seq, seq) for seq in range(1, 8)))

    results = scheduler.start(lambda: xs.pipe(sliding_window(2, 3, scheduler=scheduler)))

    # Windows start at messages 1, 4, 7; messages 3 and 6 fall in the gaps.
    assert emitted(results) == [
        (202, [1, 2], None, None, 2),
        (205, [4, 5], None, None, 5),
    ]


def test_sliding_count_with_step_equal_to_size_tumbles() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(*(arrive(200 + seq, seq) for seq in range(1, 6)))

    results = scheduler.start(lambda: xs.pipe(sliding_window(2, 2, scheduler=scheduler)))

    assert emitted(results) == [(202, [1, 2], None, None, 2), (204, [3, 4], None, None, 4)]


def test_sliding_count_completion_drops_trailing_partial_windows() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(201, 1), arrive(202, 2), arrive(203, 3), on_completed(204))

    results = scheduler.start(lambda: xs.pipe(sliding_window(3, 2, scheduler=scheduler)))

    assert emitted(results) == [(203, [1, 2, 3], None, None, 2), (204, "completed")]


def test_sliding_count_disposal_stops_emissions() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(*(arrive(200 + seq, seq) for seq in range(1, 6)))

    results = scheduler.start(lambda: xs.pipe(sliding_window(2, 1, scheduler=scheduler)), disposed=202.5)

    assert emitted(results) == [(202, [1, 2], None, None, 1)]


# -- by time -----------------------------------------------------------------------


def test_sliding_time_puts_a_message_in_every_window_that_covers_it() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(212, 1), arrive(217, 2), arrive(223, 3))

    results = scheduler.start(lambda: xs.pipe(sliding_window(10, 5, by="time", scheduler=scheduler)))

    assert emitted(results) == [
        (215, [1], 205, 215, 0),  # message 1 is still needed by [210, 220)
        (220, [1, 2], 210, 220, 1),
        (225, [2, 3], 215, 225, 2),
        (230, [3], 220, 230, 3),
    ]


def test_sliding_time_bounds_are_half_open() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(215, 1))

    results = scheduler.start(lambda: xs.pipe(sliding_window(10, 5, by="time", scheduler=scheduler)))

    # t=215 is in [210, 220) and [215, 225), not in [205, 215).
    assert emitted(results) == [(220, [1], 210, 220, 0), (225, [1], 215, 225, 1)]


def test_sliding_time_bounds_are_exact_for_fractional_steps() -> None:
    # In float arithmetic floor(200.6 / 0.1) == 2005: t=200.6 used to land in
    # [200.3, 200.6), which excludes it, and miss [200.6, 200.9). The grid now
    # works in integer microseconds.
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(200.6, 1))

    results = scheduler.start(
        lambda: xs.pipe(sliding_window("300ms", "100ms", by="time", quiet=0, scheduler=scheduler))
    )

    assert [(t, start, end) for t, _, start, end, _ in emitted(results)] == [
        (200.7, 200.4, 200.7),
        (200.8, 200.5, 200.8),
        (200.9, 200.6, 200.9),
    ]


def test_sliding_time_emits_no_empty_windows() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(212, 1), arrive(263, 2))

    results = scheduler.start(lambda: xs.pipe(sliding_window(10, 5, by="time", scheduler=scheduler)))

    # Nothing for the eight empty windows between [210, 220) and [255, 265).
    assert emitted(results) == [
        (215, [1], 205, 215, 0),
        (220, [1], 210, 220, 1),
        (265, [2], 255, 265, 1),
        (270, [2], 260, 270, 2),
    ]


def test_sliding_time_hopping_windows_skip_messages_in_the_gaps() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(212, 1), arrive(217, 2), arrive(223, 3))
    op = sliding_window(5, 10, by="time", scheduler=scheduler)
    late = late_log(scheduler, op)

    results = scheduler.start(lambda: xs.pipe(op))

    # Windows [210, 215) and [220, 225): message 2 (t=217) is in none and is not late.
    assert emitted(results) == [(215, [1], 210, 215, 1), (225, [3], 220, 225, 3)]
    assert late == []


def test_sliding_time_late_message_is_reported_and_kept_for_its_open_windows() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        arrive(212, 1),
        arrive(216, 2, ts=213),  # [205, 215) went out at 215; [210, 220) is still open
        arrive(233, 3, ts=207),  # every window covering t=207 went out: late only
    )
    op = sliding_window(10, 5, by="time", scheduler=scheduler)
    late = late_log(scheduler, op)

    results = scheduler.start(lambda: xs.pipe(op))

    assert emitted(results) == [(215, [1], 205, 215, 0), (220, [1, 2], 210, 220, 2)]
    assert late == [(216, 2), (233, 3)]


def test_sliding_time_grace_delays_emission() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(212, 1), arrive(218, 2, ts=214))

    results = scheduler.start(
        lambda: xs.pipe(sliding_window(10, 5, by="time", grace=4, scheduler=scheduler))
    )

    assert emitted(results) == [(219, [1, 2], 205, 215, 0), (224, [1, 2], 210, 220, 2)]


def test_sliding_time_replay_is_not_misfiled_as_late() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        arrive(500, 1, ts=101), arrive(500, 2, ts=104), arrive(500, 3, ts=108), arrive(500, 4, ts=113)
    )
    op = sliding_window(6, 3, by="time", scheduler=scheduler)
    late = late_log(scheduler, op)

    results = scheduler.start(lambda: xs.pipe(op))

    assert emitted(results) == [
        (500, [1], 96, 102, 0),        # closed by message 2 (ts 104 >= 102)
        (500, [1, 2], 99, 105, None),  # closed with the next one by message 3: committed with it
        (500, [2], 102, 108, 2),       # ts 108 is not in [102, 108)
        (500, [3], 105, 111, 2),
        (500.25, [3, 4], 108, 114, None),  # the rest once the stream was quiet for 0.25 s
        (500.25, [4], 111, 117, 4),
    ]
    assert late == []


def test_sliding_time_disposal_cancels_pending_windows() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(212, 1), arrive(900, 2))

    results = scheduler.start(
        lambda: xs.pipe(sliding_window(10, 5, by="time", scheduler=scheduler)), disposed=216
    )

    assert scheduler.clock == 900
    assert emitted(results) == [(215, [1], 205, 215, 0)]


def test_sliding_time_completion_flushes_every_open_window() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(212, 1), arrive(217, 2), on_completed(218))

    results = scheduler.start(lambda: xs.pipe(sliding_window(10, 5, by="time", scheduler=scheduler)))

    assert emitted(results) == [
        (215, [1], 205, 215, 0),
        (218, [1, 2], 210, 220, None),  # flushed together: committed with the last one
        (218, [2], 215, 225, 2),
        (218, "completed"),
    ]


# -- through the DSL -------------------------------------------------------------


def test_dsl_sliding_by_count() -> None:
    vt = VirtualTime()
    s = vt.stream("prices")
    for t, v in [(1, 10), (2, 20), (3, 30), (4, 40)]:
        vt.append_at(t, s, {"v": v})

    out = vt.run(s.sliding_window(3, 1).map(values), until=10)

    assert out == [Emission(3.0, [10, 20, 30]), Emission(4.0, [20, 30, 40])]
    assert s.position("default") == 2  # messages 3 and 4 still belong to future windows


def test_dsl_sliding_by_time_with_a_late_message() -> None:
    vt = VirtualTime()
    s = vt.stream("prices")
    vt.append_at(2, s, {"v": 1})
    vt.append_at(6, s, {"v": 2})
    append_stamped(vt, 16, s, ts=4, payload={"v": 3})  # windows over t=4 ended by 10
    late: list[Message] = []

    out = vt.run(
        s.sliding_window(10, 5, by="time").late(late.append).map(lambda w: (seconds(w.start), values(w))),
        until=30,
    )

    assert out == [Emission(5.0, (-5.0, [1])), Emission(10.0, (0.0, [1, 2])), Emission(15.0, (5.0, [2]))]
    assert [(m.seq, m.data) for m in late] == [(3, {"v": 3})]


def test_dsl_sliding_by_time_late_message_goes_to_the_late_stream() -> None:
    vt = VirtualTime()
    s = vt.stream("prices")
    vt.append_at(2, s, {"v": 1})
    append_stamped(vt, 16, s, ts=4, payload={"v": 2})

    vt.run(s.sliding_window(10, 5, by="time").map(values), until=30)

    assert [m.data for m in vt.stream("prices.late").read()] == [{"v": 2}]


# -- bad arguments -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "hint"),
    [
        ((0, 1), {}, "sliding_window size must be an int > 0, got 0"),
        ((3, -1), {}, "sliding_window step must be an int > 0, got -1"),
        (("abc", 1), {}, "sliding_window size must be an int > 0, got 'abc'"),
        ((True, 1), {}, "sliding_window size must be an int > 0, got True"),
        ((3, 1), {"by": "bogus"}, "sliding_window by must be 'count' or 'time', got 'bogus'"),
        ((-10, 5), {"by": "time"}, "sliding_window size must be > 0, got -10"),
        (("10s", "5 parsecs"), {"by": "time"}, "sliding_window step '5 parsecs' is not an interval"),
        ((10, 5), {"by": "time", "grace": -1}, "sliding_window grace must be >= 0, got -1"),
        ((10, True), {"by": "time"}, "sliding_window step must be seconds, a timedelta or a string"),
    ],
)
def test_sliding_window_rejects_bad_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any], hint: str
) -> None:
    with pytest.raises(ValueError) as info:
        sliding_window(*args, **kwargs)
    assert isinstance(info.value, InvalidArgumentError)
    assert hint in str(info.value)


def test_dsl_sliding_window_validates_when_the_pipeline_is_built() -> None:
    with pytest.raises(InvalidArgumentError, match="by must be 'count' or 'time'"):
        VirtualTime().stream("s").sliding_window(3, 1, by="rows")  # type: ignore[arg-type]
