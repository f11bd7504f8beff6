"""Custom WindowEmitter strategies (the original package's extension point) in virtual time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import pytest
from reactivex.notification import OnError
from reactivex.testing import TestScheduler
from reactivex.testing.mockobserver import MockObserver

from minibatch_rx import InvalidArgumentError, Message, Window, WindowEmitter
from minibatch_rx.testing import Emission, VirtualTime
from minibatch_rx.windows import Custom
from windows.marbles import msg, next_values, notifications, on_completed, on_next


class SortedWindow(WindowEmitter):
    """The original README's example: sort pending messages by value and emit
    only multiples of 2, in batches of ``interval`` messages."""

    def window_ready(self) -> tuple[bool, tuple[Any, ...]]:
        data: list[Message] = []
        for message in sorted(self.buffer, key=lambda m: m.data["value"]):
            if message.data["value"] % 2 == 0:
                data.append(message)
                if len(data) >= self.interval:
                    break
        self._data = data
        return len(self._data) == self.interval, ()

    def query(self, *args: Any) -> Iterable[Message]:
        return self._data


class SortedOnTick(SortedWindow):
    """SortedWindow that only decides on the poll ticks (whole multiples of 10 s),
    so several even values can be pending and the sort picks the smallest."""

    def poll_interval(self) -> float:
        return 10.0

    def window_ready(self) -> tuple[bool, tuple[Any, ...]]:
        if self.now.timestamp() % 10:
            return False, ()
        return super().window_ready()


class NotMessages(WindowEmitter):
    def query(self, *args: Any) -> Iterable[Any]:
        return [m.data for m in self.buffer]


def feed(*values: tuple[float, int]) -> list[Any]:
    """``on_next`` notifications: message i (from 1) with ``value`` at virtual ``time``."""
    return [on_next(t, msg(seq, t, {"value": v})) for seq, (t, v) in enumerate(values, start=1)]


def values_and_ack(window: Window) -> tuple[Any, ...]:
    return [d["value"] for d in window.data], window.ack


def emitted(observer: MockObserver[Window]) -> list[tuple[Any, ...]]:
    """Each notification as ``(time, values, ack)`` or ``(time, 'completed')``."""
    return notifications(observer, values_and_ack)


def error_at(observer: MockObserver[Window], index: int) -> Exception:
    """The exception of the ``index``-th notification, which must be an error."""
    note = observer.messages[index].value
    assert isinstance(note, OnError), f"notification {index} is {note!r}, not an error"
    return note.exception


def test_sorted_window_emits_pairs_of_even_values_as_they_become_available() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        feed((201, 7), (202, 4), (203, 3), (204, 8), (205, 2), (206, 6), (207, 5))
    )
    emitter = SortedWindow("s", interval=2)

    results = scheduler.start(lambda: xs.pipe(emitter.operator(scheduler)))

    # Windows hold the messages in query()'s order (sorted by value). The odd
    # values older than a window's newest message (7 and 3) are skipped and
    # acknowledged with it; 5 is newer than every window, so it stays pending.
    assert emitted(results) == [(204, [4, 8], 4), (206, [2, 6], 6)]
    assert [m.data["value"] for m in emitter.buffer] == [5]


def test_sorted_window_picks_the_smallest_even_values_on_each_poll() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        feed((201, 8), (202, 1), (203, 6), (204, 4), (215, 10), (216, 2))
    )
    emitter = SortedOnTick("s", interval=2)

    results = scheduler.start(lambda: xs.pipe(emitter.operator(scheduler)))

    # Tick 210: evens 8, 6, 4 pending; the two smallest go. 8 (message 1) is
    # older than the window's newest message (4, message 4), so the skipping
    # rule drops it with 1: the window is acknowledged up to message 4.
    # Tick 220: 10 and 2 pending -> 2, 10.
    assert emitted(results) == [(210, [4, 6], 4), (220, [2, 10], 6)]
    assert emitter.buffer == []


def test_default_window_emitter_emits_each_message_at_arrival() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(*feed((203, 1), (207, 2), (207.5, 3)), on_completed(300))

    results = scheduler.start(lambda: xs.pipe(WindowEmitter("s").operator(scheduler)))

    assert emitted(results) == [(203, [1], 1), (207, [2], 2), (207.5, [3], 3), (300, "completed")]
    assert all(w.stream == "s" for w in next_values(results))


def test_emitter_is_polled_every_interval_with_now_set_to_the_virtual_clock() -> None:
    polls: list[float] = []

    class Recording(WindowEmitter):
        def window_ready(self) -> tuple[bool, tuple[Any, ...]]:
            polls.append(self.now.timestamp())
            return False, ()

    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(feed((212, 1)))

    scheduler.start(lambda: xs.pipe(Recording("s", interval="5s").operator(scheduler)), disposed=221)

    assert polls == [205, 210, 212, 215, 220]  # ticks, plus one poll per message; none after 221


def test_emitter_windows_are_not_emitted_after_disposal() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(feed((201, 8), (202, 1), (203, 6), (204, 4), (900, 2)))

    results = scheduler.start(
        lambda: xs.pipe(SortedOnTick("s", interval=2).operator(scheduler)), disposed=209
    )

    assert scheduler.clock == 900
    assert results.messages == []


def test_query_returning_non_messages_is_a_type_error() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(feed((203, 1), (204, 2)))

    results = scheduler.start(lambda: xs.pipe(NotMessages("s").operator(scheduler)))

    assert len(results.messages) == 1
    error = error_at(results, 0)
    assert (results.messages[0].time, type(error)) == (203, TypeError)
    assert str(error) == "NotMessages.query() must return Messages from self.buffer, got dict"


# -- through the DSL -------------------------------------------------------------


def test_dsl_sorted_window() -> None:
    vt = VirtualTime()
    s = vt.stream("numbers")
    for t, v in [(1, 7), (2, 4), (3, 3), (4, 8), (5, 2), (6, 6)]:
        vt.append_at(t, s, {"value": v})

    pipeline = s.pipeline().window(SortedWindow("numbers", interval=2).operator)
    out = vt.run(pipeline.map(lambda w: [d["value"] for d in w.data]), until=20)

    assert out == [Emission(4.0, [4, 8]), Emission(6.0, [2, 6])]
    assert s.position("default") == 6  # the odd 7 and 3 were skipped: nothing is held back


def test_dsl_query_returning_non_messages_fails_the_run_with_type_error() -> None:
    vt = VirtualTime()
    s = vt.stream("numbers")
    vt.append_at(1, s, {"value": 1})

    with pytest.raises(TypeError, match=r"query\(\) must return Messages"):
        vt.run(s.pipeline().window(NotMessages("numbers").operator).map(len), until=10)


# -- emit_empty, the original Buffer, and query() safety ---------------------------


class Nothing(WindowEmitter):
    """Always ready, never returns a message."""

    def window_ready(self) -> tuple[bool, tuple[Any, ...]]:
        return True, ()

    def query(self, *args: Any) -> Iterable[Message]:
        return []


def test_an_empty_query_makes_no_window_unless_emit_empty() -> None:
    """As in the original: ``if qs or self.emit_empty: emit``."""
    def run(emit_empty: bool) -> list[tuple[Any, ...]]:
        scheduler = TestScheduler()
        xs = scheduler.create_hot_observable(on_completed(225))
        emitter = Nothing("s", interval=10, emit_empty=emit_empty)
        return emitted(scheduler.start(lambda: xs.pipe(emitter.operator(scheduler))))

    assert run(emit_empty=False) == [(225, "completed")]
    assert run(emit_empty=True) == [(210, [], 0), (220, [], 0), (225, "completed")]


def test_the_original_buffer_query_sees_the_pending_messages() -> None:
    from minibatch_rx.compat import Buffer

    seen: list[list[int]] = []

    class Peek(WindowEmitter):
        def window_ready(self) -> tuple[bool, tuple[Any, ...]]:
            qs = Buffer.objects.no_cache().filter(processed=False)
            seen.append([m.data["value"] for m in qs])
            return qs.count() == 2, ()

    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(feed((201, 5), (202, 6), (203, 7)))
    results = scheduler.start(lambda: xs.pipe(Peek("s", interval=100).operator(scheduler)))

    assert emitted(results) == [(202, [5, 6], 2)]
    # Asked again right after emitting (nothing pending), then at 7's arrival.
    assert seen[:4] == [[5], [5, 6], [], [7]]


def test_query_returning_an_already_emitted_message_is_refused() -> None:
    class Again(WindowEmitter):
        first: ClassVar[list[Message]] = []

        def query(self, *args: Any) -> Iterable[Message]:
            if not self.first:
                self.first.extend(self.buffer)
            return list(self.first)

    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(feed((201, 1), (202, 2)))
    results = scheduler.start(lambda: xs.pipe(Again("s").operator(scheduler)))

    assert emitted(results)[0] == (201, [1], 1)
    error = error_at(results, 1)
    assert isinstance(error, InvalidArgumentError)
    assert "message 1, which is not pending" in str(error)


def test_two_emitter_classes_get_different_default_consumer_names() -> None:
    # The label (and so the default consumer name) named the class defining
    # .operator, WindowEmitter, for every emitter: two strategies shared a position.
    class Evens(WindowEmitter):
        """One of two strategies written by subclassing the same base."""

    class Odds(WindowEmitter):
        """The other."""

    evens, odds = Custom(Evens("names").operator).label, Custom(Odds("names").operator).label
    assert evens != odds
    assert "Evens" in evens and "Odds" in odds
