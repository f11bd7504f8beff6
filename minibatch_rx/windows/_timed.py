"""Event-time windows aligned on a grid: tumbling (fixed) and hopping (sliding).

Window ``k`` covers ``[origin + k*step, origin + k*step + size)`` of message
``ts``, half-open. Deciding *which* windows a message belongs to (the grid)
is kept apart from deciding *when* a window is emitted (the trigger):

A window whose end is ``e`` is emitted once the scheduler clock has reached
``e + grace`` **and** no message for it can still be in flight: either a
message with ``ts >= e + grace`` has been seen, or no message has arrived for
``quiet`` seconds. The second condition matters while a consumer replays a
backlog: old messages then arrive faster than the clock-based trigger, and
would otherwise be declared late by mistake.
"""

from __future__ import annotations

import math

from minibatch_rx.message import Message
from minibatch_rx.window import Window
from minibatch_rx.windows._engine import WindowCore, to_datetime

DEFAULT_QUIET = 0.25
EPS = 1e-6  # clock values pass through datetime (microseconds); compare with slack


class TimeGridCore(WindowCore):
    """Shared core of ``fixed_time_window`` and the time-based ``sliding_window``."""

    def __init__(self, size: float, step: float, grace: float, quiet: float,
                 emit_empty: bool, origin: float = 0.0) -> None:
        self.size, self.step, self.grace, self.quiet = size, step, grace, quiet
        self.emit_empty, self.origin = emit_empty, origin
        self.open: dict[int, list[Message]] = {}
        self.closed_upto: int | None = None  # windows below this index are emitted
        self.emitted_any = False
        self.max_ts = -math.inf
        self.last_arrival = -math.inf
        self.late_messages: list[Message] = []

    # -- the grid ----------------------------------------------------------
    def end(self, k: int) -> float:
        return self.origin + k * self.step + self.size

    def first_open_after(self, t: float) -> int:
        """Smallest k whose window ends after ``t``."""
        return math.floor((t - self.size - self.origin) / self.step) + 1

    def indexes(self, t: float) -> range:
        """The windows containing time ``t`` (none if ``t`` falls in a hop gap)."""
        last = math.floor((t - self.origin) / self.step)
        return range(max(self.first_open_after(t), last - math.ceil(self.size / self.step) + 1),
                     last + 1)

    def window(self, k: int, messages: list[Message]) -> Window:
        start = self.origin + k * self.step
        messages.sort(key=lambda m: m.seq)
        return Window(tuple(messages), self.stream, to_datetime(start), to_datetime(start + self.size))

    # -- the trigger ---------------------------------------------------------
    def start(self, now: float) -> list[Window]:
        if self.emit_empty:
            self.closed_upto = self.first_open_after(now - self.grace)
        return []

    def on_message(self, message: Message, now: float) -> list[Window]:
        self.stream = message.stream
        t = message.ts.timestamp()
        ks = self.indexes(t)
        if ks and (self.closed_upto is None or (not self.emitted_any and ks[0] < self.closed_upto)):
            self.closed_upto = ks[0]
        late = False
        for k in ks:
            assert self.closed_upto is not None
            if k < self.closed_upto:
                late = True
            else:
                self.open.setdefault(k, []).append(message)
        if late:
            self.late_messages.append(message)
        self.max_ts = max(self.max_ts, t)
        self.last_arrival = now
        return self.close(now)

    def closable_until(self, now: float) -> float:
        """Windows whose ``end + grace`` is at or below this may be emitted."""
        if now - self.last_arrival >= self.quiet - EPS:
            return now
        return min(now, self.max_ts)

    def close(self, now: float) -> list[Window]:
        if self.closed_upto is None:
            return []
        bound = self.closable_until(now) - self.grace + EPS
        out: list[Window] = []
        while self.end(self.closed_upto) <= bound:
            k = self.closed_upto
            messages = self.open.pop(k, None)
            if messages or self.emit_empty:
                out.append(self.window(k, messages or []))
                self.emitted_any = True
            self.closed_upto = k + 1
            if not self.emit_empty:  # skip the empty stretch at once
                target = min([self.first_open_after(bound), *self.open])
                self.closed_upto = max(self.closed_upto, target)
        return out

    def deadline(self) -> float | None:
        if self.closed_upto is None or not (self.emit_empty or self.open):
            return None
        k = self.closed_upto if self.emit_empty else min(self.open)
        due = self.end(k) + self.grace
        if due > self.max_ts:
            due = max(due, self.last_arrival + self.quiet)
        return due

    def on_timer(self, now: float) -> list[Window]:
        return self.close(now)

    def on_complete(self, now: float) -> list[Window]:
        out = [self.window(k, self.open.pop(k)) for k in sorted(self.open)]
        return out

    def held_min_seq(self) -> int | None:
        seqs = [m.seq for messages in self.open.values() for m in messages]
        return min(seqs) if seqs else None

    def late(self) -> list[Message]:
        late, self.late_messages = self.late_messages, []
        return late
