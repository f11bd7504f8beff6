"""``Pipeline.pipe``: plain reactivex operators, applied to each window on its own.

Each window's values go through a fresh chain of the operators, completed
when the window's Ack arrives; what the chain emits by then is passed on as
that window's values, before the Ack. So operators that hold values
(``buffer_with_count``, ``to_list``) flush within the window, and nothing a
window produced is acknowledged before it is sunk. Operators that wait for
time cannot finish within a window and are refused.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import reactivex
from reactivex import Observable, abc, typing
from reactivex.disposable import CompositeDisposable, Disposable
from reactivex.internal.exceptions import WouldBlockException
from reactivex.scheduler import ImmediateScheduler
from reactivex.scheduler.periodicscheduler import PeriodicScheduler
from reactivex.subject import Subject

from minibatch_rx.calls import describe
from minibatch_rx.errors import (
    InvalidArgumentError,
)
from minibatch_rx.message import Message
from minibatch_rx.naming import function_name
from minibatch_rx.stages import Ack, Envelope, Failure, Item, Operators, Stage
from minibatch_rx.window import Window


def rx_stage(operators: Operators, failure: Failure) -> Stage:
    """Apply plain reactivex operators to each window's values on their own.

    For each origin (a window, or a bare message), the operators get a fresh
    chain: its input receives the values of that origin's Items and completes
    when the origin's Ack arrives. What the chain emitted up to and including
    its completion goes on as Items of that origin, then the Ack follows. So
    an operator that holds values (``buffer_with_count``, ``to_list``,
    ``skip_last``...) flushes them within the window, before its position is
    committed, and nothing is attributed to another window. An Ack with no
    Items before it (say, a filtered-out window) passes on alone.

    An error inside the operators dead-letters that window whole (none of its
    outputs pass on); the next window gets a fresh chain. A chain that has not
    completed once its input did (``delay``, ``sample``, ``observe_on``:
    anything that waits for time or for another thread) fails the pipeline
    with :class:`~minibatch_rx.errors.InvalidArgumentError` at its first
    window: it would hold values across windows. Operators without a
    scheduler of their own get one that runs work due now at once, so
    ``start_with`` or ``concat`` finish within the window wherever it is
    processed from, and refuses work for later.

    >>> import reactivex.operators as ops
    >>> from minibatch_rx import stream
    >>> s = stream('doc-pipe', url='memory://doc-pipe')
    >>> _ = s.extend([{'v': v} for v in range(1, 6)])
    >>> got = []
    >>> pairs = s.count_window(3).flat_map(lambda w: w.data).pipe(ops.buffer_with_count(2))
    >>> _ = pairs.to_observable().subscribe(got.append)
    >>> got  # [{'v': 3}] is flushed with its window; message 5 waits in an open window
    [[{'v': 1}, {'v': 2}], [{'v': 3}]]
    """

    def stage(source: Observable[Envelope]) -> Observable[Envelope]:
        def subscribe(observer: abc.ObserverBase[Envelope],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            windows = _PipeWindows(operators, failure, observer)
            subscription = source.subscribe(windows.on_next, observer.on_error, observer.on_completed,
                                            scheduler=scheduler)
            return CompositeDisposable(subscription, Disposable(windows.discard))

        return reactivex.create(subscribe)

    return stage


_TState = TypeVar("_TState")


class _Instant(ImmediateScheduler, PeriodicScheduler):
    """The scheduler pipe() chains are subscribed on (operators use it unless
    given their own): work due now runs at once, so ``start_with`` or
    ``concat`` finish within the window even when it is processed inside a
    running trampoline; work for later, periodic work included, raises
    ``WouldBlockException``, which :func:`rx_stage` reports as time-based."""

    def schedule_periodic(self, period: typing.RelativeTime,
                          action: typing.ScheduledPeriodicAction[_TState],
                          state: _TState | None = None) -> abc.DisposableBase:
        raise WouldBlockException()


class _WindowChain:
    """The operators applied to the values of one origin; outputs are kept
    until the input ends, so none escapes before the window's are known good."""

    def __init__(self, operators: Operators, origin: Window | Message) -> None:
        self.origin = origin
        self.values: Subject[Any] = Subject()
        self.outputs: list[Any] = []
        self.error: Exception | None = None
        self.completed = False
        self.subscription: abc.DisposableBase = Disposable()
        self._guarded(lambda: self._subscribe(operators))

    def _subscribe(self, operators: Operators) -> None:
        self.subscription = self.values.pipe(*operators).subscribe(
            self.outputs.append, self._fail, self._complete, scheduler=_Instant())

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error

    def _complete(self) -> None:
        self.completed = True

    def _guarded(self, step: Callable[[], None]) -> None:
        """Run ``step`` unless the chain already failed; an exception escaping
        the operators (not every one routes them to ``on_error``) fails it."""
        if self.error is not None:
            return
        try:
            step()
        except Exception as exc:
            self._fail(exc)

    def feed(self, value: Any) -> None:
        self._guarded(lambda: self.values.on_next(value))

    def end(self) -> None:
        """Complete the input, then stop whatever the operators still have scheduled."""
        self._guarded(self.values.on_completed)
        self.subscription.dispose()

    @property
    def waits(self) -> bool:
        """True if the operators would emit or complete later (time, another thread)."""
        return isinstance(self.error, WouldBlockException) or (self.error is None and not self.completed)


class _PipeWindows:
    """One subscription of :func:`rx_stage`: routes Items into the chain of
    their origin, and closes that chain when the Ack comes."""

    def __init__(self, operators: Operators, failure: Failure,
                 observer: abc.ObserverBase[Envelope]) -> None:
        self.operators, self.failure, self.observer = operators, failure, observer
        self.chain: _WindowChain | None = None

    def on_next(self, envelope: Envelope) -> None:
        if isinstance(envelope, Ack):
            self.close()
            self.observer.on_next(envelope)
            return
        if self.chain is not None and self.chain.origin is not envelope.origin:
            self.close()  # Acks follow their window's Items; be safe if a stage broke that
        if self.chain is None:
            self.chain = _WindowChain(self.operators, envelope.origin)
        self.chain.feed(envelope.value)

    def close(self) -> None:
        """End the open chain: pass its outputs on, dead-letter it, or fail the pipeline."""
        chain, self.chain = self.chain, None
        if chain is None:
            return
        chain.end()
        if chain.waits:
            raise InvalidArgumentError(
                f"pipe({', '.join(map(_operator_name, self.operators))}) must finish when a window's "
                f"values end, but had not completed with those of {describe(chain.origin)}: time-based "
                "operators like delay or sample hold values across windows, and a window's position "
                "is committed once its values are handled; batch with a window strategy instead"
            )
        if chain.error is not None:
            self.failure.bury("pipe", chain.origin, chain.error, 1)
            return
        for value in chain.outputs:
            self.observer.on_next(Item(value, chain.origin))

    def discard(self) -> None:
        """On dispose: drop an unfinished chain (its window was never acknowledged)."""
        chain, self.chain = self.chain, None
        if chain is not None:
            chain.subscription.dispose()


def _operator_name(operator: Callable[..., Any]) -> str:
    """``delay`` for ``ops.delay(1.0)``: reactivex's operator factories return
    a curried wrapper, whose closure holds the implementation (``delay_``)."""
    name = function_name(operator)
    if name.startswith("curry_flip."):
        for cell in getattr(operator, "__closure__", None) or ():
            if inspect.isfunction(cell.cell_contents):
                return cell.cell_contents.__name__.rstrip("_")
    return name
