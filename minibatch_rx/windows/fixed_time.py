"""``fixed_time_window``: tumbling windows of message time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from reactivex import abc

from minibatch_rx.durations import Interval, to_seconds
from minibatch_rx.errors import InvalidArgumentError
from minibatch_rx.naming import label
from minibatch_rx.windows._engine import WindowOperator
from minibatch_rx.windows._timed import TimeWindowCore, micros
from minibatch_rx.windows.assigners import Grid
from minibatch_rx.windows.clocks import DEFAULT_QUIET, ClockSpec, IngestTime
from minibatch_rx.windows.keys import KeyBy
from minibatch_rx.windows.specs import WindowSpec


@dataclass(frozen=True)
class Tumbling(WindowSpec):
    """Fixed (tumbling) windows ``[k*interval, (k+1)*interval)`` of message time;
    see :func:`fixed_time_window`."""

    interval: Interval
    grace: Interval = 0
    emit_empty: bool = False
    quiet: Interval = DEFAULT_QUIET
    seconds: tuple[float, float, float] = field(init=False, repr=False, compare=False)
    timed: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "seconds", (
            to_seconds(self.interval, "fixed_time_window interval"),
            to_seconds(self.grace, "fixed_time_window grace", allow_zero=True),
            to_seconds(self.quiet, "fixed_time_window quiet", allow_zero=True)))

    @property
    def label(self) -> str:
        return label("fixed_time_window", self.interval, self.grace, self.emit_empty)

    def check(self, key_by: KeyBy | None, clock: ClockSpec | None) -> None:
        super().check(key_by, clock)
        if self.emit_empty and key_by is not None:
            raise InvalidArgumentError("fixed_time_window(emit_empty=True) cannot run per key "
                                       "(key_by): a key with no message has no window to emit")

    def operator(self, scheduler: abc.SchedulerBase | None = None, *, key_by: KeyBy | None = None,
                 clock: ClockSpec | None = None) -> WindowOperator:
        self.check(key_by, clock)
        size, grace, quiet = self.seconds
        grid = Grid(micros(size), micros(size))
        emit_empty, on = self.emit_empty, clock or IngestTime(quiet)
        return WindowOperator(lambda: TimeWindowCore(on.start(), grid, grace, emit_empty, key_by), scheduler)


def fixed_time_window(
    interval: Interval,
    grace: Interval = 0,
    emit_empty: bool = False,
    *,
    quiet: Interval = DEFAULT_QUIET,
    scheduler: abc.SchedulerBase | None = None,
) -> WindowOperator:
    """Tumbling windows ``[k*interval, (k+1)*interval)`` of message ``ts``, half-open,
    aligned on the epoch.

    A window is emitted once the scheduler clock passes its end plus
    ``grace`` (and, while messages are still pouring in, once a message from
    after that point arrives, so replaying a backlog never misfiles it).
    Empty windows are emitted only with ``emit_empty=True``. A message whose
    window was already closed (emitted, or skipped as empty once its time had
    passed) goes to the operator's ``late`` observable; it is never dropped
    silently.

    Marble (interval=10)::

        message ts: --3--7----12----------31--|
        windows:    ----------[3,7]--[12]-----[31]|   (at t=10, 20, completion)

    Example::

        op = fixed_time_window('5s', grace='1s')
        op.late.subscribe(print)                 # late side output
        messages.pipe(op).subscribe(handle)
    """
    return Tumbling(interval, grace, emit_empty, quiet).operator(scheduler)
