"""Patterns as a stateful pipeline stage: ``.match(pattern)``.

:class:`PatternCore` is a window strategy core (see
:mod:`minibatch_rx.windows._engine`): the operator driving it gives it the
records and the clock, journals the clock's decisions and stamps what it
emits with acks and checkpoints. Each match goes out as a
:class:`MatchWindow` (its events' messages, the step of each, its key);
timed-out partial matches go to the side output.

**Time.** With ``event_time``, records wait in a buffer until the watermark
passes them and are matched in timestamp order (equal times in arrival order);
a record behind the watermark is late. Without it, records are matched as they
arrive, on their ingest time, and the watermark follows the scheduler clock,
so a ``within`` runs out on an idle stream too.

**Exactly once.** The checkpoint saved with each committed position holds the
whole matching state: the buffered records, every partial match (its events and
its place in the automaton) and the watermark. A restart restores it and reads
on after the position, skipping records of a message already fed (several
records per message after a ``flat_map``). Matches and timeouts carry
idempotency keys made of their events' positions, so a match emitted again after
a crash is stored once. While no match is emitted, a checkpoint still goes out
every :data:`TICK` records (a window the next stage drops), so the position
keeps up with a pattern that rarely matches.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from reactivex import abc

from minibatch_rx.cep.checkpoint import (
    IDLE,
    Snapshot,
    Unsavable,
    completed_of,
    decode_value,
    encode_value,
    saved_partial,
    saved_time,
)
from minibatch_rx.cep.compiler import START, Automaton
from minibatch_rx.cep.match import Match
from minibatch_rx.cep.nfa import Partial, Path, PatternError, Run
from minibatch_rx.cep.pattern import Pattern
from minibatch_rx.errors import InvalidArgumentError
from minibatch_rx.message import Message
from minibatch_rx.window import Window
from minibatch_rx.windows._engine import WindowCore, WindowOperator
from minibatch_rx.windows.clocks import BadRecordError, ClockSpec, IngestTime, RunClock
from minibatch_rx.windows.keys import Key, KeyBy, key_from_json, key_text
from minibatch_rx.windows.specs import WindowSpec

if TYPE_CHECKING:
    from minibatch_rx.pipeline import SinkTarget

log = logging.getLogger("minibatch_rx.cep")

TICK = 256
"""Records between checkpoints while no match is emitted."""
FLUSH = 1.0
"""Seconds (scheduler time) after which records that gave no window are committed."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIRST, _LAST = -62135596800.0, 253402300799.0  # the epoch seconds a datetime can hold (years 1 to 9999)
_warned: set[int] = set()  # patterns warned about (an unbounded loop), once each
SWEEP = 4096
"""Keys kept, idle ones included, before the idle ones are forgotten."""
MAX_PARTIALS = 10_000
"""Partial matches kept per key: past it the oldest are handed to the timeouts."""


@dataclass(frozen=True, slots=True)
class MatchWindow(Window[Any]):
    """A match as a window: ``messages`` are its events, ``steps`` the step of each."""

    steps: tuple[str, ...] = ()
    times: tuple[float, ...] = ()
    """The time (event or ingest) each event was matched at."""
    timed_out_at: float | None = None


def to_match(window: Window[Any]) -> Match[Any] | None:
    """The :class:`Match` a window carries (``None`` for a checkpoint-only window)."""
    if not isinstance(window, MatchWindow):
        return None
    steps: dict[str, list[Any]] = {}
    for step, message in zip(window.steps, window.messages, strict=True):
        steps.setdefault(step, []).append(message.data)
    times = window.times
    return Match(
        steps,
        key=window.key,
        start=times[0] if times else None,
        end=times[-1] if times else None,
        timed_out_at=window.timed_out_at,
    )


class _Key:
    """The matching state of one key."""

    __slots__ = ("deadline", "run", "text")

    def __init__(self, run: Run, key: Key) -> None:
        self.run = run
        self.deadline = math.inf
        self.text = key_text(key)  # orders keys due at the same time, the same way in every run


