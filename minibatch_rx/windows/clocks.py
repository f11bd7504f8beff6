"""Clocks: what time a record has, and how far the stream's time has come.

A time window closes when the **watermark** reaches its end (plus ``grace``):
the watermark is the clock's claim that no record older than it is still on
its way. It never goes back. Two clocks exist:

* :class:`IngestTime` (the default): a record's time is its ingest ``ts``,
  stamped by the store. The watermark is the newest ``ts`` seen; once the
  stream has been quiet for ``quiet`` seconds it follows the scheduler clock.
* :class:`EventTime`: a record's time is read from its payload (ISO-8601
  text, epoch seconds, or a ``datetime``; naive times are UTC). The
  watermark is the highest event time seen minus ``max_delay``; once nothing
  has arrived for ``idle`` seconds it advances with the scheduler clock, so
  the last windows of a quiet stream close without new records.

A clock spec is a frozen value; :meth:`ClockSpec.start` makes the per-run
:class:`RunClock` that a window core asks. The part of the watermark that
comes from the data is deterministic (a replay recomputes it); the part that
comes from the scheduler clock is a clock decision, journaled by pipelines.

>>> EventTime('ts', max_delay='2s').label
'event_time(ts,2s)'
>>> event_seconds('2026-01-01T00:00:01Z'), event_seconds(5), event_seconds('1970-01-01 00:00:02')
(1767225601.0, 5.0, 2.0)
>>> event_seconds('yesterday')  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
minibatch_rx.windows.clocks.BadRecordError: timestamp 'yesterday' is not ISO-8601 text, ...
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dateutil.parser import isoparse

from minibatch_rx.durations import Interval, to_seconds
from minibatch_rx.errors import InvalidArgumentError
from minibatch_rx.message import Message
from minibatch_rx.naming import function_name, label

DEFAULT_QUIET = 0.25
DEFAULT_IDLE = 1.0


class BadRecordError(ValueError):
    """A record a window cannot place: its timestamp or key is missing or
    malformed. The pipeline sends it to the dead-letter stream with this
    reason and goes on with the next record."""


def event_seconds(value: Any) -> float:
    """A timestamp as epoch seconds: ISO-8601 text (naive means UTC), int or
    float epoch seconds, or a ``datetime`` (naive means UTC)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
        if math.isfinite(seconds):
            return seconds
    elif isinstance(value, datetime):
        return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)  # fast path; dateutil reads the rest of ISO-8601
        except ValueError:
            try:
                parsed = isoparse(value)
            except (ValueError, OverflowError):
                parsed = None
        if parsed is not None:
            return event_seconds(parsed)
    raise BadRecordError(f"timestamp {value!r} is not ISO-8601 text, epoch seconds or a datetime")


def field_reader(source: str | Callable[[Any], Any], what: str) -> Callable[[Any], Any]:
    """A function reading ``source`` from a record's value: a field name (a key
    of a dict payload) or a callable given the value. A missing field, or an
    exception of the callable, is a :class:`BadRecordError` naming it."""
    if isinstance(source, str):
        if not source:
            raise InvalidArgumentError(f"{what} field name must not be empty")
        name = source

        def read_field(value: Any) -> Any:
            try:
                return value[name]
            except (KeyError, TypeError, IndexError):
                raise BadRecordError(f"{what} field {name!r} is missing from {_short(value)}") from None

        return read_field
    if not callable(source):
        raise InvalidArgumentError(f"{what} needs a field name or a callable, got {source!r}")
    fn = source

    def read_with(value: Any) -> Any:
        try:
            return fn(value)
        except Exception as error:
            raise BadRecordError(f"{what} function {function_name(fn)} failed: "
                                 f"{type(error).__name__}: {error}") from error

    return read_with


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


class RunClock(ABC):
    """The clock of one window operator run. Times are epoch seconds."""

    max_time = -math.inf
    """The highest record time seen."""
    last_arrival = -math.inf
    """Scheduler time of the latest record (or of the subscription)."""
    from_start = False
    """Whether the watermark follows the scheduler clock before any record
    arrived (ingest-time windows that emit empty windows)."""
    settles = False
    """Whether :meth:`settled` can move the watermark (else it is not asked)."""

    @abstractmethod
    def time_of(self, message: Message) -> float:
        """The record's time; :class:`BadRecordError` if it has none."""

    @abstractmethod
    def data_watermark(self) -> float:
        """The watermark the records alone give (deterministic on replay)."""

    @abstractmethod
    def watermark(self, now: float) -> float:
        """The watermark at scheduler time ``now`` (at least the data's)."""

    @abstractmethod
    def reaches(self, target: float) -> float:
        """The scheduler time at which :meth:`watermark` reaches ``target``,
        if no record arrives meanwhile."""

    def advancing(self, now: float) -> bool:
        """Whether, at ``now``, the scheduler clock adds to what the records
        give (the stream has been quiet long enough); cheap, asked per record."""
        return True

    def lead(self) -> float:
        """How far the records' watermark is ahead of their arrival: while it
        does not grow, a later record can only move :meth:`reaches` later."""
        return -math.inf

    def arrival(self, message: Message, now: float) -> float:
        """When a record counts as arrived: the scheduler time it is read at."""
        return now

    def settled(self, arrival: float) -> float:
        """The watermark the clock reached by ``arrival`` (a record's ingest
        time) since the last record, as the records show it: ``-inf`` if the
        spell was not long enough to move it. Deterministic, so a replay
        decides the same (unlike the scheduler clock at read time)."""
        return -math.inf

    def arrived(self, t: float, now: float) -> None:
        """A record of time ``t`` arrived at scheduler time ``now``."""
        if t > self.max_time:
            self.max_time = t
        self.last_arrival = now


