"""Calling user functions: what is running where, and time limits.

:class:`Activity` records which stage each pipeline thread is running, so a
``stop()`` that gives up can name the stuck one. :class:`CallThread` runs a
call in a worker thread so ``with_timeout`` can bound it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from threading import get_ident
from time import monotonic
from typing import Any

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
        running = list(self._running.values())  # one C-level copy: threads may enter or leave meanwhile
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