class PatternCore(WindowCore):
    """Matches a pattern per key, on a clock; see the module docstring."""

    clocked = True

    def __init__(
        self, auto: Automaton, clock: RunClock, key_by: KeyBy | None, event_time: bool, order: tuple[str, ...]
    ) -> None:
        self.auto, self.clock, self.key_by, self.event_time = auto, clock, key_by, event_time
        self.owns = None if key_by is None else key_by.owns
        self.order = order  # the pattern's step names (tells patterns apart in checkpoints)
        self.step_codes = {name: str(i) for i, name in enumerate(order)}
        self.keys: dict[Key, _Key] = {}
        self.buffer: list[tuple[float, int, int, int, Message, Key]] = []  # (t, seq, rank, n, msg, key)
        self.deadlines: list[tuple[float, str, Key]] = []  # (deadline, key text, key), stale ones skipped
        self.counter = 0
        self.eid = 0
        self.wm = -math.inf
        self.decided = -math.inf
        self.last_seq, self.rank = 0, 0
        self.done: tuple[int, int] = (0, -1)  # restored: records at or before it were fed already
        self.since = 0  # records since the last emitted window
        self.flush_at: float | None = None  # when to commit them if no window comes
        self.now = -math.inf  # the scheduler time of the latest record
        self.late_messages: list[Message] = []
        self.bad: list[tuple[Message, str]] = []
        self.aside: list[Window] = []
        self.tags: dict[str, int] = {}  # the tags given in this step, and how often
        self.sweep_at = SWEEP  # the number of keys at which idle ones are forgotten
        self.records = False  # values come from a stage before the match (else: stream payloads)
        self.touched: dict[Key, None] = {}  # keys whose state changed since the last snapshot
        self.buffered: dict[Key, dict[int, Any]] = {}  # each key's records in the buffer, by counter
        self.state_index = {id(state): i for i, state in enumerate(auto.states)}
        self.captured: Snapshot | None = None  # the last snapshot taken
        self.warned = False

    # -- records -------------------------------------------------------------
    def start(self, now: float) -> list[Window]:
        self.now = now
        if self.clock.last_arrival == -math.inf:
            self.clock.last_arrival = now
        return []

    def on_message(self, message: Message, now: float) -> list[Window]:
        # The hot path: every record passes here.
        self.now = now
        if self.tags:
            self.tags.clear()
        seq = message.seq
        if seq == self.last_seq:
            rank = self.rank = self.rank + 1
        else:
            self.last_seq, rank, self.rank = seq, 0, 0
            self.stream = message.stream
        done_seq = self.done[0]
        if seq <= done_seq and (seq < done_seq or rank <= self.done[1]):
            return []  # fed before the restart: in the restored state already
        clock = self.clock
        try:
            t = clock.time_of(message)
            if not _FIRST <= t <= _LAST:
                raise BadRecordError(_out_of_range(t))
            key = None if self.key_by is None else self.key_by.key_of(message.data)
            if self.records:
                encode_value(message.data)  # a value a stage made must fit in a checkpoint
        except (BadRecordError, Unsavable) as error:
            if self.owns is None or self.key_by is None or self.key_by.rejects_here(message.data):
                self.bad.append((message, str(error)))
            return self._tick([])
        arrival = now
        if clock.settles:
            arrival = clock.arrival(message, now)
            settled = clock.settled(arrival)
            if settled > self.wm:
                self.wm = settled
        new_max = t > clock.max_time
        clock.arrived(t, arrival)
        owns = self.owns
        if owns is not None and not owns(key):
            # Another partition's key: it moves the watermark (the stream's, as a
            # single consumer's), and the run holding its partition matches it.
            if new_max:
                wm = clock.data_watermark()
                if wm > self.wm:
                    self.wm = wm
            if (self.buffer and self.buffer[0][0] <= self.wm) or (self.deadlines
                                                                  and self.deadlines[0][0] <= self.wm):
                return self._tick(self._drain())
            return self._tick([])
        if t < self.wm:
            if self.event_time:  # behind the watermark: its place in the order is gone
                self.late_messages.append(message)
                return self._tick([])
            t = self.wm  # ingest time never goes back
        self.counter += 1
        item = (t, seq, rank, self.counter, message, key)
        heapq.heappush(self.buffer, item)
        waiting = self.buffered.get(key)
        if waiting is None:
            waiting = self.buffered[key] = {}
        waiting[self.counter] = item
        self.touched[key] = None
        if new_max:
            wm = clock.data_watermark()
            if wm > self.wm:
                self.wm = wm
        wm = self.wm
        if self.buffer[0][0] <= wm or (self.deadlines and self.deadlines[0][0] <= wm):
            return self._tick(self._drain())
        self.since += 1
        if self.since < TICK and self.flush_at is not None:
            return []  # (the commonest case of _tick, inlined)
        return self._tick([], count=False)

    def _tick(self, out: list[Window], count: bool = True) -> list[Window]:
        """``out``, or a checkpoint-only window (see ``stages.Ack.counts``) when
        nothing else carries one: every :data:`TICK` records; and :data:`FLUSH`
        seconds after records, or something handed aside (a timeout, a late or a
        bad record), that no window committed yet (see :meth:`on_timer`)."""
        if count:
            self.since += 1
        elif self.aside or self.late_messages or self.bad:
            self.since += 1  # counts as something to commit
        if out:
            self.since, self.flush_at = 0, None
        elif self.since >= TICK:
            self.since, self.flush_at = 0, None
            out = [Window((), self.stream, tag="tick")]
        elif self.flush_at is None and self.since and self.now > -math.inf:
            self.flush_at = self.now + FLUSH
        return out

    def _drain(self) -> list[Window]:
        """Match the buffered records the watermark passed, then let time run out
        for the keys whose earliest partial match is due."""
        out: list[Window] = []
        wm = self.wm
        buffer = self.buffer
        while buffer and buffer[0][0] <= wm:
            t, _, rank, counter, message, key = heapq.heappop(buffer)
            waiting = self.buffered[key]
            del waiting[counter]
            if not waiting:
                del self.buffered[key]
            state = self.keys.get(key)
            if state is None:
                state = self.keys[key] = _Key(self.auto.run(), key)
            self.touched[key] = None
            run = state.run
            before = run.partials
            lapsed = state.deadline <= t
            if lapsed:
                self._advance(key, run, t, out)
            self.eid += 1
            try:
                found_all = run.process(message.data, t, self.eid, (message, rank))
            except PatternError:
                raise  # a strict skip strategy found no step to skip to: the pipeline fails, as Flink's job
            except Exception as error:  # a condition failed on this record: dead-letter it
                self.bad.append((message, f"a pattern condition raised {type(error).__name__}: {error}"))
                found_all = []
            for found in found_all:
                out.append(self._window(key, found))
            if run.partials is before:
                continue  # unchanged (no partial match wanted the record): nothing to schedule
            if len(run.partials) > MAX_PARTIALS + 1:  # (the start state is not counted)
                self._cap(key, run, t)
            self._schedule(key, state, lapsed)
        deadlines = self.deadlines
        while deadlines and deadlines[0][0] <= wm:
            due, _, key = heapq.heappop(deadlines)
            state = self.keys.get(key)
            if state is None or state.deadline != due:
                continue  # stale
            self.touched[key] = None
            self._advance(key, state.run, wm, out)
            self._schedule(key, state, True)
        return out

    def _advance(self, key: Key, run: Run, t: float, out: list[Window]) -> None:
        matches, timeouts = run.advance(t)
        for found in matches:
            out.append(self._window(key, found))
        window = self.auto.window
        for lapsed in timeouts:
            self.aside.append(self._window(key, lapsed, lapsed.start_ts + (window or 0.0)))

    def _schedule(self, key: Key, state: _Key, exact: bool = False) -> None:
        """Note when the key's earliest partial match runs out; forget an idle key.

        The deadline noted is a lower bound: partial matches started since begin
        later, and one that completed meanwhile only makes the key due early (it
        is then advanced for nothing, and its deadline computed ``exact``)."""
        run = state.run
        if run.idle:
            state.deadline = math.inf  # idle: kept for its next record, swept out in bulk
            if len(self.keys) > self.sweep_at:
                self._sweep()
            return
        window = self.auto.window
        if window is None or (not exact and state.deadline < math.inf):
            return
        first = min((p.start_ts for p in run.partials if p.state.kind != START), default=math.inf)
        due = first + window
        if due != state.deadline:
            state.deadline = due
            if due < math.inf:
                self.counter += 1
                heapq.heappush(self.deadlines, (due, state.text, key))

    def _sweep(self) -> None:
        """Forget the idle keys (no partial match, nothing waiting): memory follows
        the keys with open partial matches, not the keys ever seen."""
        for key, state in list(self.keys.items()):
            if state.run.idle:
                del self.keys[key]
        self.sweep_at = max(SWEEP, 2 * len(self.keys))

    def _cap(self, key: Key, run: Run, t: float) -> None:
        if not self.warned:
            self.warned = True
            log.warning(
                "pattern %s: key %r holds more than %d partial matches; the oldest go to the "
                "timeouts (bound the pattern with within() or until())",
                self.order,
                key,
                MAX_PARTIALS,
            )
        ordered = sorted((p for p in run.partials if p.state.kind != START), key=lambda p: p.order)
        dropped = ordered[:-MAX_PARTIALS]
        for partial in dropped:
            self.aside.append(self._window(key, partial, t))
        gone = set(map(id, dropped))
        run.partials = [p for p in run.partials if id(p) not in gone]

    def _window(self, key: Key, partial: Partial, timed_out_at: float | None = None) -> Window:
        messages: list[Message] = []
        steps: list[str] = []
        times: list[float] = []
        parts: list[str] = []
        codes = self.step_codes
        node = partial.path
        while node is not None:
            message, rank = node[5]
            messages.append(message)
            steps.append(node[0])
            times.append(node[2])
            parts.append(f"{codes[node[0]]}@{message.seq}.{rank}")
            node = node[4]
        messages.reverse()
        steps.reverse()
        times.reverse()
        parts.reverse()
        ident = ",".join(parts)
        if len(ident) > 64:
            ident = hashlib.blake2b(ident.encode(), digest_size=12).hexdigest()
        tag = ("timeout:" if timed_out_at is not None else "match:") + ident
        # Two partial matches may hold the same events (Flink emits both): the second
        # gets its own idempotency key, the same again when a restart replays the step.
        seen = self.tags.get(tag, 0)
        self.tags[tag] = seen + 1
        if seen:
            tag = f"{tag}#{seen + 1}"
        start = end = None
        if times:
            start, end = _EPOCH + timedelta(seconds=times[0]), _EPOCH + timedelta(seconds=times[-1])
        return MatchWindow(
            tuple(messages),
            self.stream,
            start,
            end,
            key=key,
            tag=tag,
            steps=tuple(steps),
            times=tuple(times),
            timed_out_at=timed_out_at,
        )

    # -- the clock -------------------------------------------------------------
    def _next_due(self) -> float:
        due = self.buffer[0][0] if self.buffer else math.inf
        while self.deadlines:
            first, _, key = self.deadlines[0]
            state = self.keys.get(key)
            if state is not None and state.deadline == first:
                return min(due, first)
            heapq.heappop(self.deadlines)
        return due

    def deadline(self) -> float | None:
        due = self._next_due()
        at = math.inf if due == math.inf else self.clock.reaches(due)
        if self.flush_at is not None and self.since:
            at = min(at, self.flush_at)
        return None if at == math.inf else at

    def clock_due(self, now: float) -> bool:
        if not self.clock.advancing(now):
            return False
        due = self._next_due()
        return due < math.inf and self.clock.watermark(now) >= due

    def on_timer(self, now: float, forced: bool = False) -> list[Window]:
        self.now = now
        wm = self.clock.watermark(now)
        due = self._next_due()
        if due < math.inf and wm < due and now >= self.clock.reaches(due) - 1e-6:
            wm = due  # float arithmetic may leave the watermark a hair short at its deadline
        out = self._to(wm)
        if not out and self.since and self.flush_at is not None and now >= self.flush_at - 1e-6:
            # Records read since the last window, none of which gave one: commit them, so
            # the position does not lag (a restart would only read them again).
            out = [Window((), self.stream, tag="tick")]
        if out:
            self.since, self.flush_at = 0, None
        return out

    def replay_timer(self, at: float, detail: Any) -> list[Window]:
        return self._to(float(detail) if detail is not None else at)

    def _to(self, wm: float) -> list[Window]:
        if wm <= self.wm:
            return []
        self.wm = self.decided = wm
        self.tags.clear()
        return self._tick(self._drain(), count=False)

    def decision(self) -> Any:
        return self.decided

    def on_complete(self, now: float) -> list[Window]:
        return []  # partial matches stay in the state: a restart goes on from them

    def held_min_seq(self) -> int | None:
        return None  # the checkpoint holds the whole state; nothing needs replaying

    def late(self) -> list[Message]:
        late, self.late_messages = self.late_messages, []
        return late

    def rejected(self) -> list[tuple[Message, str]]:
        bad, self.bad = self.bad, []
        return bad

    def side_output(self) -> list[Window]:
        aside, self.aside = self.aside, []
        return aside

    # -- checkpoints -------------------------------------------------------------
    def key_token(self, key: Key) -> tuple[Any, ...]:
        """What a snapshot keeps of a key: its partial matches, completed matches
        waiting, and buffered records (``IDLE`` for a key with none)."""
        state = self.keys.get(key)
        waiting = self.buffered.get(key)
        buffered = tuple(waiting.values()) if waiting else ()
        if state is None or state.run.idle:
            return ([], (), buffered) if buffered else IDLE
        return (state.run.partials, completed_of(state.run), buffered)

    def snapshot(self) -> Any:
        return Snapshot(self)

    def restore(self, state: Any) -> None:
        if not isinstance(state, dict) or not isinstance(state.get("base"), dict):
            return  # none, or written by an earlier version: start afresh
        base, parts = state["base"], state.get("parts", {})
        if base.get("shape") != self.auto.shape:
            raise InvalidArgumentError(
                f"the checkpoint of this consumer was written by another pattern (steps "
                f"{base.get('pattern')}, now {list(self.order)}): run a changed pattern under a "
                "new consumer name"
            )
        stream = self.stream = base["stream"]
        self.wm = saved_time(base["wm"])
        self.eid = int(base["eid"])
        self.done = (int(base["done"][0]), int(base["done"][1]))
        self.clock.max_time = saved_time(base["clock"]["max"])
        self.clock.last_arrival = saved_time(base["clock"]["arrival"])
        states = self.auto.states
        for entry in parts.values():
            key = key_from_json(entry["key"])
            messages: dict[int, tuple[Message, int]] = {}
            for eid, seq, rank, ts, data in entry["events"]:
                messages[eid] = (
                    Message(stream, seq, _EPOCH + timedelta(seconds=ts), decode_value(data)),
                    rank,
                )
            for t, seq, rank, ts, data in entry["buffer"]:
                self.counter += 1
                message = Message(stream, seq, _EPOCH + timedelta(seconds=ts), decode_value(data))
                item = (t, seq, rank, self.counter, message, key)
                heapq.heappush(self.buffer, item)
                self.buffered.setdefault(key, {})[self.counter] = item
            self.touched[key] = None
            if not entry["partials"]:
                continue  # only buffered records
            nodes: list[Path] = []
            for step, eid, t, parent in entry["nodes"]:
                ref = messages[eid]
                nodes.append((step, eid, t, ref[0].data, None if parent < 0 else nodes[parent], ref))
            run = self.auto.run()
            run.partials = [saved_partial(states, nodes, p) for p in entry["partials"]]
            run.completed = [saved_partial(states, nodes, p) for p in entry["completed"]]
            run.restored()
            key_state = self.keys[key] = _Key(run, key)
            self._schedule(key, key_state, True)


