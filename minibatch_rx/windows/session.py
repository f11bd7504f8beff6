"""``session_window``: bursts of activity separated by a gap of silence."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from reactivex import abc

from minibatch_rx.durations import Interval, to_seconds
from minibatch_rx.message import Message
from minibatch_rx.naming import label
from minibatch_rx.window import Window
from minibatch_rx.windows._engine import EPS, WindowCore, WindowOperator, to_datetime
from minibatch_rx.windows._timed import DEFAULT_QUIET
from minibatch_rx.windows.specs import WindowSpec


class _SessionCore(WindowCore):
    clocked = True

    def __init__(self, gap: float, quiet: float) -> None:
        self.gap = gap
        self.quiet = quiet
        self.session: list[Message] = []
        self.first_ts = self.last_ts = 0.0
        self.closed_end = -math.inf
        self.closed_after = 0  # highest seq seen when the last session closed
        self.seen = 0
        self.last_arrival = -math.inf
        self.late_messages: list[Message] = []

    def on_message(self, message: Message, now: float) -> list[Window]:
        self.stream = message.stream
        t = message.ts.timestamp()
        self.last_arrival = now
        self.seen = max(self.seen, message.seq)
        out: list[Window] = []
        if t < self.closed_end:
            if message.seq > self.closed_after:
                self.late_messages.append(message)
            # else: a replayed member of the session emitted before a restart
            return out
        if self.session and t + self.gap <= self.first_ts:
            # Older than the open session by a full gap: a session of its own, and
            # already over (a message `gap` after it has been seen). Merging it
            # would make one session across a silence longer than `gap`.
            self.closed_end, self.closed_after = t + self.gap, self.seen
            return [Window((message,), self.stream, to_datetime(t), to_datetime(self.closed_end))]
        if self.session and t >= self.last_ts + self.gap:
            out.append(self._close())
        if not self.session:
            self.first_ts = self.last_ts = t
        self.first_ts = min(self.first_ts, t)
        self.last_ts = max(self.last_ts, t)
        self.session.append(message)
        return out

    def _close(self) -> Window:
        end = self.last_ts + self.gap
        messages = sorted(self.session, key=lambda m: m.seq)
        window = Window(tuple(messages), self.stream, to_datetime(self.first_ts), to_datetime(end))
        self.closed_end, self.closed_after = end, self.seen
        self.session = []
        return window

    def deadline(self) -> float | None:
        if not self.session:
            return None
        return max(self.last_ts + self.gap, self.last_arrival + self.quiet)

    def on_timer(self, now: float, forced: bool = False) -> list[Window]:
        if not self.session:
            return []
        due = self.last_ts + self.gap if forced else self.deadline()
        return [self._close()] if due is not None and now >= due - EPS else []

    def on_complete(self, now: float) -> list[Window]:
        return [self._close()] if self.session else []

    def held_min_seq(self) -> int | None:
        return min(m.seq for m in self.session) if self.session else None

    def late(self) -> list[Message]:
        late, self.late_messages = self.late_messages, []
        return late

    def snapshot(self) -> Any:
        if self.closed_end == -math.inf:
            return None
        return {"closed_end": self.closed_end, "closed_after": self.closed_after}

    def restore(self, state: Any) -> None:
        self.closed_end = float(state["closed_end"])
        self.closed_after = self.seen = int(state["closed_after"])


@dataclass(frozen=True)
class Session(WindowSpec):
    """Bursts of messages separated by at least ``gap`` of silence; see :func:`session_window`."""

    gap: Interval
    quiet: Interval = DEFAULT_QUIET

    def __post_init__(self) -> None:
        self.operator()  # validates every argument

    @property
    def label(self) -> str:
        return label("session_window", self.gap)

    def operator(self, scheduler: abc.SchedulerBase | None = None) -> WindowOperator:
        gap_s = to_seconds(self.gap, "session_window gap")
        quiet_s = to_seconds(self.quiet, "session_window quiet", allow_zero=True)
        return WindowOperator(lambda: _SessionCore(gap_s, quiet_s), scheduler)


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
