"""Riding out store outages: the one place that says how long to wait and how.

A store that cannot be reached (:class:`~minibatch_rx.errors.StoreUnavailableError`)
or is locked (:class:`~minibatch_rx.errors.StoreBusyError`) is waited out, never a
reason to skip or lose data. Every reader of the package (single consumers,
group members, the read hub, the window journal, commits and sinks) waits the
same way, through these pieces:

* :func:`outage_backoff`: the pause between two tries of a reader, 50 ms
  doubling up to :data:`OUTAGE_BACKOFF_LIMIT`;
* :func:`until_reachable`: a store call retried for up to a bound (commits,
  sinks, journal writes: a pipeline that cannot write for that long stops with
  the error);
* :class:`ResilientReader`: a reader that outlives outages, for a consumer
  thread: a call that meets one is retried, with a fresh reader, until the store
  answers or the consumer stops;
* :func:`retry_later`: the same back-off on a scheduler's clock, so a virtual-time
  consumer (``TestScheduler``) waits an outage out in virtual time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from reactivex import abc

from minibatch_rx.errors import StoreBusyError, StoreUnavailableError
from minibatch_rx.store.base import Backoff, Reader, Store

log = logging.getLogger(__name__)
T = TypeVar("T")

OUTAGES: tuple[type[Exception], ...] = (StoreUnavailableError, StoreBusyError)
"""The errors that mean "the store is not answering now": waited out, not reported."""

OUTAGE_BACKOFF_LIMIT = 2.0
"""Longest pause, seconds, between two attempts of a reader to reach a store that is down."""

CALL_BACKOFF_LIMIT = 1.0
"""Longest pause, seconds, between two attempts of :func:`until_reachable`."""


def outage_backoff() -> Backoff:
    """The back-off of readers waiting out a store outage: 50 ms, doubling up to
    :data:`OUTAGE_BACKOFF_LIMIT`."""
    return Backoff(start=0.05, limit=OUTAGE_BACKOFF_LIMIT)


def until_reachable(operation: Callable[[], T], timeout: float) -> T:
    """Run a store call, retrying with back-off while the store is unreachable
    or locked, for up to ``timeout`` seconds; then the error is raised.

    >>> calls = []
    >>> def flaky():
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         raise StoreBusyError('locked')
    ...     return 'stored'
    >>> until_reachable(flaky, timeout=5.0), len(calls)
    ('stored', 3)
    """
    started = time.monotonic()
    try:
        return operation()
    except OUTAGES as exc:
        return ride_out(operation, timeout, started, exc)


def ride_out(operation: Callable[[], T], timeout: float, started: float, error: Exception) -> T:
    """:func:`until_reachable` after its first attempt (begun at ``started``, a
    ``time.monotonic`` reading) failed with ``error`` (for callers that inline
    the first attempt on a hot path)."""
    backoff = Backoff(start=0.05, limit=CALL_BACKOFF_LIMIT)
    while True:
        if time.monotonic() - started > timeout:
            raise error
        delay = backoff.pause()
        log.warning("store call failed: %s; retrying in %.2gs", error, delay)
        time.sleep(delay)
        try:
            return operation()
        except OUTAGES as exc:
            error = exc


class ResilientReader:
    """A consumer thread's reader of one stream that outlives store outages.

    :meth:`call` runs a store call with the current reader; if the store is down
    or locked, it logs, waits (:func:`outage_backoff`, cut short by ``stop``),
    opens a fresh reader and tries again, until the store answers; once ``stop``
    is set, the outage error is raised instead. Single consumers without a read
    hub and count-window group members read through it.
    """

    def __init__(self, store: Store, stream: str, stop: threading.Event, what: str = "reading") -> None:
        self.store, self.stream, self.stop, self.what = store, stream, stop, what
        self.reader: Reader = self._open()

    def _open(self) -> Reader:
        """A new reader, once the store answers (or the consumer stops: then raises)."""
        backoff = outage_backoff()
        while True:
            try:
                return self.store.reader(self.stream)
            except OUTAGES as exc:
                if self.stop.is_set():
                    raise
                log.warning("%s %r: %s; retrying", self.what, self.stream, exc)
                self.stop.wait(backoff.pause())

    def call(self, operation: Callable[[Reader], T]) -> T:
        """``operation(reader)``, riding out outages (see the class)."""
        backoff = outage_backoff()
        while True:
            try:
                return operation(self.reader)
            except OUTAGES as exc:
                if self.stop.is_set():
                    raise
                log.warning("%s %r: %s; retrying", self.what, self.stream, exc)
                self.stop.wait(backoff.pause())
                self.reader.close()
                self.reader = self._open()

    def close(self) -> None:
        """Release the current reader (a blocked ``wait`` returns at once)."""
        self.reader.close()


def retry_later(scheduler: abc.SchedulerBase, action: Callable[[abc.SchedulerBase, Any], None],
                backoff: Backoff) -> abc.DisposableBase:
    """Schedule ``action`` again after the back-off's next pause, on ``scheduler``'s
    clock: how a consumer driven by a (virtual-time) scheduler waits out an outage."""
    return scheduler.schedule_relative(backoff.pause(), action)


__all__ = ["CALL_BACKOFF_LIMIT", "OUTAGES", "OUTAGE_BACKOFF_LIMIT", "ResilientReader", "outage_backoff",
           "retry_later", "ride_out", "until_reachable"]