def _out_of_range(t: float) -> str:
    hint = " (epoch milliseconds instead of seconds?)" if t > 0 else ""
    return f"time {t!r} is out of range: a match's times must fall within the years 1 to 9999{hint}"


@dataclass(frozen=True)
class PatternSpec(WindowSpec):
    """``.match(pattern)`` as a window strategy (see :class:`PatternCore`)."""

    pattern: Pattern[Any]
    timeouts: Any = None
    auto: Automaton = field(init=False, repr=False, compare=False)
    timed = True

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, Pattern):
            raise InvalidArgumentError(
                f"match() needs a minibatch_rx.cep.Pattern, got {type(self.pattern).__name__}"
            )
        object.__setattr__(self, "auto", self.pattern.compiled())
        unbounded = [s.name for s in self.pattern.steps if s.kind == "looping" and s.until is None]
        if unbounded and self.pattern.window is None and id(self.pattern) not in _warned:
            _warned.add(id(self.pattern))
            log.warning(
                "pattern %r: the loop of step(s) %s has neither within() nor until(), so its partial "
                "matches live until they complete; each key keeps at most %d (the oldest go to the "
                "timeouts)",
                self.pattern,
                ", ".join(unbounded),
                MAX_PARTIALS,
            )

    @property
    def ranks_records(self) -> bool:
        return True

    @property
    def label(self) -> str:
        return f"match:{self.pattern!r}"

    def operator(
        self,
        scheduler: abc.SchedulerBase | None = None,
        *,
        key_by: KeyBy | None = None,
        clock: ClockSpec | None = None,
    ) -> WindowOperator:
        self.check(key_by, clock)
        event_time = clock is not None and not isinstance(clock, IngestTime)
        on = clock if event_time and clock is not None else IngestTime(0)
        auto, names = self.auto, self.pattern.names

        def make() -> PatternCore:
            core = PatternCore(auto, on.start(), key_by, event_time, names)
            core.records = operator.records  # values a stage made: checked to be savable
            return core

        operator = WindowOperator(make, scheduler)
        return operator


