"""Running a pipeline: the operators around the user's stages, and the handle.

``guard`` keeps a stopped pipeline from taking more input and surfaces
errors from timer threads; ``commit`` acknowledges each window once its
stages are done; :class:`PipelineHandle` is what ``start()`` returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import reactivex
from reactivex import Observable, abc

from minibatch_rx.errors import InvalidArgumentError, StoreBusyError, StoreUnavailableError
from minibatch_rx.stages import Ack, Envelope, Item, Stage

log = logging.getLogger("minibatch_rx")


def guard(active: Callable[[], bool] | None) -> Callable[[Observable[Any]], Observable[Any]]:
    """Pass values on while ``active()`` (always, if ``None``), and turn an
    exception raised downstream into ``on_error``.

    Windows emitted by a timer (a count window's timeout, a time window's
    end) are processed in the scheduler's thread; without this, a failure
    there (say, the dead-letter append) would be lost in that thread while
    the pipeline looked healthy.
    """

    def operator(source: Observable[Any]) -> Observable[Any]:
        def subscribe(observer: abc.ObserverBase[Any],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            stopped = threading.Event()

            def on_next(value: Any) -> None:
                if stopped.is_set() or (active is not None and not active()):
                    return
                try:
                    observer.on_next(value)
                except Exception as exc:
                    on_error(exc)

            def on_error(error: Exception) -> None:
                if not stopped.is_set():
                    stopped.set()
                    observer.on_error(error)

            return source.subscribe(on_next, on_error, observer.on_completed, scheduler=scheduler)

        return reactivex.create(subscribe)

    return operator


def only_items() -> Callable[[Observable[Envelope]], Observable[Any]]:
    def operator(source: Observable[Envelope]) -> Observable[Any]:
        def subscribe(observer: abc.ObserverBase[Any],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            def on_next(envelope: Envelope) -> None:
                if isinstance(envelope, Item):
                    observer.on_next(envelope.value)

            return source.subscribe(on_next, observer.on_error, observer.on_completed,
                                    scheduler=scheduler)

        return reactivex.create(subscribe)

    return operator


def commit(acknowledge: Callable[[int], None], outage_timeout: float,
           after_ack: Callable[[int], None] | None) -> Stage:
    """Call ``acknowledge(seq)`` for every Ack, riding out a store outage of
    up to ``outage_timeout`` seconds (an Ack must not be skipped)."""

    def operator(flow: Observable[Envelope]) -> Observable[Envelope]:
        def subscribe(observer: abc.ObserverBase[Envelope],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            def on_next(envelope: Envelope) -> None:
                if isinstance(envelope, Ack):
                    until_reachable(lambda: acknowledge(envelope.seq), outage_timeout)
                    if after_ack is not None:
                        after_ack(envelope.seq)
                observer.on_next(envelope)

            return flow.subscribe(on_next, observer.on_error, observer.on_completed,
                                  scheduler=scheduler)

        return reactivex.create(subscribe)

    return operator


def until_reachable(operation: Callable[[], Any], timeout: float) -> Any:
    """Run a store call, retrying with back-off while the store is unreachable
    or locked, for up to ``timeout`` seconds; then the error is raised."""
    started = time.monotonic()
    delay = 0.05
    while True:
        try:
            return operation()
        except (StoreUnavailableError, StoreBusyError) as exc:
            if time.monotonic() - started > timeout:
                raise
            log.warning("store call failed: %s; retrying in %.2gs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


class PipelineHandle:
    """A running pipeline: :meth:`stop` it, :meth:`join` it, read its counters."""

    def __init__(self, max_windows: int | None) -> None:
        if max_windows is not None and max_windows <= 0:
            raise InvalidArgumentError(f"max_windows must be > 0, got {max_windows}")
        self.max_windows = max_windows
        self.windows = 0
        self.position = 0
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._subscription: abc.DisposableBase | None = None

    def _subscribe(self, flow: Observable[Envelope]) -> None:
        subscription = flow.subscribe(on_error=self._on_error)
        with self._lock:
            if not self._done.is_set():
                self._subscription = subscription
                return
        subscription.dispose()  # finished while subscribing (synchronous catch-up)

    def _on_ack(self, seq: int) -> None:
        self.windows += 1
        self.position = seq
        if self.max_windows is not None and self.windows >= self.max_windows:
            self.stop()

    def _on_error(self, error: Exception) -> None:
        self.error = error
        self._done.set()

    @property
    def running(self) -> bool:
        """True until the pipeline is stopped, fails, or reaches ``max_windows``."""
        return not self._done.is_set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the pipeline is done; False if ``timeout`` passed first."""
        return self._done.wait(timeout)

    def stop(self) -> None:
        """Stop the pipeline and its background work. Idempotent."""
        self._done.set()
        with self._lock:
            subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.dispose()

