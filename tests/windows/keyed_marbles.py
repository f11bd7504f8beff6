"""Marble helpers for keyed and event-time windows on a TestScheduler.

A record here is a message whose payload is ``{'k': key, 't': t}`` and whose
ingest ``ts`` is ``t`` as well, so one marble feeds both clocks: ingest time
reads ``ts``, ``EventTime('t')`` reads the payload. The scheduler time at
which it *arrives* is separate, which is what out-of-order and lagging
records are made of. Under event time, :func:`run_keyed` stamps each record's
``ts`` with its arrival instead, as a store would: the event clock counts its
quiet spells in ingest time, which a replay finds again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from reactivex.notification import OnNext
from reactivex.testing import TestScheduler
from reactivex.testing.recorded import Recorded

from minibatch_rx import Message, Window
from minibatch_rx.testing import arrive, late_log, notifications, seqs_and_bounds
from minibatch_rx.windows import WindowCore, WindowOperator, WindowSpec
from minibatch_rx.windows.clocks import ClockSpec, EventTime
from minibatch_rx.windows.keys import KeyBy

__all__ = ["Run", "capture_cores", "event", "keyed", "keyed_operator", "rec", "run_keyed"]

Keyed = tuple[Any, ...]
"""``(time, key, seqs, start, end, ack)`` of one window, or ``(time, 'completed')``."""


def rec(at: float, seq: int, key: Any, t: float) -> Recorded[Message]:
    """Record ``seq`` of ``key`` at time ``t``, arriving at scheduler time ``at``."""
    return arrive(at, seq, ts=t, data={"k": key, "t": t})


def event(max_delay: float = 0, idle: float = 100) -> EventTime:
    """The event-time clock on field ``t``. The default ``idle`` is long, so
    only the records move the watermark until the stream has been quiet a while."""
    return EventTime("t", max_delay=max_delay, idle=idle)


def keyed(window: Window) -> tuple[Any, ...]:
    """A window as ``(key, seqs, start, end, ack)``, bounds in virtual seconds."""
    return (window.key, *seqs_and_bounds(window))


def keyed_operator(spec: WindowSpec, scheduler: TestScheduler,
                   clock: ClockSpec | None = None) -> WindowOperator:
    """``spec`` per key of field ``k``, on ``clock`` (the spec's ingest clock if ``None``)."""
    return spec.operator(scheduler, key_by=KeyBy("k"), clock=clock)


def capture_cores(operator: WindowOperator, cores: list[WindowCore]) -> WindowOperator:
    """``operator`` with each core it makes appended to ``cores`` (to inspect its state)."""
    make = operator.make_core

    def make_and_keep() -> WindowCore:
        core = make()
        cores.append(core)
        return core

    return WindowOperator(make_and_keep, operator.scheduler)


class Run:
    """What one keyed operator run produced: windows, late records and the core."""

    def __init__(self, windows: list[Keyed], late: list[tuple[float, int]], core: WindowCore) -> None:
        self.windows, self.late, self.core = windows, late, core


def stamped_on_arrival(record: Recorded[Message]) -> Recorded[Message]:
    """``record`` with its ingest ``ts`` set to the time it arrives."""
    notification = record.value
    assert isinstance(notification, OnNext)
    message = notification.value
    ts = datetime.fromtimestamp(float(record.time), UTC)
    return Recorded(record.time, OnNext(replace(message, ts=ts)))


def run_keyed(spec: WindowSpec, records: Sequence[Recorded[Message]], clock: ClockSpec | None = None,
              *, at: Sequence[tuple[float, Callable[[WindowCore], None]]] = (), **start: Any) -> Run:
    """Run ``spec`` per key over hot ``records`` (subscribed at 200, disposed at
    1000 unless ``start`` says otherwise). ``at``: ``(time, check)`` pairs, each
    called with the core at that virtual time."""
    scheduler = TestScheduler()
    if isinstance(clock, EventTime):
        records = [stamped_on_arrival(r) for r in records]
    xs = scheduler.create_hot_observable(*records)
    cores: list[WindowCore] = []
    operator = capture_cores(keyed_operator(spec, scheduler, clock), cores)
    late = late_log(scheduler, operator)
    for time, check in at:
        scheduler.schedule_absolute(time, lambda *_, check=check: check(cores[0]))
    results = scheduler.start(lambda: xs.pipe(operator), **start)
    return Run(notifications(results, keyed), late, cores[0])
