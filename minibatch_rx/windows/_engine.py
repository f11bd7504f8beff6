"""The machinery shared by every window strategy.

A strategy is a small state machine, a :class:`WindowCore`: it is told about
messages and about the clock, and answers with the windows to emit. It never
touches threads or schedulers. :class:`WindowOperator` drives a core as a
reactivex operator: it serialises messages and timer callbacks under one lock,
keeps exactly one timer armed at the core's next deadline (on the scheduler,
so virtual time works), and stamps each window with its ``ack`` seq.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, SerialDisposable
from reactivex.scheduler import TimeoutScheduler
from reactivex.subject import Subject

from minibatch_rx.message import Message
from minibatch_rx.window import Window


def to_datetime(seconds: float) -> datetime:
    """Epoch seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, UTC)


def scheduler_seconds(scheduler: abc.SchedulerBase) -> float:
    """The scheduler's clock as epoch seconds (virtual clocks start at 0)."""
    now = scheduler.now
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.timestamp()


class WindowCore(ABC):
    """The per-subscription state of one window strategy.

    Times are epoch seconds: ``now`` from the scheduler, message times from
    ``Message.ts``. Each method returns the windows to emit, in order.
    """

    stream: str | None = None

    def start(self, now: float) -> list[Window]:
        """Called once at subscription."""
        return []

    @abstractmethod
    def on_message(self, message: Message, now: float) -> list[Window]:
        """A message arrived."""

    def on_timer(self, now: float) -> list[Window]:
        """The clock reached (or passed) :meth:`deadline`."""
        return []

    def deadline(self) -> float | None:
        """When :meth:`on_timer` must run next, or ``None`` for never."""
        return None

    def on_complete(self, now: float) -> list[Window]:
        """The source completed: flush what should not be lost."""
        return []

    @abstractmethod
    def held_min_seq(self) -> int | None:
        """Lowest seq still held for a future window (``None`` if none)."""

    def late(self) -> list[Message]:
        """Messages found late since the last call (then forgotten)."""
        return []


class WindowOperator:
    """A reactivex operator ``Observable[Message] -> Observable[Window]``.

    Call it on an observable (or pass it to ``pipe``). Its :attr:`late`
    observable carries messages that arrived after their window was emitted.
    """

    def __init__(
        self, make_core: Callable[[], WindowCore], scheduler: abc.SchedulerBase | None = None
    ) -> None:
        self._make_core = make_core
        self._scheduler = scheduler
        self.late: Subject[Message] = Subject()

    def __call__(self, source: Observable[Message]) -> Observable[Window]:
        def subscribe(
            observer: abc.ObserverBase[Window], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            scheduler = self._scheduler or scheduler_ or TimeoutScheduler.singleton()
            return _Run(self, self._make_core(), scheduler, observer).subscribe(source, scheduler_)

        return reactivex.create(subscribe)


class _Run:
    """One subscription of a :class:`WindowOperator`."""

    def __init__(self, operator: WindowOperator, core: WindowCore,
                 scheduler: abc.SchedulerBase, observer: abc.ObserverBase[Window]) -> None:
        self.operator, self.core, self.scheduler, self.observer = operator, core, scheduler, observer
        self.lock = threading.RLock()
        self.timer = SerialDisposable()
        self.armed: float | None = None
        self.last_seen = 0
        self.done = False

    def subscribe(self, source: Observable[Message], scheduler_: Any) -> abc.DisposableBase:
        with self.lock:
            self.step(self.core.start)
        subscription = source.subscribe(
            self.on_next, self.on_error, self.on_completed, scheduler=scheduler_
        )
        return CompositeDisposable(subscription, self.timer, reactivex.disposable.Disposable(self.stop))

    def stop(self) -> None:
        with self.lock:
            self.done = True

    def on_next(self, message: Message) -> None:
        with self.lock:
            if self.done:
                return
            self.last_seen = max(self.last_seen, message.seq)
            self.step(lambda now: self.core.on_message(message, now))

    def on_error(self, error: Exception) -> None:
        with self.lock:
            if not self.done:
                self.done = True
                self.timer.dispose()
                self.observer.on_error(error)

    def step(self, call: Callable[[float], list[Window]]) -> bool:
        """Run one core method and emit its windows; False if it failed.

        A strategy may run user code (a ``WindowEmitter``); its exception ends
        the subscription with ``on_error`` instead of escaping into the
        producer, or into a timer thread where it would be lost.
        """
        try:
            windows = call(scheduler_seconds(self.scheduler))
        except Exception as error:
            self.on_error(error)
            return False
        self.emit(windows)
        return True

    def on_completed(self) -> None:
        with self.lock:
            if self.done or not self.step(self.core.on_complete):
                return
            self.done = True
            self.timer.dispose()
            self.observer.on_completed()

    def on_timer(self, _scheduler: abc.SchedulerBase, _state: Any = None) -> None:
        with self.lock:
            self.armed = None
            if not self.done:
                self.step(self.core.on_timer)

    def emit(self, windows: list[Window]) -> None:
        """Hand windows downstream (under the lock), then re-arm the timer."""
        for message in self.core.late():
            self.operator.late.on_next(message)
        if windows:
            for window, ack in zip(windows, self.acks(windows), strict=True):
                self.observer.on_next(replace(window, ack=ack))
        if not self.done:
            self.arm()

    def acks(self, windows: list[Window]) -> list[int]:
        """The ack of each window of one batch.

        Once window ``i`` is processed, what is not yet handled is what the core
        still holds plus the messages of the windows after ``i`` in the batch:
        stamping every window with the batch's final ack would commit those
        later windows before they are processed (lost on a crash).
        """
        pending = self.core.held_min_seq()
        acks: list[int] = []
        for window in reversed(windows):
            acks.append(self.last_seen if pending is None else pending - 1)
            if window.messages:
                low = min(m.seq for m in window.messages)
                pending = low if pending is None else min(pending, low)
        acks.reverse()
        return acks

    def arm(self) -> None:
        deadline = self.core.deadline()
        if deadline is None or deadline == self.armed:
            return
        self.armed = deadline
        self.timer.disposable = self.scheduler.schedule_absolute(to_datetime(deadline), self.on_timer)
