"""``count_window``: windows of exactly ``n`` messages, in seq order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from reactivex import abc

from minibatch_rx.durations import Interval, positive_int, to_seconds
from minibatch_rx.message import Message
from minibatch_rx.naming import label
from minibatch_rx.window import Window
from minibatch_rx.windows._engine import EPS, WindowCore, WindowOperator
from minibatch_rx.windows.clocks import ClockSpec
from minibatch_rx.windows.keys import Key, KeyBy, KeyedProgress
from minibatch_rx.windows.specs import WindowSpec


class _CountCore(WindowCore):
    hands_over = True  # each window is a new one, and the buffer it came from is let go

    def __init__(self, size: int, timeout: float | None) -> None:
        self.size = size
        self.timeout = timeout
        self.clocked = timeout is not None  # a flush on timeout is the clock's decision
        self.timeless = timeout is None
        self.buffer: list[Message] = []
        self.opened_at = 0.0

    def on_message(self, message: Message, now: float) -> list[Window]:
        if not self.buffer and self.timeout is not None:
            self.opened_at = opened(message, now)
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

    def deadline_moved(self) -> bool:
        # Only the message that opened a window set a deadline (its timeout's).
        return len(self.buffer) == 1

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


def opened(message: Message, now: float) -> float:
    """When a window's timeout starts: its first message's ingest time, which
    a replay after a restart finds again (the scheduler time it was read at
    would restart the wait), but never after ``now``."""
    ts = message.ts
    return now if ts is None else min(now, ts.timestamp())


class _KeyedCountCore(WindowCore):
    """Count windows per key. Buffers are kept in the order they opened, which
    is also the order of their first seqs: the oldest is first, so the lowest
    held seq and the next timeout are read in O(1), and a timeout flush is
    journaled as "every buffer opened up to seq X"."""

    clocked = True  # what each key emitted past the position is checkpointed (KeyedProgress)

    def __init__(self, size: int, timeout: float | None, key_by: KeyBy) -> None:
        self.size, self.timeout = size, timeout
        self.buffers: dict[Key, list[Message]] = {}
        self.opened: dict[Key, float] = {}
        self.progress = KeyedProgress(key_by)
        self.flushed_upto = 0

    def on_message(self, message: Message, now: float) -> list[Window]:
        placed, key = self.progress.key_of(message)
        if not placed:
            return []
        buffer = self.buffers.get(key)
        if buffer is None:
            buffer = self.buffers[key] = [message]
            self.opened[key] = opened(message, now) if self.timeout is not None else now
        else:
            buffer.append(message)
        if len(buffer) < self.size:
            return []
        return [self._flush(key)]

    def _flush(self, key: Key) -> Window:
        buffer = self.buffers.pop(key)
        del self.opened[key]
        self.progress.emitted(key, buffer[-1].seq)
        return Window(tuple(buffer), buffer[0].stream, key=key)

    def deadline(self) -> float | None:
        if self.timeout is None or not self.opened:
            return None
        return next(iter(self.opened.values())) + self.timeout

    def on_timer(self, now: float, forced: bool = False) -> list[Window]:
        out: list[Window] = []
        while self.timeout is not None and self.opened:
            key, opened = next(iter(self.opened.items()))
            if not forced and now < opened + self.timeout - EPS:
                break
            self.flushed_upto = self.buffers[key][0].seq
            out.append(self._flush(key))
        return out

    def decision(self) -> Any:
        return self.flushed_upto

    def replay_timer(self, at: float, detail: Any) -> list[Window]:
        out: list[Window] = []
        while self.buffers:
            key, buffer = next(iter(self.buffers.items()))
            if detail is not None and buffer[0].seq > int(detail):
                break
            out.append(self._flush(key))
        return out

    def on_complete(self, now: float) -> list[Window]:
        return [self._flush(key) for key in list(self.buffers)]

    def held_min_seq(self) -> int | None:
        return next(iter(self.buffers.values()))[0].seq if self.buffers else None

    def rejected(self) -> list[tuple[Message, str]]:
        return self.progress.rejected()

    def snapshot(self) -> Any:
        return self.progress.snapshot(self.held_min_seq())

    def restore(self, state: Any) -> None:
        self.progress.restore(state)


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

    def operator(self, scheduler: abc.SchedulerBase | None = None, *, key_by: KeyBy | None = None,
                 clock: ClockSpec | None = None) -> WindowOperator:
        self.check(key_by, clock)
        n, timeout = self.n, self.timeout_s
        if key_by is not None:
            return WindowOperator(lambda: _KeyedCountCore(n, timeout, key_by), scheduler)
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
