"""``count_window``: windows of exactly ``n`` messages, in seq order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from reactivex import abc

from minibatch_rx.durations import Interval, positive_int, to_seconds
from minibatch_rx.message import Message
from minibatch_rx.naming import label
from minibatch_rx.window import Window
from minibatch_rx.windows._engine import EPS, WindowCore, WindowOperator
from minibatch_rx.windows.specs import WindowSpec


class _CountCore(WindowCore):
    def __init__(self, size: int, timeout: float | None) -> None:
        self.size = size
        self.timeout = timeout
        self.clocked = timeout is not None  # a flush on timeout is the clock's decision
        self.buffer: list[Message] = []
        self.opened_at = 0.0

    def on_message(self, message: Message, now: float) -> list[Window]:
        if not self.buffer:
            self.opened_at = now
        self.buffer.append(message)
        if len(self.buffer) < self.size:
            return []
        return [self._flush()]

    def _flush(self) -> Window:
        window = Window(tuple(self.buffer), self.buffer[0].stream)
        self.buffer = []
        return window

    def deadline(self) -> float | None:
        if self.timeout is None or not self.buffer:
            return None
        return self.opened_at + self.timeout

    def on_timer(self, now: float, forced: bool = False) -> list[Window]:
        if forced:  # replaying a flush an earlier run made on its timeout
            return [self._flush()] if self.buffer else []
        deadline = self.deadline()
        # The timer fires at the deadline rounded to a microsecond (datetime), which
        # can be a hair before the float deadline: compare with slack, or the window
        # would wait for the next tick (a busy loop, or a 1 s jump under TestScheduler).
        return [self._flush()] if deadline is not None and now >= deadline - EPS else []

    def on_complete(self, now: float) -> list[Window]:
        return [self._flush()] if self.buffer else []

    def held_min_seq(self) -> int | None:
        return self.buffer[0].seq if self.buffer else None


@dataclass(frozen=True)
class Count(WindowSpec):
    """Windows of exactly ``n`` messages; with ``timeout``, a partial window is
    flushed once its first message has waited that long. Consumer groups share them."""

    n: int
    timeout: Interval | None = None
    timeout_s: float | None = field(init=False, repr=False, compare=False)
    groupable: ClassVar[bool] = True

    def __post_init__(self) -> None:
        positive_int(self.n, "count_window size n")
        seconds = None if self.timeout is None else to_seconds(self.timeout, "count_window timeout")
        object.__setattr__(self, "timeout_s", seconds)

    @property
    def label(self) -> str:
        return label("count_window", self.n, self.timeout)

    def operator(self, scheduler: abc.SchedulerBase | None = None) -> WindowOperator:
        n, timeout = self.n, self.timeout_s
        return WindowOperator(lambda: _CountCore(n, timeout), scheduler)


def count_window(
    n: int, timeout: Interval | None = None, *, scheduler: abc.SchedulerBase | None = None
) -> WindowOperator:
    """Windows of exactly ``n`` messages, in seq order.

    With ``timeout``, a partial window is emitted once its first message has
    waited ``timeout`` (scheduler time), so an idle stream still flushes. A
    completing source flushes its last partial window.

    Marble (n=2, timeout=3)::

        messages: -a-b-c--------d-e-|
        windows:  ---[ab]---[c]-----[de]|

    >>> import reactivex
    >>> from minibatch_rx.message import Message
    >>> msgs = [Message('s', i, None, {'i': i}) for i in (1, 2, 3)]  # type: ignore[arg-type]
    >>> out = []
    >>> _ = reactivex.from_iterable(msgs).pipe(count_window(2)).subscribe(lambda w: out.append(w.data))
    >>> out
    [[{'i': 1}, {'i': 2}], [{'i': 3}]]
    """
    return Count(n, timeout).operator(scheduler)
