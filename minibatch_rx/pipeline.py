"""The fluent pipeline DSL: ``stream('in').count_window(2).map(fn).sink('out').run()``.

A :class:`Pipeline` is an immutable description; every fluent call returns a
new one. Nothing happens until :meth:`Pipeline.run`, :meth:`Pipeline.start`
or :meth:`Pipeline.to_observable` builds it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import reactivex
from reactivex import Observable, abc

from minibatch_rx import windows
from minibatch_rx.durations import Interval, to_seconds
from minibatch_rx.errors import InvalidArgumentError
from minibatch_rx.stages import (
    Ack,
    Envelope,
    Failure,
    Item,
    RetryPolicy,
    Stage,
    envelop,
    item_stage,
    rx_stage,
    sink_function,
)
from minibatch_rx.stream import Stream
from minibatch_rx.validation import check_stream_name
from minibatch_rx.windows import WindowOperator

WindowFactory = Callable[[abc.SchedulerBase | None], WindowOperator]
StageFactory = Callable[[Failure, Stream], Stage]
SinkTarget = Stream | str | Callable[[Any], Any]


@dataclass(frozen=True)
class Pipeline:
    """A stream processing pipeline over one source stream.

    Build it fluently from :func:`minibatch_rx.stream`::

        stream('readings').fixed_time_window('1s').map(summarise).sink('summaries').run()

    Each window is processed by the stages in order; once its last sink
    succeeded, the consumer position is committed, so a restarted pipeline
    resumes after the last window it finished (at-least-once delivery).
    """

    source: Stream
    window_factory: WindowFactory | None = None
    stages: tuple[StageFactory, ...] = ()
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    late_target: SinkTarget | None = None
    trim_acked: bool = False
    after_ack: Callable[[int], None] | None = None

    # -- windows ---------------------------------------------------------------
    def window(self, factory: WindowFactory) -> Pipeline:
        """Use a custom window operator; ``factory(scheduler)`` makes one per run."""
        if self.window_factory is not None:
            raise InvalidArgumentError("a pipeline has one window strategy; it already has one")
        if self.stages:
            raise InvalidArgumentError("the window strategy must come before map/filter/sink")
        return replace(self, window_factory=factory)

    def count_window(self, n: int, timeout: Interval | None = None) -> Pipeline:
        """Windows of ``n`` messages; see :func:`minibatch_rx.windows.count_window`."""
        windows.count_window(n, timeout)  # validate now, not at run time
        return self.window(lambda s: windows.count_window(n, timeout, scheduler=s))

    def fixed_time_window(self, interval: Interval, grace: Interval = 0,
                          emit_empty: bool = False) -> Pipeline:
        """Tumbling time windows; see :func:`minibatch_rx.windows.fixed_time_window`."""
        windows.fixed_time_window(interval, grace, emit_empty)
        return self.window(
            lambda s: windows.fixed_time_window(interval, grace, emit_empty, scheduler=s)
        )

    def relaxed_time_window(self, interval: Interval, emit_empty: bool = False) -> Pipeline:
        """Everything since the last window, every ``interval``; see
        :func:`minibatch_rx.windows.relaxed_time_window`."""
        windows.relaxed_time_window(interval, emit_empty)
        return self.window(lambda s: windows.relaxed_time_window(interval, emit_empty, scheduler=s))

    def sliding_window(self, size: int | Interval, step: int | Interval,
                       by: Literal["count", "time"] = "count", grace: Interval = 0) -> Pipeline:
        """Overlapping windows; see :func:`minibatch_rx.windows.sliding_window`."""
        windows.sliding_window(size, step, by=by, grace=grace)
        return self.window(
            lambda s: windows.sliding_window(size, step, by=by, grace=grace, scheduler=s)
        )

    def session_window(self, gap: Interval) -> Pipeline:
        """Sessions split by silence; see :func:`minibatch_rx.windows.session_window`."""
        windows.session_window(gap)
        return self.window(lambda s: windows.session_window(gap, scheduler=s))

    # -- stages ------------------------------------------------------------------
    def _stage(self, factory: StageFactory) -> Pipeline:
        return replace(self, stages=(*self.stages, factory))

    def map(self, fn: Callable[[Any], Any]) -> Pipeline:
        """Transform each value (a Window, until a stage changes it)."""
        _check_callable(fn, "map")
        return self._stage(lambda failure, _: item_stage("map", fn, failure, lambda _v, r: (r,)))

    def filter(self, predicate: Callable[[Any], bool]) -> Pipeline:
        """Keep values for which ``predicate`` is true; dropped ones still count as processed."""
        _check_callable(predicate, "filter")
        return self._stage(
            lambda failure, _: item_stage("filter", predicate, failure,
                                          lambda v, keep: (v,) if keep else ())
        )

    def flat_map(self, fn: Callable[[Any], Iterable[Any]]) -> Pipeline:
        """Replace each value by the values of the iterable ``fn`` returns."""
        _check_callable(fn, "flat_map")
        expand = _expanding(fn)
        return self._stage(lambda failure, _: item_stage("flat_map", expand, failure, lambda _v, r: r))

    def pipe(self, *operators: Callable[[Observable[Any]], Observable[Any]]) -> Pipeline:
        """Apply plain reactivex operators to the values.

        Operators that hold values across windows (``buffer``, ``delay``...)
        let a window be acknowledged before their output is sunk; use the
        window strategies for batching instead.
        """
        for op in operators:
            _check_callable(op, "pipe")
        return self._stage(lambda failure, _: rx_stage(operators, failure))

    def sink(self, target: SinkTarget) -> Pipeline:
        """Deliver each value to a Stream, a stream name (same store) or a callable.

        Values pass on unchanged, so sinks can be chained.
        """
        _check_target(target, "sink")

        def factory(failure: Failure, source: Stream) -> Stage:
            fn = sink_function(_resolve(target, source))
            return item_stage("sink", fn, failure, lambda v, _r: (v,))

        return self._stage(factory)

    def late(self, target: SinkTarget) -> Pipeline:
        """Where messages that missed their time window go (default: stream ``<name>.late``)."""
        _check_target(target, "late")
        return replace(self, late_target=target)

    def trim_processed(self) -> Pipeline:
        """Delete messages from the source stream once their window is acknowledged
        (the original package's ``keep=False``)."""
        return replace(self, trim_acked=True)

    def with_retries(self, max_retries: int = 3, backoff: Interval = 0.1,
                     max_backoff: Interval = 5.0) -> Pipeline:
        """Retry failing functions ``max_retries`` times with exponential back-off,
        then send the window to the dead-letter stream ``<name>.dead``."""
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidArgumentError(f"max_retries must be an int >= 0, got {max_retries!r}")
        policy = RetryPolicy(max_retries, to_seconds(backoff, "backoff", allow_zero=True),
                             to_seconds(max_backoff, "max_backoff", allow_zero=True))
        return replace(self, retry_policy=policy)

    # -- running -----------------------------------------------------------------
    def to_observable(self, consumer: str | None = None,
                      scheduler: abc.SchedulerBase | None = None) -> Observable[Any]:
        """The values after the last stage, as a plain reactivex observable.

        Sinks run and, with a ``consumer``, positions are committed as the
        observable is consumed.
        """
        return self._envelopes(consumer, scheduler).pipe(
            _only_items()
        )

    def _envelopes(self, consumer: str | None, scheduler: abc.SchedulerBase | None,
                   active: Callable[[], bool] | None = None) -> Observable[Envelope]:
        """The whole flow up to the commits. ``active()`` turning false stops
        new messages and windows from entering it at once, even while a
        synchronous catch-up is still emitting (``max_windows``, ``stop()``)."""
        source = self.source
        failure = Failure(self.retry_policy, Stream(f"{source.name}.dead", store=source.store), scheduler)
        messages = source.observe(consumer, scheduler).pipe(_guard(active))
        windowed: Observable[Any] = messages
        if self.window_factory is not None:
            operator = self.window_factory(scheduler)
            late = sink_function(_resolve(self.late_target or f"{source.name}.late", source))
            operator.late.subscribe(late)
            windowed = messages.pipe(operator, _guard(active))
        flow = windowed.pipe(envelop, *(make(failure, source) for make in self.stages))
        return flow.pipe(_commit(source, consumer, self.trim_acked, self.after_ack))

    def start(self, consumer: str = "default",
              scheduler: abc.SchedulerBase | None = None,
              max_windows: int | None = None) -> PipelineHandle:
        """Run in the background; returns a handle with ``stop()`` and ``join()``.

        ``consumer`` names the position kept in the store: pipelines with
        different consumer names each see every message.
        """
        handle = PipelineHandle(max_windows)
        flow = replace(self, after_ack=handle._on_ack)._envelopes(
            consumer, scheduler, active=lambda: handle.running
        )
        handle._subscribe(flow)
        return handle

    def run(self, consumer: str = "default", max_windows: int | None = None,
            duration: Interval | None = None) -> PipelineHandle:
        """Run until stopped (Ctrl-C), until ``max_windows`` windows are
        processed, or for ``duration``; re-raises a pipeline error."""
        seconds = None if duration is None else to_seconds(duration, "duration")
        handle = self.start(consumer, max_windows=max_windows)
        try:
            handle.join(seconds)
        finally:
            handle.stop()
        if handle.error is not None:
            raise handle.error
        return handle


def _check_callable(fn: object, what: str) -> None:
    if not callable(fn):
        raise InvalidArgumentError(f"{what} needs a callable, got {fn!r}")


def _check_target(target: object, what: str) -> None:
    """Reject a bad sink/late target when the pipeline is built, not when it runs."""
    if isinstance(target, str):
        check_stream_name(target)
    elif not isinstance(target, Stream) and not callable(target):
        raise InvalidArgumentError(
            f"{what} target must be a Stream, a stream name or a callable, got {target!r}"
        )


def _expanding(fn: Callable[[Any], Iterable[Any]]) -> Callable[[Any], list[Any]]:
    """``fn`` with its iterable drained inside the call, so an error while
    iterating (a raising generator, a non-iterable result) is retried and
    dead-lettered like any other failure instead of escaping the stage."""

    def call(value: Any) -> list[Any]:
        result = fn(value)
        if isinstance(result, (str, bytes, Mapping)) or not isinstance(result, Iterable):
            raise TypeError(
                f"flat_map function must return an iterable of values (a list...), "
                f"got {type(result).__name__}"
            )
        return list(result)

    return call


def _guard(active: Callable[[], bool] | None) -> Callable[[Observable[Any]], Observable[Any]]:
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


def _resolve(target: SinkTarget, source: Stream) -> Stream | Callable[[Any], Any]:
    if isinstance(target, str):
        return Stream.get_or_create(target, store=source.store)
    return target


def _only_items() -> Callable[[Observable[Envelope]], Observable[Any]]:
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


def _commit(source: Stream, consumer: str | None, trim: bool,
            after_ack: Callable[[int], None] | None) -> Stage:
    def operator(flow: Observable[Envelope]) -> Observable[Envelope]:
        def subscribe(observer: abc.ObserverBase[Envelope],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            def on_next(envelope: Envelope) -> None:
                if isinstance(envelope, Ack):
                    if consumer is not None:
                        source.commit(consumer, envelope.seq)
                    if trim:
                        source.trim(envelope.seq)
                    if after_ack is not None:
                        after_ack(envelope.seq)
                observer.on_next(envelope)

            return flow.subscribe(on_next, observer.on_error, observer.on_completed,
                                  scheduler=scheduler)

        return reactivex.create(subscribe)

    return operator


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

