"""Calling user functions: what is running where, and time limits; and how
minibatch_rx's own operators call each other.

:class:`Activity` records which stage each pipeline thread is running, so a
``stop()`` that gives up can name the stuck one. :class:`CallThread` runs a
call in a worker thread so ``with_timeout`` can bound it. :class:`Fused` and
:func:`subscribe_to` let one of our operators call the next one directly.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from threading import get_ident
from time import monotonic
from typing import Any, Generic, TypeVar

from reactivex import Observable, abc
from reactivex.internal import default_error, noop

from minibatch_rx.errors import StageTimeoutError
from minibatch_rx.message import Message
from minibatch_rx.window import Window


def describe(origin: Window | Message) -> str:
    """``window s#1..10`` or ``message s#7``: where a value came from, for logs."""
    if isinstance(origin, Message):
        return f"message {origin.stream}#{origin.seq}"
    seqs = [m.seq for m in origin.messages]
    return f"window {origin.stream}#{min(seqs, default=None)}..{max(seqs, default=None)}"


class Activity:
    """What user code each pipeline thread is running, to name a stuck stage.

    :meth:`enter` and :meth:`leave` run around every call of a user function:
    each is one dict operation (atomic under the GIL, so no lock), and where
    the value came from is kept as it is, written out only by :meth:`describe`.
    """

    def __init__(self) -> None:
        self._running: dict[int, tuple[str, Window | Message, float]] = {}

    def enter(self, stage: str, origin: Window | Message) -> None:
        """A thread starts running ``stage`` on ``origin``."""
        self._running[get_ident()] = (stage, origin, monotonic())

    def leave(self) -> None:
        """The calling thread's stage returned."""
        self._running.pop(get_ident(), None)

    def running_here(self) -> bool:
        """True if the calling thread is inside a user function of the pipeline."""
        return get_ident() in self._running

    def describe(self) -> str | None:
        """The longest-running stage, e.g. ``"map on window s#1..10 for 12.3 s"``."""
        while True:  # a copy, as threads may enter or leave meanwhile (then copied again)
            try:
                running = list(self._running.values())
                break
            except RuntimeError:  # the dict changed size while being copied
                continue
        if not running:
            return None
        stage, origin, since = min(running, key=lambda entry: entry[2])
        return f"{stage} on {describe(origin)} for {monotonic() - since:.1f} s"


class CallThread:
    """Runs user calls in a worker thread so a time limit can be enforced.

    A call that overruns is abandoned: Python cannot stop a thread, so the
    worker keeps running it in the background (a daemon thread, which does not
    keep the process alive) and the next call gets a fresh worker.
    """

    def __init__(self) -> None:
        self._worker: _Worker | None = None

    def call(self, fn: Callable[[], Any], timeout: float, stage: str) -> Any:
        worker = self._worker
        if worker is None:
            worker = self._worker = _Worker()
        done, outcome = worker.submit(fn)
        if not done.wait(timeout):
            self._worker = None  # abandoned with its call
            worker.retire()
            raise StageTimeoutError(f"{stage} did not return within {timeout:g} s (its thread is abandoned)")
        ok, value = outcome
        if ok:
            return value
        raise value


class _Worker:
    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], threading.Event, list[Any]] | None] = (
            queue.SimpleQueue())
        threading.Thread(target=self._run, name="minibatch-call", daemon=True).start()

    def submit(self, fn: Callable[[], Any]) -> tuple[threading.Event, list[Any]]:
        done, outcome = threading.Event(), list[Any]()
        self._jobs.put((fn, done, outcome))
        return done, outcome

    def retire(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, done, outcome = job
            try:
                outcome[:] = [True, fn()]
            except BaseException as exc:  # handed to the waiting caller, which raises it
                outcome[:] = [False, exc]
            done.set()




_T = TypeVar("_T")


class Fused(Observable[_T]):
    """``reactivex.create(subscribe)`` for minibatch_rx's own operators.

    reactivex wraps every subscriber in an ``AutoDetachObserver``: one more
    Python call per value for each operator of a chain. An operator that
    subscribes to a :class:`Fused` observable through :func:`subscribe_to`
    is handed its callables as they are instead, so a value crosses a run of
    our operators in plain calls. Anyone else subscribing (``subscribe``,
    ``pipe`` with reactivex operators) gets the usual wrapped subscription.
    """

    def __init__(self, subscribe: Callable[[abc.ObserverBase[_T], abc.SchedulerBase | None],
                                           abc.DisposableBase]) -> None:
        super().__init__(subscribe)
        self.direct = subscribe


class _Direct(abc.ObserverBase[_T], Generic[_T]):
    """An observer that is its callables: ``observer.on_next`` is the
    subscriber's own function (an instance attribute), not a method calling it."""

    def __init__(self, on_next: Callable[[_T], None] | None,
                 on_error: Callable[[Exception], None] | None,
                 on_completed: Callable[[], None] | None) -> None:
        vars(self).update(on_next=on_next or noop, on_error=on_error or default_error,
                          on_completed=on_completed or noop)

    # Shadowed by the instance attributes set above; there for the ABC.
    def on_next(self, value: _T) -> None:
        vars(self)["on_next"](value)

    def on_error(self, error: Exception) -> None:
        vars(self)["on_error"](error)

    def on_completed(self) -> None:
        vars(self)["on_completed"]()


def subscribe_to(source: Observable[_T], on_next: Callable[[_T], None] | None,
                 on_error: Callable[[Exception], None] | None, on_completed: Callable[[], None] | None,
                 scheduler: abc.SchedulerBase | None) -> abc.DisposableBase:
    """``source.subscribe(on_next, on_error, on_completed, scheduler=scheduler)``,
    calling ``source``'s subscribe function directly if it is :class:`Fused`.

    Only for subscriptions made inside another operator's subscription (the
    outer ``subscribe`` keeps reactivex's once-only ``on_error`` and
    ``on_completed``, and its disposal cuts off what follows)."""
    if type(source) is Fused:
        return source.direct(_Direct(on_next, on_error, on_completed), scheduler)
    return source.subscribe(on_next, on_error, on_completed, scheduler=scheduler)
