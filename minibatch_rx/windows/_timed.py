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
from datetime import UTC, datetime, timedelta
from typing import Any

from minibatch_rx.message import Message
from minibatch_rx.window import Window
from minibatch_rx.windows._engine import EPS, WindowCore

DEFAULT_QUIET = 0.25
MAX_CLOSURES = 256  # closing steps remembered for replayed messages of windows already out

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(seconds: float) -> int:
    """Seconds as whole microseconds, the resolution of ``Message.ts``."""
    return round(seconds * 1_000_000)


class TimeGridCore(WindowCore):
    """Shared core of ``fixed_time_window`` and the time-based ``sliding_window``."""

    clocked = True

    def __init__(self, size: float, step: float, grace: float, quiet: float,
                 emit_empty: bool, origin: float = 0.0) -> None:
        self.size, self.step, self.grace, self.quiet = size, step, grace, quiet
        self.emit_empty, self.origin = emit_empty, origin
        # The grid is computed in integer microseconds: with float seconds,
        # floor(0.6 / 0.1) == 5, which put a message at exactly 0.6 in the wrong
        # window, or (for fixed windows) in none at all.
        self.size_us = max(1, _micros(size))
        self.step_us = max(1, _micros(step))
        self.origin_us = _micros(origin)
        self.open: dict[int, list[Message]] = {}
        self.closed_upto: int | None = None  # windows below this index are emitted
        self.next_close = math.inf  # end + grace of window `closed_upto`: the next to close
        self.tentative = False  # closed_upto only guessed from the subscription time
        self.seen = 0  # highest seq seen
        # (closed_upto after a closing step, highest seq seen then): which replayed
        # messages were members of windows already out, and which were late.
        self.closures: list[tuple[int, int]] = []
        self.max_ts = -math.inf
        self.last_arrival = -math.inf
        self.late_messages: list[Message] = []

    # -- the grid ----------------------------------------------------------
    def start_us(self, k: int) -> int:
        return self.origin_us + k * self.step_us

    def end(self, k: int) -> float:
        return (self.start_us(k) + self.size_us) / 1_000_000

    def first_open_after(self, t: float) -> int:
        """Smallest k whose window ends after ``t``."""
        return self._first_open_after_us(_micros(t))

    def _first_open_after_us(self, t_us: int) -> int:
        return (t_us - self.size_us - self.origin_us) // self.step_us + 1

    def window(self, k: int, messages: list[Message]) -> Window:
        start = _EPOCH + self.start_us(k) * _MICROSECOND
        messages.sort(key=lambda m: m.seq)
        # Overlapping windows may hold the same messages, and empty ones none:
        # their grid position tells them apart.
        key = f"{self.start_us(k)}us" if self.step_us < self.size_us or not messages else None
        return Window(tuple(messages), self.stream, start, start + self.size_us * _MICROSECOND, key=key)

    def set_closed_upto(self, k: int) -> None:
        """Windows below ``k`` are out; keeps :attr:`next_close` in step."""
        self.closed_upto = k
        self.next_close = (self.origin_us + k * self.step_us + self.size_us) / 1_000_000 + self.grace

    # -- the trigger ---------------------------------------------------------
    def start(self, now: float) -> list[Window]:
        if self.emit_empty and self.closed_upto is None:
            self.set_closed_upto(self.first_open_after(now - self.grace))
            self.tentative = True
        # Subscribing counts as activity: a replayed backlog is about to arrive,
        # so no window closes by the clock alone until the stream has been
        # quiet for ``quiet`` (else a boundary right after subscribing could
        # emit an empty window and send the backlog to the late output).
        self.last_arrival = now
        return []

    def on_message(self, message: Message, now: float) -> list[Window]:
        # The hot path of every time window: kept to plain arithmetic on ints.
        self.stream = message.stream
        seq = message.seq
        if seq > self.seen:
            self.seen = seq
        t = message.ts.timestamp()
        # Exact microseconds: a float epoch reading is within 0.25 us of the
        # true value, so rounding recovers it (the grid must be exact).
        t_us = round(t * 1_000_000)
        last = (t_us - self.origin_us) // self.step_us
        first = (t_us - self.size_us - self.origin_us) // self.step_us + 1
        if first <= last:  # else: in a gap between hopping windows
            closed = self.closed_upto
            if closed is None or (self.tentative and first < closed):
                self.set_closed_upto(first)
                closed = first
            self.tentative = False
            late = False
            open_ = self.open
            for k in range(first, last + 1):
                if k >= closed:
                    bucket = open_.get(k)
                    if bucket is None:
                        open_[k] = [message]
                    else:
                        bucket.append(message)
                elif seq > self.closed_after(k):
                    late = True
                # else: a replayed member of a window already emitted before a restart
            if late:
                self.late_messages.append(message)
        if t > self.max_ts:
            self.max_ts = t
        self.last_arrival = now
        # Only the messages close windows here (the clock's closes go through
        # on_timer, which is journaled), so a replay closes them the same way.
        if self.next_close <= self.max_ts + EPS:
            return self.close(self.max_ts, forced=True)
        return []

    def closed_after(self, k: int) -> int:
        """The last seq seen when window ``k`` closed: messages up to it were its members."""
        for upto, seq in self.closures:
            if k < upto:
                return seq
        return self.seen

    def closable_until(self, now: float) -> float:
        """Windows whose ``end + grace`` is at or below this may be emitted."""
        if now - self.last_arrival >= self.quiet - EPS:
            return now
        return min(now, self.max_ts)

    def close(self, now: float, forced: bool = False) -> list[Window]:
        if self.closed_upto is None:
            if not forced:
                return []
            self.set_closed_upto(self.first_open_after(now - self.grace))  # replayed, fresh core
        bound = (now if forced else self.closable_until(now)) - self.grace + EPS
        out: list[Window] = []
        before = k = self.closed_upto
        assert k is not None
        while self.end(k) <= bound:
            messages = self.open.pop(k, None)
            if messages or self.emit_empty:
                out.append(self.window(k, messages or []))
            k += 1
            if not self.emit_empty:  # skip the empty stretch at once
                k = max(k, min([self.first_open_after(bound), *self.open]))
        self.set_closed_upto(k)
        if k != before:
            self.tentative = False
            if self.closures and self.closures[-1][1] == self.seen:
                self.closures[-1] = (k, self.seen)
            else:
                self.closures.append((k, self.seen))
                del self.closures[:-MAX_CLOSURES]
        return out

    def deadline(self) -> float | None:
        if self.closed_upto is None or not (self.emit_empty or self.open):
            return None
        k = self.closed_upto if self.emit_empty else min(self.open)
        due = self.end(k) + self.grace
        if due > self.max_ts:
            due = max(due, self.last_arrival + self.quiet)
        return due

    def on_timer(self, now: float, forced: bool = False) -> list[Window]:
        return self.close(now, forced)

    def clock_due(self, now: float) -> bool:
        return self.next_close <= self.closable_until(now) + EPS

    def on_complete(self, now: float) -> list[Window]:
        out = [self.window(k, self.open.pop(k)) for k in sorted(self.open)]
        return out

    def held_min_seq(self) -> int | None:
        seqs = [m.seq for messages in self.open.values() for m in messages]
        return min(seqs) if seqs else None

    def late(self) -> list[Message]:
        if not self.late_messages:
            return self.late_messages
        late, self.late_messages = self.late_messages, []
        return late

    def snapshot(self) -> Any:
        if self.closed_upto is None or self.tentative:
            return None
        return {"closed_upto": self.closed_upto, "closures": [list(c) for c in self.closures]}

    def restore(self, state: Any) -> None:
        self.set_closed_upto(int(state["closed_upto"]))
        self.closures = [(int(upto), int(seq)) for upto, seq in state["closures"]]
        self.seen = max((seq for _, seq in self.closures), default=0)
        self.tentative = False
