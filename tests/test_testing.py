"""minibatch_rx.testing: the public marble helpers, their time units and the
200-tick offset of ``TestScheduler.start`` they document."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from reactivex.testing import ReactiveTest, TestScheduler
from windows import marbles

import minibatch_rx.testing as testing
from minibatch_rx import Window, count_window, fixed_time_window
from minibatch_rx.testing import (
    CREATED,
    DISPOSED,
    SUBSCRIBED,
    VirtualTime,
    arrive,
    emitted,
    late_log,
    message,
    next_values,
    notifications,
    on_completed,
    on_error,
    on_next,
    seconds,
)


def test_message_is_stamped_at_a_virtual_time_in_seconds() -> None:
    m = message(7, 212.5, {"v": 1}, stream="orders")

    assert (m.stream, m.seq, m.data) == ("orders", 7, {"v": 1})
    assert m.ts == datetime(1970, 1, 1, 0, 3, 32, 500000, tzinfo=UTC)
    assert seconds(m.ts) == 212.5
    assert message(3, 0).data == {"n": 3}


def test_virtual_seconds_are_the_schedulers_clock() -> None:
    scheduler = TestScheduler()
    scheduler.advance_to(212.5)

    assert scheduler.now == message(1, 212.5).ts


def test_arrive_is_a_message_notification_at_a_fractional_time_stamped_earlier_if_asked() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(210.25, 1), arrive(215, 2, ts=205), on_completed(230))

    observer = scheduler.start(lambda: xs)

    assert [record.time for record in observer.messages] == [210.25, 215, 230]
    assert [(m.seq, seconds(m.ts)) for m in next_values(observer)] == [(1, 210.25), (2, 205.0)]


def test_the_200_tick_offset_of_start_is_what_the_module_documents() -> None:
    assert (CREATED, SUBSCRIBED, DISPOSED) == (
        ReactiveTest.created, ReactiveTest.subscribed, ReactiveTest.disposed
    ) == (100, 200, 1000)
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        on_next(150, "before the subscription"), on_next(210, "seen"), on_next(1001, "after disposal")
    )

    observer = scheduler.start(lambda: xs)

    assert next_values(observer) == ["seen"]
    assert testing.__doc__ is not None
    assert "subscribes at :data:`SUBSCRIBED` (200)" in testing.__doc__
    assert "disposes at :data:`DISPOSED` (1000)" in testing.__doc__


def test_emitted_describes_windows_completion_and_errors_as_tuples() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(210, 1), arrive(211, 2), arrive(212, 3), on_completed(220))

    observer = scheduler.start(lambda: xs.pipe(count_window(2, scheduler=scheduler)))

    assert emitted(observer) == [
        (211, [1, 2], None, None, 2),
        (220, [3], None, None, 3),
        (220, "completed"),
    ]
    again = TestScheduler()
    failing = again.create_hot_observable(on_next(210, "x"), on_error(230, ValueError("boom")))
    errors = notifications(again.start(lambda: failing), lambda value: (value,))
    assert errors[0] == (210, "x")
    assert [(time, kind, str(exc)) for time, kind, exc in errors[1:]] == [(230, "error", "boom")]


def test_late_log_records_when_each_late_message_was_reported() -> None:
    scheduler = TestScheduler()
    op = fixed_time_window(10, scheduler=scheduler)
    late = late_log(scheduler, op)
    xs = scheduler.create_hot_observable(arrive(211, 1), arrive(225, 2, ts=218), arrive(226, 3))

    observer = scheduler.start(lambda: xs.pipe(op))

    assert late == [(225, 2)]
    windows: list[Window] = next_values(observer)
    assert [[m.seq for m in w.messages] for w in windows] == [[1], [3]]  # 2 is in neither


def test_virtual_time_append_at_can_stamp_a_lagging_producers_time() -> None:
    vt = VirtualTime()
    s = vt.stream("lagging")
    vt.append_at(30, s, {"n": 1}, stamp=25)
    vt.append_at(31, s, {"n": 2})

    vt.advance_to(40)

    assert [(m.data["n"], seconds(m.ts)) for m in s.read()] == [(1, 25.0), (2, 31.0)]
    s.append({"n": 3})  # the store's own clock is back: the virtual now
    assert [seconds(m.ts) for m in s.read()][-1] == 40.0


def test_the_window_tests_marbles_are_the_public_helpers() -> None:
    assert marbles.arrive is arrive
    assert marbles.emitted is emitted
    assert marbles.msg is message
    assert marbles.on_next is on_next


@pytest.mark.parametrize("helper", [name for name in testing.__all__ if not name.isupper()])
def test_every_public_helper_is_documented_with_its_own_docstring(helper: str) -> None:
    assert getattr(testing, helper).__doc__


def test_a_run_after_an_escaped_exception_runs_again() -> None:
    class Crash(BaseException):
        """Escapes every stage, as a process kill would end the run."""

    vt = VirtualTime()
    s = vt.stream("escaped")
    for t in (1, 2, 3, 4):
        vt.append_at(t, s, {"t": t})
    crashed: list[int] = []

    def once(value: list[int]) -> list[int]:
        if value == [2] and not crashed:
            crashed.append(2)
            raise Crash
        return value

    pipeline = s.count_window(1).map(lambda w: [d["t"] for d in w.data]).map(once)
    with pytest.raises(Crash):
        vt.run(pipeline, until=10)
    # The restart resumes after window [1] (committed) and reaches the end of time.
    assert [e.value for e in vt.run(pipeline, until=10)] == [[2], [3], [4]]
    assert vt.now == 10
