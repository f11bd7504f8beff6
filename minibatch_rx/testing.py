"""Test pipelines and window operators in virtual time, in a few lines, with no sleeps.

Time units: every time here is in **seconds** of a reactivex ``TestScheduler``'s
virtual clock, which starts at 0 (the Unix epoch, as a datetime). A message
stamped ``ts`` carries ``datetime.fromtimestamp(ts, UTC)``, so window bounds
and message times compare directly with scheduler times.

Pipelines: :class:`VirtualTime` bundles a ``TestScheduler`` with a memory store
whose ingest clock is that scheduler. Schedule appends at virtual times, run a
pipeline, and assert what came out and when.

>>> from minibatch_rx.testing import VirtualTime
>>> vt = VirtualTime()
>>> s = vt.stream('readings')
>>> for t, v in [(1, 10), (2, 20), (12, 30)]:
...     vt.append_at(t, s, {'v': v})
>>> out = vt.run(s.fixed_time_window(10).map(lambda w: [d['v'] for d in w.data]), until=30)
>>> out
[Emission(time=10.0, value=[10, 20]), Emission(time=20.0, value=[30])]

Operators: marble helpers in RxPY's testing style. :func:`arrive` is a message
arriving at a virtual time, for ``scheduler.create_hot_observable``;
:func:`emitted` turns what an observer recorded into plain tuples.

**The 200-tick offset.** ``TestScheduler.start(create)`` calls ``create`` at
virtual time :data:`CREATED` (100), subscribes at :data:`SUBSCRIBED` (200) and
disposes at :data:`DISPOSED` (1000). A hot observable's notifications before 200
happen before anyone listens and are lost, and nothing after 1000 is recorded:
write marble times from 200 on (``arrive(210, 1)`` is 10 s after subscribing).
Pass ``subscribed=``/``disposed=`` to ``start`` to move them (not 0: reactivex
reads 0 as "use the default").

>>> from reactivex.testing import TestScheduler
>>> from minibatch_rx import count_window
>>> scheduler = TestScheduler()
>>> xs = scheduler.create_hot_observable(arrive(150, 1), arrive(210, 2), arrive(220, 3))
>>> observer = scheduler.start(lambda: xs.pipe(count_window(2, scheduler=scheduler)))
>>> emitted(observer)  # message 1 came before the subscription at 200
[(220.0, [2, 3], None, None, 3)]

:class:`VirtualTime` has no such offset: ``vt.run`` subscribes at the current
virtual time (0 for a new one).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar, cast

from reactivex import Notification, Observable
from reactivex.notification import OnCompleted, OnError, OnNext
from reactivex.testing import TestScheduler
from reactivex.testing.mockobserver import MockObserver
from reactivex.testing.recorded import Recorded

from minibatch_rx.message import Message
from minibatch_rx.pipeline import Pipeline
from minibatch_rx.store.memory import MemoryStore
from minibatch_rx.streams import Stream
from minibatch_rx.window import Window

__all__ = [
    "CREATED",
    "DISPOSED",
    "SUBSCRIBED",
    "Emission",
    "VirtualTime",
    "arrive",
    "emitted",
    "late_log",
    "message",
    "next_values",
    "notifications",
    "on_completed",
    "on_error",
    "on_next",
    "seconds",
    "seqs_and_bounds",
]

T = TypeVar("T")
_ids = itertools.count(1)

CREATED = 100.0
"""Virtual time at which ``TestScheduler.start`` calls its factory."""
SUBSCRIBED = 200.0
"""Virtual time at which ``TestScheduler.start`` subscribes: earlier hot notifications are lost."""
DISPOSED = 1000.0
"""Virtual time at which ``TestScheduler.start`` disposes the subscription."""


@dataclass(frozen=True)
class Emission:
    """A value a pipeline produced, and the virtual time (seconds) it appeared."""

    time: float
    value: Any


class VirtualTime:
    """A virtual clock plus an isolated in-memory store that uses it."""

    def __init__(self) -> None:
        self.scheduler = TestScheduler()
        self.store = MemoryStore(f"memory://virtual-{next(_ids)}", clock=lambda: self.scheduler.now)

    @property
    def now(self) -> float:
        """The virtual clock, in seconds."""
        return float(self.scheduler.clock)

    def stream(self, name: str) -> Stream:
        """A stream on this virtual store."""
        return Stream.get_or_create(name, store=self.store)

    def append_at(
        self, time: float, stream: Stream, payload: Mapping[str, Any], stamp: float | None = None
    ) -> None:
        """Append ``payload`` to ``stream`` when the virtual clock reaches ``time``.

        The store stamps it with the virtual time, or with ``stamp`` if given:
        a producer whose clock lags behind (messages carry the writer's time).

        >>> vt = VirtualTime()
        >>> s = vt.stream('lagging')
        >>> vt.append_at(30, s, {'n': 1}, stamp=25)
        >>> vt.advance_to(30)
        >>> [seconds(m.ts) for m in s.read()]
        [25.0]
        """
        def append(*_: Any) -> None:
            if stamp is None:
                stream.append(payload)
                return
            clock = self.store.clock
            self.store.clock = lambda: datetime.fromtimestamp(float(stamp), UTC)
            try:
                stream.append(payload)
            finally:
                self.store.clock = clock

        self.scheduler.schedule_absolute(float(time), append)

    def advance_to(self, time: float) -> None:
        """Run everything scheduled up to ``time``."""
        self.scheduler.advance_to(float(time))

    def run(self, pipeline: Pipeline, until: float, consumer: str | None = "default") -> list[Emission]:
        """Run ``pipeline`` from the current virtual time to ``until``; return
        what it emitted (after its last stage), each with its time. A pipeline
        error is raised here."""
        emissions: list[Emission] = []
        errors: list[Exception] = []
        observable = pipeline.to_observable(consumer, scheduler=self.scheduler)
        subscription = observable.subscribe(
            lambda value: emissions.append(Emission(self.now, value)),
            errors.append,
            scheduler=self.scheduler,
        )
        try:
            self.advance_to(until)
        finally:
            subscription.dispose()
            # An exception escaping a scheduled action leaves the scheduler marked
            # running at that time; the next run would silently do nothing.
            self.scheduler.stop()
        if errors:
            raise errors[0]
        return emissions


def seconds(moment: datetime | None) -> float | None:
    """A window bound or message time as virtual seconds (``None`` stays ``None``).

    >>> seconds(message(1, 12.5).ts)
    12.5
    """
    return None if moment is None else moment.timestamp()


# -- marbles ------------------------------------------------------------------------


def message(seq: int, ts: float, data: Mapping[str, Any] | None = None, stream: str = "s") -> Message:
    """Message ``seq`` of ``stream`` stamped at virtual time ``ts``, carrying
    ``data`` (default: ``{'n': seq}``).

    >>> m = message(3, 210)
    >>> (m.stream, m.seq, m.ts.isoformat(), m.data)
    ('s', 3, '1970-01-01T00:03:30+00:00', {'n': 3})
    """
    payload = {"n": seq} if data is None else dict(data)
    return Message(stream, seq, datetime.fromtimestamp(ts, UTC), payload)


def on_next(time: float, value: T) -> Recorded[T]:
    """A notification of ``value`` at virtual ``time`` (fractions allowed)."""
    return Recorded(cast(int, time), OnNext(value))


def on_completed(time: float) -> Recorded[Any]:
    """Completion at virtual ``time``."""
    return Recorded(cast(int, time), OnCompleted())


def on_error(time: float, error: Exception) -> Recorded[Any]:
    """Error ``error`` at virtual ``time``."""
    return Recorded(cast(int, time), OnError(error))


def arrive(
    time: float, seq: int, ts: float | None = None, data: Mapping[str, Any] | None = None
) -> Recorded[Message]:
    """Message ``seq`` arriving at virtual ``time``, stamped ``ts`` (default:
    ``time``; an earlier ``ts`` is a message that was delayed on its way), for
    ``scheduler.create_hot_observable``.

    >>> arrive(215, 2, ts=211).value.value.ts.timestamp()
    211.0
    """
    return on_next(time, message(seq, time if ts is None else ts, data))


def notifications(
    observer: MockObserver[T], describe: Callable[[T], tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """Each recorded notification as ``(time, *describe(value))``,
    ``(time, 'completed')`` or ``(time, 'error', exception)``."""
    out: list[tuple[Any, ...]] = []
    for record in observer.messages:
        note = _notification(record)
        if isinstance(note, OnNext):
            out.append((record.time, *describe(note.value)))
        elif isinstance(note, OnError):
            out.append((record.time, "error", note.exception))
        else:
            out.append((record.time, "completed"))
    return out


def next_values(observer: MockObserver[T]) -> list[T]:
    """The values an observer received, in order, without their times.

    >>> scheduler = TestScheduler()
    >>> xs = scheduler.create_hot_observable(on_next(210, 'a'), on_completed(220))
    >>> next_values(scheduler.start(lambda: xs))
    ['a']
    """
    return [note.value for note in map(_notification, observer.messages) if isinstance(note, OnNext)]


def seqs_and_bounds(window: Window) -> tuple[Any, ...]:
    """A window as ``(seqs, start, end, ack)``, its bounds in virtual seconds
    (``None`` when it has none)."""
    return [m.seq for m in window.messages], seconds(window.start), seconds(window.end), window.ack


def emitted(observer: MockObserver[Window]) -> list[tuple[Any, ...]]:
    """Each notification as ``(time, seqs, start, end, ack)``, ``(time, 'completed')``
    or ``(time, 'error', exception)``."""
    return notifications(observer, seqs_and_bounds)


class HasLate(Protocol):
    """A window operator: its ``late`` observable carries messages that came too late."""

    @property
    def late(self) -> Observable[Message]:
        """Messages that arrived after their window was emitted."""
        ...


def late_log(scheduler: TestScheduler, operator: HasLate) -> list[tuple[float, int]]:
    """A list that fills with ``(time, seq)`` of each message ``operator`` reports late.

    >>> from minibatch_rx import fixed_time_window
    >>> scheduler = TestScheduler()
    >>> op = fixed_time_window(10, scheduler=scheduler)
    >>> late = late_log(scheduler, op)
    >>> xs = scheduler.create_hot_observable(arrive(211, 1), arrive(225, 2, ts=218))
    >>> emitted(scheduler.start(lambda: xs.pipe(op)))
    [(220.0, [1], 210.0, 220.0, 1)]
    >>> late
    [(225.0, 2)]
    """
    log: list[tuple[float, int]] = []
    operator.late.subscribe(lambda m: log.append((float(scheduler.clock), m.seq)))
    return log


def _notification(record: Recorded[T]) -> Notification[T]:
    """A recorded notification (an observer records nothing but notifications)."""
    value = record.value
    if not isinstance(value, Notification):
        raise TypeError(f"expected a recorded notification, got {type(value).__name__}")
    return value
