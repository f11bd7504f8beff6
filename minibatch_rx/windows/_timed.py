"""The one engine of time windows: clock x assigner x trigger, per key.

* The **clock** (:mod:`~minibatch_rx.windows.clocks`) gives each record its
  time and moves the watermark: ingest time or event time.
* The **assigner** (:mod:`~minibatch_rx.windows.assigners`) says which windows
  a time belongs to: a grid (tumbling, sliding) or sessions, which merge.
* The **trigger** is the watermark: a window ``[start, end)`` is emitted once
  the watermark reaches ``end + grace``. A record whose window is already
  closed is late: it goes to the late output, never silently dropped.

Windows are kept per key (one key, ``None``, without ``key_by``). A key's
state is freed once its last window closes, so memory follows the windows
open at once, not the keys ever seen. One heap orders the open windows of
all keys by closing time; windows closing together are emitted in that
order, then by their first record.

**Deterministic replay.** The watermark the records give is recomputed by a
replay. When the scheduler clock moves it (a quiet stream), the new
watermark is the decision the operator journals (:meth:`decision`), and a
replay applies it at the same point. Which records were members of a window
already emitted before a restart, and which arrived after it closed (late),
is told by the closure history: each closing step notes the watermark and
the position ``(seq, rank)`` of the last record placed before it (the rank
counts the records one message makes: a ``flat_map`` before the window makes
several). A replayed record of a grid window closed by a step noted after it
was its member. A session is not known by one record's time (later records
extend it), so a replay rebuilds the sessions and passes the closing steps
again, dropping what they closed without emitting it; a session record found
late is noted too (a closing step, or its position), so the replay drops it.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

from minibatch_rx.message import Message
from minibatch_rx.window import Window
from minibatch_rx.windows._engine import EPS, WindowCore
from minibatch_rx.windows.assigners import Assigner, Gaps, Grid
from minibatch_rx.windows.clocks import BadRecordError, RunClock
from minibatch_rx.windows.keys import Key, KeyBy, key_from_json

NEVER = -(2**62)  # a watermark below every time (microseconds)
MAX_CLOSURES = 256  # closing steps remembered between checkpoints
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# The times a window bound can take: a Window's bounds are datetimes (years 1 to 9999).
_FIRST = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND
_LAST = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND


def micros(seconds: float) -> int:
    """Seconds as whole microseconds; ``-inf`` as :data:`NEVER`. A float epoch
    reading is within a fraction of a microsecond of the true value, so
    rounding recovers it exactly."""
    return round(seconds * 1_000_000) if seconds > -math.inf else NEVER


class _Open:
    """One open window of one key."""

    __slots__ = ("alive", "close", "end", "index", "key", "members", "start")

    def __init__(self, key: Key, index: int, start: int, end: int, close: int, first: Message) -> None:
        self.key, self.index, self.start, self.end, self.close = key, index, start, end, close
        self.members = [first]
        self.alive = True


class TimeWindowCore(WindowCore):
    """Tumbling, sliding and session windows on any clock, per key."""

    clocked = True

    def __init__(self, clock: RunClock, assigner: Assigner, grace: float = 0.0,
                 emit_empty: bool = False, key_by: KeyBy | None = None) -> None:
        self.clock, self.assigner, self.key_by = clock, assigner, key_by
        self.owns = None if key_by is None else key_by.owns
        self.grace = micros(grace)
        self.grid = assigner if isinstance(assigner, Grid) else None
        # A record's windows lie within a window length of its time: keep them datetimes.
        span = assigner.size if isinstance(assigner, Grid) else assigner.gap
        self.earliest, self.latest = _FIRST + span, _LAST - span
        self.emit_empty = emit_empty and self.grid is not None and key_by is None
        self.by_key: dict[Key, Any] = {}  # grid: {index: _Open}; sessions: [_Open]
        self.heap: list[tuple[int, int, int, _Open]] = []  # (close, first seq, counter, window)
        self.firsts: list[tuple[int, int, _Open]] = []  # (first seq, counter, window): the lowest held
        self.armed_due: int | float = -math.inf  # the close the last deadline was computed for
        self.armed_lead = math.inf  # and the clock's lead then (see RunClock.lead)
        self.counter = 0
        self.next_close = math.inf
        self.wm = NEVER  # the watermark, microseconds; it never goes back
        self.seen = 0  # highest seq seen
        self.last_seq, self.rank = 0, 0  # the position of the latest record
        # (watermark after a closing step, seq and rank of the last record placed before it)
        self.closures: list[tuple[int, int, int]] = []
        self.floor = NEVER  # closures at or below this watermark were pruned: all late now
        self.rebuild: deque[tuple[int, int, int]] = deque()  # restored closures a replay passes again
        self.rebuilt_wm = NEVER  # the watermark of the last of them passed
        # Sessions: the positions of records found late inside an emitted session (see _session_closed).
        self.late_marks: deque[tuple[int, int]] = deque()
        self.marked: set[tuple[int, int]] = set()  # restored: the ones a replay meets again
        self.cursor: int | None = None  # emit_empty: the next grid window to emit
        self.tentative = False  # the cursor only guessed from the subscription time
        self.decided = NEVER
        self.late_messages: list[Message] = []
        self.bad: list[tuple[Message, str]] = []
        self.recent: dict[Key, int] = {}  # sessions: the end of each key's last emitted session
        self.recent_order: deque[tuple[int, Key]] = deque()
        self.arrival_restored = False
        self.restored_seen = 0  # the highest seq the restored state had seen

    # -- records -------------------------------------------------------------
    def start(self, now: float) -> list[Window]:
        # Subscribing counts as activity: a replayed backlog is about to arrive
        # (unless a checkpoint says when the last record before it arrived).
        if not self.arrival_restored:
            self.clock.last_arrival = now
        if self.emit_empty and self.cursor is None:
            assert self.grid is not None
            self.clock.from_start = True
            self.cursor = self.grid.first_after(micros(now) - self.grace)
            self.tentative = True
            self.next_close = self.cursor_due()
        return []

    def on_message(self, message: Message, now: float) -> list[Window]:
        # The hot path of every time window.
        self.stream = message.stream
        seq = message.seq
        if seq > self.seen:
            self.seen = seq
        if seq == self.last_seq:
            self.rank += 1
        else:
            self.last_seq, self.rank = seq, 0
        if self.rebuild:
            self._replay_closures((seq, self.rank))
        try:
            t = self.clock.time_of(message)
            t_us = round(t * 1_000_000)
            if not self.earliest <= t_us <= self.latest:
                raise BadRecordError(_out_of_range(t))
            key = None if self.key_by is None else self.key_by.key_of(message.data)
        except BadRecordError as error:
            if self.owns is None or self.key_by is None or self.key_by.rejects_here(message.data):
                self.bad.append((message, str(error)))
            return []
        clock = self.clock
        arrival = now
        if clock.settles:
            arrival = clock.arrival(message, now)
            # (A record the restored state already saw: its spell is in the restored watermark.)
            settled = clock.settled(arrival) if seq > self.restored_seen else -math.inf
            if settled > -math.inf:  # the quiet spell before this record moved the watermark
                wm = round(settled * 1_000_000)
                if wm > self.wm:
                    self.wm = wm
        new_max = t > clock.max_time
        clock.arrived(t, arrival)
        owns = self.owns
        if owns is not None and not owns(key):
            pass  # another partition's key: it moves the clock, its holder windows it
        elif self.grid is not None:
            self._place_on_grid(self.grid, message, key, t_us)
        else:
            self._place_in_session(message, key, t_us)
        if new_max:  # only a new highest time moves the watermark the records give
            wm = round(clock.data_watermark() * 1_000_000)
            if wm > self.wm:
                self.wm = wm
        if self.rebuild:  # replaying what was closed (and emitted) before the restart
            self._drop_closed(self.rebuilt_wm)
            return []
        # Only the records close windows here (the clock's closes go through
        # on_timer, which is journaled), so a replay closes them the same way.
        if self.next_close <= self.wm:
            # Noted as closed before this record: the record closing them is never their member.
            return self._close((seq, self.rank - 1))
        return []

    def _place_on_grid(self, grid: Grid, message: Message, key: Key, t: int) -> None:
        step, origin = grid.step, grid.origin
        indexes = grid.indexes(t)
        if not indexes:
            return  # in a gap between hopping windows
        if self.tentative:
            self.tentative = False
            assert self.cursor is not None
            self.cursor = min(self.cursor, indexes[0])
            self.next_close = self.cursor_due()
        windows = self.by_key.get(key)
        late = False
        span = grid.size + self.grace
        for index in indexes:
            start = origin + index * step
            close = start + span
            if (index < self.cursor) if self.cursor is not None else (close <= self.wm):
                late = late or self._is_late(close)
                continue
            if windows is None:
                windows = self.by_key[key] = {}
            window = windows.get(index)
            if window is None:
                windows[index] = self._open(key, index, start, start + grid.size, close, message)
            else:
                window.members.append(message)
        if late:
            self.late_messages.append(message)

    def _place_in_session(self, message: Message, key: Key, t: int) -> None:
        assert isinstance(self.assigner, Gaps)
        start, end = t, t + self.assigner.gap
        sessions: list[_Open] | None = self.by_key.get(key)
        merged = [s for s in sessions if s.start < end and start < s.end] if sessions else []
        if not merged:
            if self._session_closed(message, key, start, end):
                return
            if sessions is None:
                sessions = self.by_key[key] = []
            sessions.append(self._open(key, 0, start, end, end + self.grace, message))
            return
        keep = merged[0]
        keep.members.append(message)
        for other in merged[1:]:  # a record bridging two sessions joins them
            other.alive = False
            sessions.remove(other)  # type: ignore[union-attr]
            keep.members.extend(other.members)
            start, end = min(start, other.start), max(end, other.end)
        if len(merged) > 1:
            keep.members.sort(key=_seq)
        keep.start = min(keep.start, start)
        if end > keep.end:
            keep.end, keep.close = end, end + self.grace
            self._push(keep)  # the old heap entry is now stale

    def _session_closed(self, message: Message, key: Key, start: int, end: int) -> bool:
        """Whether a record joining no open session is too late for one of its own:
        its session ``[start, end)`` would be closed already, or it falls inside the
        key's session emitted last. Late then, unless replayed."""
        closed_end = self.recent.get(key)
        inside = closed_end is not None and start < closed_end
        here = (self.last_seq, self.rank)
        if self.rebuild:
            # Replayed: the run before the restart placed it in a session emitted since, or
            # in one still open (later records extended it), or found it late (and wrote it
            # then); the watermark now cannot tell which. Found late, inside the key's last
            # emitted session, or behind the closing steps replayed so far, it went out then.
            # Any other is rebuilt, and dropped again by the closing step that emitted it.
            return inside or here in self.marked or end + self.grace <= self.rebuilt_wm
        if inside:  # marked, so a replay finds it late (the key's last session may have changed)
            self.late_marks.append(here)
            if len(self.late_marks) > MAX_CLOSURES:
                self.late_marks.popleft()
        elif end + self.grace <= self.wm:  # noted as a closing step, so a replay drops it at once
            self._note_closure(self.wm, self.last_seq, self.rank - 1)
        else:
            return False
        self.late_messages.append(message)
        return True

    def _open(self, key: Key, index: int, start: int, end: int, close: int, first: Message) -> _Open:
        window = _Open(key, index, start, end, close, first)
        self._push(window)
        return window

    def _push(self, window: _Open) -> None:
        self.counter += 1
        first = window.members[0].seq
        heapq.heappush(self.heap, (window.close, first, self.counter, window))
        heapq.heappush(self.firsts, (first, self.counter, window))
        if len(self.firsts) > 2 * len(self.heap) + 64:
            # Entries of emitted windows leave only when they surface, and a long open
            # window (a key that never goes quiet) keeps them under it: rebuild.
            self.firsts = [(w.members[0].seq, n, w) for _, _, n, w in self.heap if w.alive]
            heapq.heapify(self.firsts)
        if window.close < self.next_close:
            self.next_close = window.close

    def _is_late(self, close: int) -> bool:
        """The latest record, for a grid window that closed at ``close``: late, or
        (after a restart) placed before it closed, in the run before?"""
        if close <= self.floor:
            return True
        i = bisect.bisect_left(self.closures, (close,))
        return i == len(self.closures) or (self.last_seq, self.rank) > self.closures[i][1:]

    def _replay_closures(self, before: tuple[int, int] | None) -> None:
        """Pass again the restored closing steps noted before position ``before``
        (all of them if ``None``), dropping the windows they closed."""
        rebuild = self.rebuild
        while rebuild and (before is None or rebuild[0][1:] < before):
            self.rebuilt_wm = rebuild.popleft()[0]
        self._drop_closed(self.rebuilt_wm)

    def _drop_closed(self, wm: int) -> None:
        """Drop, without emitting, the rebuilt windows closing by ``wm``: they went
        out before the restart."""
        heap = self.heap
        while heap and heap[0][0] <= wm:
            close, _, _, window = heapq.heappop(heap)
            if window.alive and window.close == close:
                window.alive = False
                self._forget(window)
                window.members = []
        self.next_close = heap[0][0] if heap else math.inf

    # -- closing -------------------------------------------------------------
    def _close(self, placed: tuple[int, int] | None = None) -> list[Window]:
        """Emit the windows the watermark closed; ``placed``: the position of the
        last record placed before (default: the latest record)."""
        out: list[Window] = []
        wm = self.wm
        if self.cursor is not None:
            windows = self.by_key.get(None, {})
            before = self.cursor
            while self.cursor_due() <= wm:
                window = windows.pop(self.cursor, None)
                if window is not None:
                    window.alive = False
                    out.append(self._window(window))
                else:
                    out.append(self._empty(self.cursor))
                self.cursor += 1
            if self.cursor != before:
                # Only emitting fixes the cursor: a clock step that emitted nothing
                # must not fix a guess made from the subscription time, which a
                # restart makes again differently while replaying that step.
                self.tentative = False
        heap = self.heap
        while heap and heap[0][0] <= wm:
            close, _, _, window = heapq.heappop(heap)
            if not window.alive or window.close != close:
                continue  # emitted already, or a session since extended (a newer entry exists)
            window.alive = False
            self._forget(window)
            if self.grid is None:
                self._remember_session(window)
            out.append(self._window(window))
        self.next_close = heap[0][0] if heap else math.inf
        if self.cursor is not None:
            self.next_close = self.cursor_due()
        if out:
            self._note_closure(wm, *(placed or (self.last_seq, self.rank)))
        return out

    def _forget(self, window: _Open) -> None:
        """Free the window, and its key once the key has no open window."""
        windows = self.by_key[window.key]
        if self.grid is not None:
            del windows[window.index]
        else:
            windows.remove(window)
        if not windows:
            del self.by_key[window.key]

    def _remember_session(self, window: _Open) -> None:
        """Keep an emitted session's end while a record could still fall inside
        it without being behind the watermark (for ``gap`` of watermark)."""
        assert isinstance(self.assigner, Gaps)
        self.recent[window.key] = window.end
        self.recent_order.append((window.end, window.key))
        horizon = self.wm - self.assigner.gap - self.grace
        order = self.recent_order
        while order and order[0][0] <= horizon:
            end, key = order.popleft()
            if self.recent.get(key) == end:
                del self.recent[key]

    def _note_closure(self, wm: int, seq: int, rank: int) -> None:
        closures = self.closures
        if closures and closures[-1][1:] == (seq, rank):
            closures[-1] = (wm, seq, rank)
            return
        closures.append((wm, seq, rank))
        if len(closures) > MAX_CLOSURES:
            # Forget the oldest: the next one then stands for both, erring towards "placed
            # before". A replayed record late in between is dropped (it was written late when
            # first read), never sent late when it was a member; sessions are dropped later.
            del closures[0]

    def _window(self, window: _Open) -> Window:
        """The emitted form of a closed window; the open one lets go of its records
        (stale heap entries may point at it a while longer)."""
        start = _EPOCH + window.start * _MICROSECOND
        # Overlapping grid windows may hold the same records: their start tells them apart.
        tag = f"{window.start}us" if self.grid is not None and self.grid.overlapping else None
        members, window.members = window.members, []
        return Window(tuple(members), self.stream, start,
                      start + (window.end - window.start) * _MICROSECOND, key=window.key, tag=tag)

    def _empty(self, index: int) -> Window:
        assert self.grid is not None
        start, end = self.grid.bounds(index)
        return Window((), self.stream, _EPOCH + start * _MICROSECOND, _EPOCH + end * _MICROSECOND,
                      tag=f"{start}us")

    # -- the clock -----------------------------------------------------------
    def _next_due(self) -> int | None:
        """Microseconds at which the watermark closes the next window."""
        if self.cursor is not None:
            return self.cursor_due()
        heap = self.heap
        while heap and (not heap[0][3].alive or heap[0][3].close != heap[0][0]):
            heapq.heappop(heap)  # stale entries
        self.next_close = heap[0][0] if heap else math.inf
        return heap[0][0] if heap else None

    def deadline(self) -> float | None:
        due = self._next_due()
        self.armed_due, self.armed_lead = (math.inf if due is None else due), self.clock.lead()
        at = None if due is None else self.clock.reaches(due / 1_000_000)
        return None if at is None or at == math.inf else at  # inf: the clock never closes it

    def deadline_moved(self) -> bool:
        # Later records only push the deadline of the same close later, unless an
        # earlier close appeared or the records' time ran ahead of their arrival.
        return self.next_close < self.armed_due or self.clock.lead() > self.armed_lead

    def clock_due(self, now: float) -> bool:
        """Whether the clock moved the watermark past a window's close: the
        next open window's, or (for the records about to arrive) the next grid
        boundary, or for sessions any advance at all. Settled before the
        record is placed, so it is late exactly when its window is closed."""
        if not self.clock.advancing(now):
            return False
        wm = micros(self.clock.watermark(now))
        if wm <= self.wm:
            return False
        if self.next_close <= wm or self.grid is None:
            return True
        return self.grid.bounds(self.grid.first_after(self.wm - self.grace))[1] + self.grace <= wm

    def cursor_due(self) -> int:
        assert self.grid is not None and self.cursor is not None
        return self.grid.bounds(self.cursor)[1] + self.grace

    def on_timer(self, now: float, forced: bool = False) -> list[Window]:
        if forced:
            return self._advance(micros(now))
        wm = micros(self.clock.watermark(now))
        due = self._next_due()
        # The timer fires at its deadline rounded to a microsecond (a datetime), where the
        # clock's float arithmetic can leave the watermark a hair short of ``due``: the
        # window is due all the same, or the timer would re-arm at the same instant.
        if due is not None and wm < due and now >= self.clock.reaches(due / 1_000_000) - EPS:
            wm = due
        return self._advance(wm)

    def replay_timer(self, at: float, detail: Any) -> list[Window]:
        return self._advance(int(detail) if detail is not None else micros(at))

    def _advance(self, wm: int) -> list[Window]:
        if self.rebuild:
            self._replay_closures(None)
        if wm <= self.wm:
            return []
        self.wm = self.decided = wm
        return self._close()

    def decision(self) -> Any:
        return self.decided

    def on_complete(self, now: float) -> list[Window]:
        if self.rebuild:
            self._replay_closures(None)
        entries = sorted((e for e in self.heap if e[3].alive and e[3].close == e[0]), key=lambda e: e[:3])
        self.heap, self.firsts, self.by_key, self.next_close = [], [], {}, math.inf
        for entry in entries:
            entry[3].alive = False
        return [self._window(entry[3]) for entry in entries]

    def watermark(self) -> float | None:
        return None if self.wm == NEVER else self.wm / 1_000_000

    def held_min_seq(self) -> int | None:
        firsts = self.firsts
        # Entries of emitted windows, or of sessions whose first record changed
        # in a merge (they got a new entry), are dropped as they surface.
        while firsts and (not firsts[0][2].alive or firsts[0][2].members[0].seq != firsts[0][0]):
            heapq.heappop(firsts)
        return firsts[0][0] if firsts else None

    def late(self) -> list[Message]:
        if not self.late_messages:
            return self.late_messages
        late, self.late_messages = self.late_messages, []
        return late

    def rejected(self) -> list[tuple[Message, str]]:
        if not self.bad:
            return self.bad
        bad, self.bad = self.bad, []
        return bad

    # -- checkpoints ---------------------------------------------------------
    def before_tick(self) -> None:
        """Sessions: note the point as a closing step when the watermark moved since
        the last one noted. A restored watermark is the snapshot's; records replayed
        from the position are judged by the closing steps passed so far, and without
        this one those after the last real step would meet the snapshot's watermark,
        later than theirs (a session they extended would be cut, and they found
        late). Grid windows need nothing: a grid window a record replayed there
        could belong to would have closed, and been noted, by then."""
        if self.grid is None and (not self.closures or self.closures[-1][0] < self.wm):
            self._note_closure(self.wm, self.last_seq, self.rank)

    def snapshot(self) -> Any:
        if self.wm == NEVER and (self.cursor is None or self.tentative):
            return None
        held = self.held_min_seq()
        acked = self.seen if held is None else held - 1
        # Closures whose members are all acknowledged never see a replayed record.
        while self.closures and self.closures[0][1] <= acked:
            self.floor = max(self.floor, self.closures.pop(0)[0])
        while self.late_marks and self.late_marks[0][0] <= acked:
            self.late_marks.popleft()
        # Lists of tuples, copied at C speed (a snapshot is taken at every step
        # that emits; only the ones committed are encoded and written).
        state: dict[str, Any] = {"wm": self.wm, "floor": self.floor, "closures": list(self.closures)}
        if self.late_marks:
            state["late"] = [list(mark) for mark in self.late_marks]
        if self.clock.max_time > -math.inf:
            state["max"] = self.clock.max_time
        if self.clock.last_arrival > -math.inf:
            state["arrival"], state["seen"] = self.clock.last_arrival, self.seen
        if self.cursor is not None and not self.tentative:
            state["cursor"] = self.cursor
        if self.recent:
            state["recent"] = list(self.recent_order)  # (end, key); a key's later entry wins
        return state

    def restore(self, state: Any) -> None:
        if not isinstance(state, dict) or "wm" not in state:
            return  # written by an older version: start afresh (replays like a first run)
        self.wm, self.floor = int(state["wm"]), int(state["floor"])
        # (An older version noted the highest seq: records up to it, rank -1 of the next.)
        self.closures = [(int(c[0]), int(c[1]), int(c[2])) if len(c) == 3 else (int(c[0]), int(c[1]) + 1, -1)
                         for c in state["closures"]]
        self.seen = max((seq for _, seq, _ in self.closures), default=0)
        self.rebuild = deque(self.closures)
        self.late_marks = deque((int(seq), int(rank)) for seq, rank in state.get("late", []))
        self.marked = set(self.late_marks)
        if "max" in state:
            self.clock.max_time = float(state["max"])
        if "arrival" in state:
            self.clock.last_arrival, self.arrival_restored = float(state["arrival"]), True
            self.restored_seen = int(state["seen"])
        for end, key in state.get("recent", []):
            self.recent[key_from_json(key)] = int(end)
            self.recent_order.append((int(end), key_from_json(key)))
        if "cursor" in state:
            self.cursor, self.tentative = int(state["cursor"]), False
            self.next_close = self.cursor_due()


def _seq(message: Message) -> int:
    return message.seq


def _out_of_range(t: float) -> str:
    hint = " (epoch milliseconds instead of seconds?)" if t > 0 else ""
    return f"time {t!r} is out of range: its windows would fall outside the years 1 to 9999{hint}"


__all__ = ["TimeWindowCore", "micros"]
