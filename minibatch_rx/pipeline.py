"""The fluent pipeline DSL: ``stream('in').count_window(2).map(fn).sink('out').run()``.

A :class:`Pipeline` is an immutable description; every fluent call returns a
new one. Nothing happens until :meth:`Pipeline.run`, :meth:`Pipeline.start`
or :meth:`Pipeline.to_observable` builds it.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Generic

import reactivex
from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.disposable import CompositeDisposable
from reactivex.scheduler import VirtualTimeScheduler
from typing_extensions import TypeVar

from minibatch_rx.dsl import WindowDSL, set_root
from minibatch_rx.durations import Interval, to_seconds
from minibatch_rx.errors import InvalidArgumentError
from minibatch_rx.group import GroupFeed
from minibatch_rx.journal import StreamJournal
from minibatch_rx.message import Message
from minibatch_rx.naming import check_consumer, consumer_name, function_name, stage_stream_name
from minibatch_rx.records import StageTrim, as_records, dead_letter_rejected, storable, storing
from minibatch_rx.running import PipelineHandle, claim, commit, guard, only_items
from minibatch_rx.source import store_source
from minibatch_rx.stages import (
    PROGRAMMING_ERRORS,
    Envelope,
    Failure,
    RetryPolicy,
    Stage,
    envelop,
    item_stage,
    late_sink,
    rx_stage,
    sink_function,
    stream_sink_stage,
    until_reachable,
)
from minibatch_rx.streams import Stream
from minibatch_rx.usage import PipelineNeverRunWarning, Usage, fluent
from minibatch_rx.validation import check_stream_name
from minibatch_rx.window import Window
from minibatch_rx.windows import Count, Custom, ReadProgress, WindowOperator, WindowSpec
from minibatch_rx.windows._engine import scheduler_seconds
from minibatch_rx.windows.clocks import DEFAULT_IDLE, ClockSpec, EventTime
from minibatch_rx.windows.keys import KeyBy

WindowFactory = Callable[[abc.SchedulerBase | None], WindowOperator]
StageFactory = Callable[[Failure, Stream, str], Stage]
EXPIRY_EVERY = 1.0  # seconds between age-based retention sweeps of a running pipeline


@dataclass(frozen=True)
class Retention:
    """What a running pipeline deletes from its source stream."""

    acknowledged_only: bool = False
    """Delete messages every registered consumer and group acknowledged."""
    max_age: float | None = None
    """Delete messages older than this many seconds."""
SinkTarget = Stream | str | Callable[[Any], Any]
T = TypeVar("T", default=Any)
R = TypeVar("R", default=T)
U = TypeVar("U")


@dataclass(frozen=True)
class Pipeline(WindowDSL[R], Generic[T, R]):
    """A stream processing pipeline over one source stream.

    Build it fluently from :func:`minibatch_rx.stream` (the window methods,
    ``count_window`` and the rest, are :class:`~minibatch_rx.dsl.WindowDSL`'s)::

        stream('readings').fixed_time_window('1s').map(summarise).sink('summaries').run()

    Each window is processed by the stages in order; once its last sink
    succeeded, the consumer position is committed, so a restarted pipeline
    resumes after the last window it finished (at-least-once delivery).

    ``Pipeline[T]`` carries values of type ``T``: ``map(fn)`` with ``fn:
    Callable[[T], U]`` gives a ``Pipeline[U]``, and a window over it a
    ``Pipeline[Window[U]]``. (A pipeline still carrying a stream's Messages
    is a ``Pipeline[Message, dict[str, Any]]``: its windows hold payloads.)
    """

    source: Stream
    window_spec: WindowSpec | None = None
    stages: tuple[StageFactory, ...] = ()
    key_spec: KeyBy | None = None
    """``key_by``: the window runs once per key."""
    clock_spec: ClockSpec | None = None
    """``event_time``: the clock of the time window (ingest time if ``None``)."""
    pre_stages: tuple[StageFactory, ...] = ()
    """The stages before the window: their values are what it holds."""
    upstream: Pipeline[Any, Any] | None = None
    """The pipeline up to the previous window, whose values this one windows
    (through a stage stream, see :meth:`_next_window`)."""
    hop: int = 0
    """How many windows come before this pipeline's."""
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    late_target: SinkTarget | None = None
    retention_policy: Retention = field(default_factory=lambda: Retention())
    prefetch: int = 500
    commit_interval: float = 0.05
    after_ack: Callable[[int | None], None] | None = None
    shape: tuple[str, ...] = ()
    """What the pipeline does, step by step (``count_window(2)``, ``map:total``,
    ``sink:means``): the default consumer name is made from it."""
    _usage: Usage = field(default_factory=lambda: Usage(), compare=False, repr=False)

    def _with(self, **changes: Any) -> Pipeline[Any, Any]:
        """A new pipeline with ``changes``; this one now only serves as a step."""
        self._usage.derived = True
        return replace(self, _usage=Usage(), **changes)

    def __del__(self) -> None:
        usage = getattr(self, "_usage", None)
        if usage is None or usage.derived or usage.ran or not self.shape:
            return
        with contextlib.suppress(Exception):  # interpreter shutdown: nothing left to warn with
            warnings.warn(
                f"a pipeline over stream {self.source.name!r} ({' | '.join(self.shape)}) was built "
                "but never run: call .run(), .start() or .to_observable()",
                PipelineNeverRunWarning, stacklevel=2)

    @property
    def default_consumer(self) -> str:
        """The consumer name ``run()``/``start()`` use when given none: the
        pipeline's shape, e.g. ``'count_window(2)|map:total|sink:means'``. It
        stays the same however the program is started, and differs between
        pipelines of different shapes; change the pipeline and it becomes a
        new consumer (pass ``consumer=`` to keep a position across changes)."""
        return consumer_name(self.shape)

    # -- windows (the named strategies come from WindowDSL) ---------------------
    @fluent
    def window(self, spec: WindowSpec | WindowFactory) -> Pipeline[Window[R]]:
        """Window the messages with ``spec``: a window spec (``Count(2)``,
        ``Tumbling('5s')``... from :mod:`minibatch_rx.windows`) or an operator
        factory (``factory(scheduler)`` makes one operator per run)."""
        if not isinstance(spec, WindowSpec):
            spec = Custom(spec)
        if self.window_spec is not None:
            return self._next_window().window(spec)
        spec.check(self.key_spec, self.clock_spec)
        # The stages so far run on each message; the window holds their values.
        return self._with(window_spec=spec, shape=(*self.shape, spec.label),
                          pre_stages=self.stages, stages=())

    @fluent
    def key_by(self, key: str | Callable[[R], Any]) -> Pipeline[T, R]:
        """Run the next window once per key: ``key`` is a field name of each
        payload (or of the value a previous stage produced), or a function
        of it. Keys are ``str``, ``int``, ``float``, ``bool``, ``None`` or
        tuples of them; a record without a valid key goes to the dead-letter
        stream ``<name>.dead`` with the reason. Windows carry their key
        (``window.key``)::

            stream('readings').key_by('sensor').fixed_time_window('5s').map(mean).sink('means')
        """
        if self.window_spec is not None:
            return self._next_window().key_by(key)
        self._before_window("key_by", self.key_spec is not None)
        spec = KeyBy(key)
        return self._with(key_spec=spec, shape=(*self.shape, spec.label))

    @fluent
    def event_time(self, timestamp: str | Callable[[R], Any], max_delay: Interval = 0,
                   idle: Interval = DEFAULT_IDLE) -> Pipeline[T, R]:
        """Cut the next time window on the time each event happened, read from
        ``timestamp``: a field name of the payload (or of the value a previous
        stage produced), or a function of it, giving ISO-8601 text, epoch
        seconds or a ``datetime`` (naive times are UTC).

        The watermark is the highest event time seen minus ``max_delay``; it
        never goes back. A window ``[start, end)`` is emitted when the
        watermark reaches ``end`` (plus ``grace``); an event for a window
        already emitted goes to the late stream. Once nothing has arrived for
        ``idle``, the watermark advances with the clock, so the last windows
        of a quiet stream close too. An event without a valid timestamp goes
        to the dead-letter stream ``<name>.dead`` with the reason::

            (stream('readings').key_by('sensor').event_time('ts', max_delay='2s')
                .fixed_time_window('5s').map(mean).sink('means'))
        """
        if self.window_spec is not None:
            return self._next_window().event_time(timestamp, max_delay, idle)
        self._before_window("event_time", self.clock_spec is not None)
        spec = EventTime(timestamp, max_delay, idle)
        return self._with(clock_spec=spec, shape=(*self.shape, spec.label))

    def _before_window(self, what: str, twice: bool) -> None:
        if twice:
            raise InvalidArgumentError(f"{what} is already set for this window")

    def _next_window(self) -> Pipeline[T, R]:
        """An empty pipeline windowing this one's values again.

        Between two windows, values pass through a stage stream of the same
        store (``_mb.stages.<consumer>.<hop>.<stream>``), written idempotently
        by this pipeline and read by the next with a position of its own,
        trimmed once read. Each window thus has its own position, journal and
        checkpoint, and the acks of one never run ahead of the other: the
        values are durable before the first window's position moves, and the
        second window's position moves only once its output is sunk. (The
        design of Kafka Streams' repartition topics.) The values must be
        JSON-compatible.
        """
        return Pipeline(source=self.source, upstream=self, hop=self.hop + 1,
                        retry_policy=self.retry_policy, late_target=self.late_target,
                        prefetch=self.prefetch, commit_interval=self.commit_interval, shape=self.shape)

    # -- stages ------------------------------------------------------------------
    def _stage(self, label: str, factory: StageFactory) -> Pipeline[Any, Any]:
        if self.window_spec is None and (self.key_spec is not None or self.clock_spec is not None):
            raise InvalidArgumentError(
                f"key_by and event_time must be followed by a window, not by {label}: "
                "put the stages before key_by")
        return self._with(stages=(*self.stages, factory), shape=(*self.shape, label))

    @fluent
    def map(self, fn: Callable[[T], U]) -> Pipeline[U]:
        """Transform each value (a Window, until a stage changes it)."""
        _check_callable(fn, "map")
        return self._stage(f"map:{function_name(fn)}",
                           lambda failure, _s, _o: item_stage("map", fn, failure, lambda _v, r: (r,)))

    @fluent
    def filter(self, predicate: Callable[[T], bool]) -> Pipeline[T, R]:
        """Keep values for which ``predicate`` is true; dropped ones still count as processed."""
        _check_callable(predicate, "filter")
        return self._stage(
            f"filter:{function_name(predicate)}",
            lambda failure, _s, _o: item_stage("filter", predicate, failure,
                                          lambda v, keep: (v,) if keep else ())
        )

    @fluent
    def flat_map(self, fn: Callable[[T], Iterable[U]]) -> Pipeline[U]:
        """Replace each value by the values of the iterable ``fn`` returns."""
        _check_callable(fn, "flat_map")
        expand = _expanding(fn)
        return self._stage(f"flat_map:{function_name(fn)}",
                           lambda failure, _s, _o: item_stage("flat_map", expand, failure, lambda _v, r: r))

    @fluent
    def pipe(self, *operators: Callable[[Observable[Any]], Observable[Any]]) -> Pipeline[Any]:
        """Apply plain reactivex operators to the values.

        Operators that hold values across windows (``buffer``, ``delay``...)
        let a window be acknowledged before their output is sunk; use the
        window strategies for batching instead.
        """
        for op in operators:
            _check_callable(op, "pipe")
        return self._stage("pipe", lambda failure, _s, _o: rx_stage(operators, failure))

    @fluent
    def sink(self, target: SinkTarget, *, idempotent: bool = True) -> Pipeline[T, R]:
        """Deliver each value to a Stream, a stream name (same store) or a callable.

        Into a stream, a dict becomes one message and a list of dicts (or a
        Window) a batch. Stream sinks are idempotent: each message is keyed by
        the consumer, the source seq range and its rank, so a window that is
        processed again after a crash stores nothing new (exactly-once
        effect). ``idempotent=False`` appends plainly. Values pass on
        unchanged, so sinks can be chained.
        """
        _check_target(target, "sink")

        def factory(failure: Failure, source: Stream, owner: str) -> Stage:
            resolved = _resolve(target, source)
            if isinstance(resolved, Stream) and idempotent:
                return stream_sink_stage(resolved, failure, owner)
            return item_stage("sink", sink_function(resolved), failure, lambda v, _r: (v,))

        label = target.name if isinstance(target, Stream) else target if isinstance(target, str) \
            else function_name(target)
        return self._stage(f"sink:{label}", factory)

    @fluent
    def late(self, target: SinkTarget) -> Pipeline[T, R]:
        """Where messages that missed their time window go (default: stream ``<name>.late``)."""
        _check_target(target, "late")
        return self._with(late_target=target)

    @fluent
    def trim_processed(self) -> Pipeline[T, R]:
        """Delete source messages once acknowledged by every registered
        consumer and group of the stream (the original package's ``keep=False``)."""
        return self._with(retention_policy=replace(self.retention_policy, acknowledged_only=True))

    @fluent
    def retain(self, max_age: Interval) -> Pipeline[T, R]:
        """While running, delete source messages older than ``max_age``
        (checked at most once a second), processed or not."""
        seconds = to_seconds(max_age, "max_age")
        return self._with(retention_policy=replace(self.retention_policy, max_age=seconds))

    @fluent
    def with_prefetch(self, messages: int) -> Pipeline[T, R]:
        """Read at most ``messages`` from the store at a time (default 500).

        Windows are processed one at a time, so this bounds what a consumer
        holds in memory beyond its open windows, whatever the backlog.
        """
        if isinstance(messages, bool) or not isinstance(messages, int) or messages <= 0:
            raise InvalidArgumentError(f"prefetch must be an int > 0, got {messages!r}")
        return self._with(prefetch=messages)

    @fluent
    def with_commit_interval(self, interval: Interval) -> Pipeline[T, R]:
        """Write the consumer position at most once per ``interval`` (default
        50 ms; 0 writes after every window). The latest acknowledged window
        always wins and is written when the pipeline stops; after a crash, at
        most ``interval`` worth of windows is delivered again."""
        seconds = to_seconds(interval, "commit interval", allow_zero=True)
        return self._with(commit_interval=seconds)

    @fluent
    def with_retries(self, max_retries: int = 3, backoff: Interval = 0.1,
                     max_backoff: Interval = 5.0, *,
                     no_retry: tuple[type[Exception], ...] = PROGRAMMING_ERRORS) -> Pipeline[T, R]:
        """Retry failing functions ``max_retries`` times with exponential back-off,
        then send the window to the dead-letter stream ``<name>.dead``.

        Errors of the ``no_retry`` types go to the dead-letter stream at once: by
        default programming errors (``TypeError``, ``AttributeError``,
        ``NameError``...), which fail again on the same window whatever the wait.
        Pass ``no_retry=()`` to retry everything."""
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidArgumentError(f"max_retries must be an int >= 0, got {max_retries!r}")
        if not isinstance(no_retry, tuple) or not all(
                isinstance(t, type) and issubclass(t, Exception) for t in no_retry):
            raise InvalidArgumentError(f"no_retry must be a tuple of exception classes, got {no_retry!r}")
        policy = replace(self.retry_policy, max_retries=max_retries,
                         backoff=to_seconds(backoff, "backoff", allow_zero=True),
                         max_backoff=to_seconds(max_backoff, "max_backoff", allow_zero=True),
                         no_retry=no_retry)
        return self._with(retry_policy=policy)

    @fluent
    def with_timeout(self, limit: Interval) -> Pipeline[T, R]:
        """Give every call of a user function (map, filter, flat_map, sink) at
        most ``limit``; a call that overruns fails with
        :class:`~minibatch_rx.errors.StageTimeoutError` and is retried, then
        dead-lettered, like any failure. Python cannot stop a thread: the
        overrunning call keeps running in an abandoned daemon thread, and its
        result is ignored. Calls then run in a worker thread (a few
        microseconds more per call)."""
        seconds = to_seconds(limit, "with_timeout limit")
        return self._with(retry_policy=replace(self.retry_policy, call_timeout=seconds))

    # -- running -----------------------------------------------------------------
    def to_observable(self, consumer: str | None = None,
                      scheduler: abc.SchedulerBase | None = None) -> Observable[T]:
        """The values after the last stage, as a plain reactivex observable.

        Sinks run and, with a ``consumer``, positions are committed as the
        observable is consumed. With a virtual-time ``scheduler`` (a
        ``TestScheduler``), the source stream's store must stamp messages with
        that scheduler's clock: use :class:`minibatch_rx.testing.VirtualTime`.
        """
        self._usage.ran = True
        check_consumer(consumer)
        return self._flow(consumer, None, scheduler, coalesce=False).pipe(only_items())

    def _flow(self, consumer: str | None, group: GroupFeed | None,
              scheduler: abc.SchedulerBase | None,
              active: Callable[[], bool] | None = None, coalesce: bool = True,
              handle: PipelineHandle | None = None) -> Observable[Envelope]:
        """The whole flow up to the commits. ``active()`` turning false stops
        new messages and windows from entering it at once, even while a
        synchronous catch-up is still emitting (``max_windows``, ``stop()``)."""
        _check_clock(self.source, scheduler)
        if self.upstream is not None:
            return self._chained(consumer, scheduler, active, coalesce, handle)
        return self._own_flow(self.source, consumer, group, scheduler, active, coalesce, handle)

    def _chained(self, consumer: str | None, scheduler: abc.SchedulerBase | None,
                 active: Callable[[], bool] | None, coalesce: bool,
                 handle: PipelineHandle | None) -> Observable[Envelope]:
        """The flow of a pipeline after its first window: the previous
        pipeline feeding the stage stream, and this one reading it."""
        assert self.upstream is not None
        source = self.source
        owner = consumer or "default"
        stage = Stream(stage_stream_name(source.name, owner, self.hop), store=source.store)
        feeder = self.upstream._stage("stage", lambda _f, _s, _o: storing).sink(stage)
        feeder._usage.ran = True
        upstream = feeder._flow(consumer, None, scheduler, active, coalesce)
        trim = StageTrim(stage, source, owner)
        reader = replace(self, _usage=Usage(ran=True))
        own = reader._own_flow(stage, consumer, None, scheduler, active, coalesce, handle, trim)

        def subscribe(observer: abc.ObserverBase[Envelope],
                      scheduler_: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            feeding = upstream.subscribe(on_error=observer.on_error, scheduler=scheduler_)
            return CompositeDisposable(own.subscribe(observer, scheduler=scheduler_), feeding)

        return reactivex.create(subscribe)

    def _own_flow(self, source: Stream, consumer: str | None, group: GroupFeed | None,
                  scheduler: abc.SchedulerBase | None, active: Callable[[], bool] | None, coalesce: bool,
                  handle: PipelineHandle | None, trim: StageTrim | None = None) -> Observable[Envelope]:
        """The flow of one window: reading ``source`` (the stream, or a stage stream) to the commits."""
        owner = group.group if group is not None else (consumer or "default")
        home = self.source  # dead letters and late messages go next to the pipeline's own stream
        failure = Failure(self.retry_policy, Stream(f"{home.name}.dead", store=home.store), scheduler)
        if handle is not None:
            handle._failure = failure
        journal: StreamJournal | None = None
        windowed: Observable[Any]
        if group is not None:
            windowed = group.observable().pipe(guard(active))
        else:
            progress = ReadProgress()
            windowed = store_source(source.store, source.name, None, consumer, scheduler,
                                    self.prefetch, progress).pipe(guard(active))
            if trim is not None:
                windowed = windowed.pipe(ops.map(trim.unstored))
            if self.pre_stages:
                windowed = windowed.pipe(as_records(tuple(make(failure, source, owner)
                                                          for make in self.pre_stages)))
            if self.window_spec is not None:
                operator = self.window_spec.operator(scheduler, key_by=self.key_spec, clock=self.clock_spec)
                operator.progress, operator.stream = progress, source.name
                operator.rejected.subscribe(dead_letter_rejected(failure, owner))
                if consumer is not None and operator.clocked:
                    journal = StreamJournal(source.store, source.name, consumer, self.window_spec.label,
                                            self.retry_policy.outage_timeout)
                    operator.journal, operator.resume = journal, journal.load
                operator.late.subscribe(self._late_sink(owner))
                windowed = windowed.pipe(operator, guard(active))
        flow = windowed.pipe(envelop, *(make(failure, source, owner) for make in self.stages))
        # Coalescing needs a real clock, a single position and a handle that
        # flushes on stop: not in virtual time, not for groups (each lease is
        # completed on its own), not for plain Rx interop.
        plain = scheduler is not None or group is not None or not coalesce
        interval = 0.0 if plain else self.commit_interval
        acknowledge = self._acknowledger(source, consumer, group, scheduler, journal)
        if trim is not None:
            acknowledge = _then(acknowledge, trim.acknowledged)
        return flow.pipe(commit(acknowledge,
                                self.retry_policy.outage_timeout, self.after_ack, interval, handle))

    def _late_sink(self, owner: str) -> Callable[[Message], Any]:
        """Where late messages go; the default stream ``<name>.late`` is created
        only when a message is late."""
        resolved: list[Callable[[Message], Any]] = []

        def deliver(message: Message) -> Any:
            if not resolved:
                target = _resolve(self.late_target or f"{self.source.name}.late", self.source)
                to_stream = isinstance(target, Stream)
                resolved.append(late_sink(target, owner))
                if to_stream:  # a record a stage made may be no dict: stored as {'v': value}
                    resolved[0] = _storing(resolved[0])
            return resolved[0](message)

        return deliver

    def _acknowledger(self, source: Stream, consumer: str | None, group: GroupFeed | None,
                      scheduler: abc.SchedulerBase | None,
                      journal: StreamJournal | None) -> Callable[[int, Any], None]:
        retention = self.retention_policy
        clock: Callable[[], float] = time.monotonic
        if scheduler is not None:
            clock = partial(scheduler_seconds, scheduler)
        last_expiry = [-math.inf]
        # Register before the first ack, so retention never trims what this
        # consumer (or group) has not seen yet.
        name = group.group if group is not None else consumer
        if name is not None:
            until_reachable(lambda: source.commit(name, 0), self.retry_policy.outage_timeout)

        def acknowledge(seq: int, checkpoint: Any) -> None:
            if group is not None:
                group.complete(seq)
            elif consumer is not None:
                if journal is not None and checkpoint is not None:
                    journal.checkpoint(checkpoint)  # first: the state must never lag the position
                source.commit(consumer, seq)
                if journal is not None:
                    journal.prune()
            if retention.acknowledged_only:
                source.trim_acknowledged()
            if retention.max_age is not None and clock() - last_expiry[0] >= EXPIRY_EVERY:
                source.expire(retention.max_age)
                last_expiry[0] = clock()

        return acknowledge

    def start(self, consumer: str | None = None, scheduler: abc.SchedulerBase | None = None,
              max_windows: int | None = None, *, group: str | None = None,
              lease_timeout: Interval = 30.0) -> PipelineHandle:
        """Run in the background; returns a handle with ``stop()`` and ``join()``.

        ``consumer`` names the position kept in the store: pipelines with
        different consumer names each see every message. Without one, the
        pipeline's :attr:`default_consumer` is used. With ``group``, this
        process joins a consumer group instead: every member (in any process)
        runs the same pipeline with the same group name, and each window goes
        to one member. A member that stops completing its window for
        ``lease_timeout`` loses it to another member. Groups take count
        windows (``count_window(n, timeout)``).
        """
        self._usage.ran = True
        check_consumer(consumer)
        feed = self._group_feed(group, lease_timeout) if group is not None else None
        name = group if group is not None else (consumer or self.default_consumer)
        handle = PipelineHandle(max_windows, name, f"{self.source.name}.dead")
        if group is None:
            claim(handle, self.source.store.url, self.source.name)
        flow = replace(self, after_ack=handle._on_ack)._flow(
            None if group is not None else name, feed, scheduler, active=lambda: handle.running,
            handle=handle,
        )
        handle._subscribe(flow)
        return handle

    def _group_feed(self, group: str, lease_timeout: Interval) -> GroupFeed:
        check_stream_name(group)
        spec = self.window_spec
        if spec is None or not spec.groupable or not isinstance(spec, Count):
            raise InvalidArgumentError(
                f"group {group!r} needs a count window: consumer groups share count_window(n) windows; "
                "time-based windows need a single consumer per group"
            )
        if self.key_spec is not None or self.pre_stages or self.upstream is not None:
            raise InvalidArgumentError(
                f"group {group!r}: consumer groups take one count_window(n) straight on the stream, "
                "without key_by, stages before the window or a second window")
        ttl = to_seconds(lease_timeout, "lease_timeout")
        return GroupFeed(self.source.store, self.source.name, group, spec.n, spec.timeout_s, ttl)

    def run(self, consumer: str | None = None, max_windows: int | None = None,
            duration: Interval | None = None, *, group: str | None = None,
            lease_timeout: Interval = 30.0, stop_timeout: Interval = 10.0) -> PipelineHandle:
        """Run until stopped (Ctrl-C), until ``max_windows`` windows are
        processed, or for ``duration``; re-raises a pipeline error. See
        :meth:`start` for ``consumer``, ``group`` and ``lease_timeout``.

        Returns within ``duration`` plus ``stop_timeout`` whatever user code
        does: a function still running then is abandoned (see
        :meth:`PipelineHandle.stop`), and the handle's ``stuck`` names it.
        The handle also reports ``dead_letters``, the windows sent to the
        dead-letter stream during the run.
        """
        self._usage.ran = True
        seconds = None if duration is None else to_seconds(duration, "duration")
        grace = to_seconds(stop_timeout, "stop_timeout", allow_zero=True)
        handle = self.start(consumer, max_windows=max_windows, group=group, lease_timeout=lease_timeout)
        try:
            handle.join(seconds)
        finally:
            handle.stop(timeout=grace)
        if handle.error is not None:
            raise handle.error
        return handle


def _then(acknowledge: Callable[[int, Any], None],
          after: Callable[[int], None]) -> Callable[[int, Any], None]:
    def both(seq: int, checkpoint: Any) -> None:
        acknowledge(seq, checkpoint)
        after(seq)

    return both


def _storing(deliver: Callable[[Message], Any]) -> Callable[[Message], Any]:
    return lambda message: deliver(replace(message, data=storable(message.data)))


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


def _check_clock(source: Stream, scheduler: abc.SchedulerBase | None) -> None:
    """In virtual time, the source's store must stamp messages with the scheduler's
    clock: a wall-clock stamp lies decades past the virtual clock, so a time window
    would wait for it forever and the pipeline would emit nothing."""
    if not isinstance(scheduler, VirtualTimeScheduler):
        return
    clock = getattr(source.store, "clock", None)
    if clock is None or clock() != scheduler.now:
        raise InvalidArgumentError(
            f"scheduler {type(scheduler).__name__} keeps virtual time, but stream {source.name!r} is "
            f"stamped by its store's own clock ({source.store!r}), so its time windows would never "
            "close: run virtual-time pipelines on minibatch_rx.testing.VirtualTime "
            "(vt.stream(name), then vt.run(pipeline, until=...))"
        )


def _resolve(target: SinkTarget, source: Stream) -> Stream | Callable[[Any], Any]:
    if isinstance(target, str):
        return Stream.get_or_create(target, store=source.store)
    return target


set_root(Pipeline)