def drop_ticks(_window: Any, match: Match[Any] | None) -> Iterable[Match[Any]]:
    """What the match stage passes on: the match, none for a checkpoint-only window."""
    return () if match is None else (match,)


def timeout_target(target: SinkTarget | None) -> SinkTarget | None:
    """Check a ``timeouts=`` target (a stream, a stream name or a callable)."""
    from minibatch_rx.streams import Stream

    if target is None or isinstance(target, (str, Stream)) or callable(target):
        return target
    raise InvalidArgumentError(
        f"timeouts must be a Stream, a stream name or a callable, got {type(target).__name__}"
    )


def timeout_deliverer(resolve: Callable[[], Any], owner: str) -> Callable[[Window], Any]:
    """Deliver timed-out partial matches to ``resolve()`` (asked at the first one, so
    a default stream is only made when needed): into a stream as
    ``Match.as_payload()`` dicts, keyed by ``owner`` and the events so a restart
    stores nothing twice; to a callable as :class:`Match`."""
    from minibatch_rx.resilience import until_reachable
    from minibatch_rx.stages import RetryPolicy, origin_key
    from minibatch_rx.streams import Stream

    resolved: list[Any] = []

    def deliver(window: Window) -> Any:
        if not resolved:
            resolved.append(resolve())
        target = resolved[0]
        match = to_match(window)
        assert match is not None
        if isinstance(target, Stream):
            key = f"{owner}|timeout|{origin_key(window)}"
            payload = match.as_payload()
            return until_reachable(lambda: target.append(payload, key=key), RetryPolicy.outage_timeout)
        return target(match)

    return deliver