class _IngestClock(RunClock):
    def __init__(self, quiet: float) -> None:
        self.quiet = quiet
        self.from_start = False  # follow the clock before the first record (empty windows)

    def time_of(self, message: Message) -> float:
        return message.ts.timestamp()

    def data_watermark(self) -> float:
        return self.max_time

    def watermark(self, now: float) -> float:
        if self.max_time == -math.inf and not self.from_start:
            return -math.inf  # no record yet: nothing to say about time
        if now - self.last_arrival >= self.quiet - 1e-6:
            return max(now, self.max_time)
        return min(now, self.max_time)

    def reaches(self, target: float) -> float:
        if target <= self.max_time:
            return target
        return max(target, self.last_arrival + self.quiet)

    def advancing(self, now: float) -> bool:
        return now - self.last_arrival >= self.quiet - 1e-6


class _EventClock(RunClock):
    settles = True

    def __init__(self, read: Callable[[Any], Any], max_delay: float, idle: float) -> None:
        self.read, self.max_delay, self.idle = read, max_delay, idle

    def time_of(self, message: Message) -> float:
        return event_seconds(self.read(message.data))

    def data_watermark(self) -> float:
        return self.max_time - self.max_delay

    def watermark(self, now: float) -> float:
        advance = now - self.last_arrival - self.idle
        return self.data_watermark() + (advance if advance > 0 else 0.0)

    def reaches(self, target: float) -> float:
        return self.last_arrival + self.idle + max(0.0, target - self.data_watermark())  # inf: never

    def advancing(self, now: float) -> bool:
        return now - self.last_arrival > self.idle

    def arrival(self, message: Message, now: float) -> float:
        # When it was stored (its ingest ts), which a replay finds again: the time
        # it is read at would make the advance over a quiet spell, and so what is
        # late, depend on when the consumer ran.
        ts = message.ts
        return now if ts is None else min(now, ts.timestamp())

    def settled(self, arrival: float) -> float:
        advance = arrival - self.last_arrival - self.idle
        return self.data_watermark() + advance if advance > 0 else -math.inf

    def lead(self) -> float:
        return self.data_watermark() - self.last_arrival


class ClockSpec(ABC):
    """Which time a window uses: :class:`IngestTime` or :class:`EventTime`."""

    @property
    @abstractmethod
    def label(self) -> str:
        """How the clock reads in a pipeline's shape."""

    @abstractmethod
    def start(self) -> RunClock:
        """A fresh clock for one run."""


@dataclass(frozen=True)
class IngestTime(ClockSpec):
    """The store's ingest ``ts``; the watermark follows the scheduler clock
    after ``quiet`` seconds without records."""

    quiet: Interval = DEFAULT_QUIET
    quiet_s: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "quiet_s", to_seconds(self.quiet, "quiet", allow_zero=True))

    @property
    def label(self) -> str:
        return "ingest_time"

    def start(self) -> RunClock:
        return _IngestClock(self.quiet_s)


@dataclass(frozen=True)
class EventTime(ClockSpec):
    """Time read from each record: ``source`` is a field name or a function of
    the payload (or of the value a previous stage produced). The watermark is
    the highest time seen minus ``max_delay``; after ``idle`` seconds without
    records it advances with the scheduler clock (``idle=None``: never, the
    records alone move it; ``idle`` should outlast a source's usual silences,
    or the events of a device that uploads in bursts arrive late).

    >>> EventTime('ts', max_delay=-1)
    Traceback (most recent call last):
    ...
    minibatch_rx.errors.InvalidArgumentError: event_time max_delay must be >= 0, got -1
    """

    source: str | Callable[[Any], Any]
    max_delay: Interval = 0
    idle: Interval | None = DEFAULT_IDLE
    seconds: tuple[float, float] = field(init=False, repr=False, compare=False)
    read: Callable[[Any], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "read", field_reader(self.source, "event_time"))
        object.__setattr__(self, "seconds", (
            to_seconds(self.max_delay, "event_time max_delay", allow_zero=True),
            math.inf if self.idle is None else to_seconds(self.idle, "event_time idle", allow_zero=True)))

    @property
    def label(self) -> str:
        source = self.source if isinstance(self.source, str) else function_name(self.source)
        return label("event_time", source, self.max_delay)

    def start(self) -> RunClock:
        max_delay, idle = self.seconds
        return _EventClock(self.read, max_delay, idle)


__all__ = ["BadRecordError", "ClockSpec", "EventTime", "IngestTime", "RunClock", "event_seconds",
           "field_reader"]
