"""``session_window``: bursts of activity separated by a gap of silence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from reactivex import abc

from minibatch_rx.durations import Interval, to_seconds
from minibatch_rx.naming import label
from minibatch_rx.windows._engine import WindowOperator
from minibatch_rx.windows._timed import TimeWindowCore, micros
from minibatch_rx.windows.assigners import Gaps
from minibatch_rx.windows.clocks import DEFAULT_QUIET, ClockSpec, IngestTime
from minibatch_rx.windows.keys import KeyBy
from minibatch_rx.windows.specs import WindowSpec


@dataclass(frozen=True)
class Session(WindowSpec):
    """Bursts of messages separated by at least ``gap`` of silence; see :func:`session_window`."""

    gap: Interval
    quiet: Interval = DEFAULT_QUIET
    timed: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.operator()  # validates every argument

    @property
    def label(self) -> str:
        return label("session_window", self.gap)

    def operator(self, scheduler: abc.SchedulerBase | None = None, *, key_by: KeyBy | None = None,
                 clock: ClockSpec | None = None) -> WindowOperator:
        self.check(key_by, clock)
        gaps = Gaps(micros(to_seconds(self.gap, "session_window gap")))
        on = clock or IngestTime(to_seconds(self.quiet, "session_window quiet", allow_zero=True))
        return WindowOperator(lambda: TimeWindowCore(on.start(), gaps, 0.0, False, key_by), scheduler)


def session_window(
    gap: Interval,
    *,
    quiet: Interval = DEFAULT_QUIET,
    scheduler: abc.SchedulerBase | None = None,
) -> WindowOperator:
    """Sessions of message time: a session ends when no message follows the
    last one within ``gap``. ``start`` is the first message's ``ts`` and
    ``end`` the last one's plus ``gap``.

    A session is emitted when a message at least ``gap`` after it arrives,
    or when the scheduler clock passes its end while the stream has been quiet
    for ``quiet``. A message older than an emitted session's end is late.

    Marble (gap=5)::

        message ts: -1-3-------12-14--------|
        windows:    ---------[1,3]------[12,14]   (at t=8 and t=19)

    Example::

        stream('clicks').session_window('30s').map(lambda w: len(w)).sink('visits')
    """
    return Session(gap, quiet).operator(scheduler)
