"""``relaxed_time_window``: every interval, whatever arrived since the last one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reactivex import abc

from minibatch_rx.durations import Interval, to_seconds
from minibatch_rx.errors import InvalidArgumentError
from minibatch_rx.message import Message
from minibatch_rx.naming import label
from minibatch_rx.window import Window
from minibatch_rx.windows._engine import EPS, WindowCore, WindowOperator, to_datetime
from minibatch_rx.windows.clocks import ClockSpec
from minibatch_rx.windows.keys import KeyBy
from minibatch_rx.windows.specs import WindowSpec, per_key


class _RelaxedCore(WindowCore):
    clocked = True
    waits_for_catch_up = False

    def __init__(self, interval: float, emit_empty: bool) -> None:
        self.interval = interval
        self.emit_empty = emit_empty
        self.buffer: list[Message] = []
        self.started = 0.0
        self.restored = False

    def start(self, now: float) -> list[Window]:
        if not self.restored:
            self.started = now
        return []

    def snapshot(self) -> Any:
        return {"started": self.started}

    def restore(self, state: Any) -> None:
        self.started = float(state["started"])
        self.restored = True

    def on_message(self, message: Message, now: float) -> list[Window]:
        self.stream = message.stream
        self.buffer.append(message)
        return []

    def deadline(self) -> float | None:
        return self.started + self.interval

    def on_timer(self, now: float, forced: bool = False) -> list[Window]:
        end = self.started + self.interval
        if forced:  # replaying an emission an earlier run made at `now`
            end = now
        elif now < end - EPS:
            return []
        window = Window(tuple(self.buffer), self.stream, to_datetime(self.started), to_datetime(end),
                        tag=None if self.buffer else f"{to_datetime(self.started).isoformat()}")
        self.buffer = []
        # Step from the previous boundary, not from `now`, so windows do not drift.
        self.started = max(end, now - self.interval)
        return [window] if window.messages or self.emit_empty else []

    def on_complete(self, now: float) -> list[Window]:
        if not self.buffer:
            return []
        window = Window(tuple(self.buffer), self.stream, to_datetime(self.started), to_datetime(now))
        self.buffer = []
        return [window]

    def held_min_seq(self) -> int | None:
        return self.buffer[0].seq if self.buffer else None


@dataclass(frozen=True)
class Relaxed(WindowSpec):
    """Every ``interval`` of scheduler time, whatever arrived since the last
    window; see :func:`relaxed_time_window`."""

    interval: Interval
    emit_empty: bool = False

    def __post_init__(self) -> None:
        self.operator()  # validates every argument

    @property
    def label(self) -> str:
        return label("relaxed_time_window", self.interval, self.emit_empty)

    def check(self, key_by: KeyBy | None, clock: ClockSpec | None) -> None:
        super().check(key_by, clock)
        if self.emit_empty and key_by is not None:
            raise InvalidArgumentError("relaxed_time_window(emit_empty=True) cannot run per key "
                                       "(key_by): a key with no message has no window to emit")

    def operator(self, scheduler: abc.SchedulerBase | None = None, *, key_by: KeyBy | None = None,
                 clock: ClockSpec | None = None) -> WindowOperator:
        self.check(key_by, clock)
        seconds = to_seconds(self.interval, "relaxed_time_window interval")
        emit_empty = self.emit_empty
        operator = WindowOperator(lambda: _RelaxedCore(seconds, emit_empty), scheduler)
        return operator if key_by is None else per_key(operator, key_by)


def relaxed_time_window(
    interval: Interval, emit_empty: bool = False, *, scheduler: abc.SchedulerBase | None = None
) -> WindowOperator:
    """Every ``interval`` of scheduler time, one window of everything that
    arrived since the previous one, late messages included (by arrival, not
    by ``ts``). ``start``/``end`` are the scheduler times the window covers.

    Marble (interval=10, subscribed at 0)::

        messages: --a--b------c-------|
        windows:  ----------[ab]------[c]|   (at t=10, 20)

    Example::

        stream('clicks').relaxed_time_window('5s').map(len).sink(print)
    """
    return Relaxed(interval, emit_empty).operator(scheduler)
