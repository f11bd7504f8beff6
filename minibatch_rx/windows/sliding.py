"""``sliding_window``: overlapping windows, by message count or by time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from reactivex import abc

from minibatch_rx.durations import Interval, positive_int, to_seconds
from minibatch_rx.errors import InvalidArgumentError
from minibatch_rx.message import Message
from minibatch_rx.naming import label
from minibatch_rx.window import Window
from minibatch_rx.windows._engine import WindowCore, WindowOperator
from minibatch_rx.windows._timed import TimeWindowCore, micros
from minibatch_rx.windows.assigners import Grid
from minibatch_rx.windows.clocks import DEFAULT_QUIET, ClockSpec, IngestTime
from minibatch_rx.windows.keys import KeyBy
from minibatch_rx.windows.specs import WindowSpec


class _SlidingCountCore(WindowCore):
    """Windows of ``size`` consecutive messages, one starting every ``step``.

    Window starts are kept as seqs (``anchor + j*step``), not as a count of
    messages seen, so a consumer restarted from its position starts its
    windows where the first run did; ``done`` is the start of the last window
    emitted, so a window already out is not rebuilt from a partial replay.
    """

    clocked = True  # nothing here reads the clock, but the alignment is state to keep

    def __init__(self, size: int, step: int) -> None:
        self.size = size
        self.step = step
        self.anchor: int | None = None
        self.done = 0
        self.pending: list[list[Message]] = []

    def on_message(self, message: Message, now: float) -> list[Window]:
        if self.anchor is None:
            self.anchor = message.seq
        if (message.seq - self.anchor) % self.step == 0 and message.seq > self.done:
            self.pending.append([])
        for window in self.pending:
            window.append(message)
        out = [Window(tuple(w), message.stream) for w in self.pending if len(w) == self.size]
        if out:
            self.done = out[-1].messages[0].seq
        self.pending = [w for w in self.pending if len(w) < self.size]
        return out

    def held_min_seq(self) -> int | None:
        return min((w[0].seq for w in self.pending if w), default=None)

    def snapshot(self) -> Any:
        return None if self.anchor is None else {"anchor": self.anchor, "done": self.done}

    def restore(self, state: Any) -> None:
        self.anchor, self.done = int(state["anchor"]), int(state["done"])


@dataclass(frozen=True)
class Sliding(WindowSpec):
    """Windows of ``size`` starting every ``step``: by message count, or by
    message time (``by='time'``); see :func:`sliding_window`."""

    size: int | Interval
    step: int | Interval
    by: Literal["count", "time"] = "count"
    grace: Interval = 0
    quiet: Interval = DEFAULT_QUIET
    timed: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.operator()  # validates every argument

    @property
    def label(self) -> str:
        return label("sliding_window", self.size, self.step, None if self.by == "count" else self.by,
                     self.grace)

    @property
    def ranks_records(self) -> bool:
        return self.by == "time"

    def check(self, key_by: KeyBy | None, clock: ClockSpec | None) -> None:
        if self.by == "count":
            if clock is not None and not isinstance(clock, IngestTime):
                raise InvalidArgumentError("event_time applies to sliding_window(by='time'), "
                                           f"not to {self.label}")
            if key_by is not None:
                raise InvalidArgumentError(
                    f"{self.label} cannot run per key (key_by) yet: its windows are cut by seq; "
                    "use count_window or sliding_window(by='time') per key")

    def operator(self, scheduler: abc.SchedulerBase | None = None, *, key_by: KeyBy | None = None,
                 clock: ClockSpec | None = None) -> WindowOperator:
        size, step, grace, quiet = self.size, self.step, self.grace, self.quiet
        if self.by == "count":
            self.check(key_by, clock)
            n = positive_int(size, "sliding_window size")
            k = positive_int(step, "sliding_window step")
            return WindowOperator(lambda: _SlidingCountCore(n, k), scheduler)
        if self.by == "time":
            grid = Grid(micros(to_seconds(size, "sliding_window size")),
                        micros(to_seconds(step, "sliding_window step")))
            grace_s = to_seconds(grace, "sliding_window grace", allow_zero=True)
            on = clock or IngestTime(to_seconds(quiet, "sliding_window quiet", allow_zero=True))
            return WindowOperator(lambda: TimeWindowCore(on.start(), grid, grace_s, False, key_by), scheduler)
        raise InvalidArgumentError(f"sliding_window by must be 'count' or 'time', got {self.by!r}")


def sliding_window(
    size: int | Interval,
    step: int | Interval,
    *,
    by: Literal["count", "time"] = "count",
    grace: Interval = 0,
    quiet: Interval = DEFAULT_QUIET,
    scheduler: abc.SchedulerBase | None = None,
) -> WindowOperator:
    """Windows of ``size`` that start every ``step``.

    ``by='count'``: each window holds ``size`` consecutive messages, and a new
    one starts every ``step`` messages (a trailing partial window is not
    emitted). ``by='time'``: windows ``[k*step, k*step + size)`` of message
    ``ts``, emitted as ``fixed_time_window`` emits them, with a late side
    output; a message belongs to every window that covers it.

    Marble (by='count', size=3, step=1)::

        messages: -a-b-c-d-|
        windows:  -----[abc]-[bcd]|

    Example::

        stream('prices').sliding_window('1m', '10s', by='time').map(average).sink('avg')
    """
    return Sliding(size, step, by, grace, quiet).operator(scheduler)
