"""The fluent pipeline DSL: ``stream('in').count_window(2).map(fn).sink('out').run()``.

A :class:`Pipeline` is an immutable description; every fluent call returns a
new one. Nothing happens until :meth:`Pipeline.run`, :meth:`Pipeline.start`
or :meth:`Pipeline.to_observable` builds it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic

from reactivex import Observable, abc
from typing_extensions import TypeVar

from minibatch_rx import flow as flows
from minibatch_rx.dsl import WindowDSL, set_root
from minibatch_rx.durations import Interval, to_seconds
from minibatch_rx.errors import InvalidArgumentError
from minibatch_rx.group import GroupFeed
from minibatch_rx.naming import check_consumer, consumer_name, function_name
from minibatch_rx.pipe_stage import rx_stage
from minibatch_rx.running import PipelineHandle, claim, only_items
from minibatch_rx.runtime import Acknowledger, MessageSource
from minibatch_rx.sinks import Sink, StreamSink
from minibatch_rx.stages import (
    PROGRAMMING_ERRORS,
    Envelope,
    Failure,
    RetryPolicy,
    Stage,
    item_stage,
    sink_function,
    sink_stage,
)
from minibatch_rx.streams import Stream
from minibatch_rx.usage import PipelineNeverRunWarning, Usage, fluent
from minibatch_rx.validation import check_stream_name
from minibatch_rx.window import Window
from minibatch_rx.windows import Count, Custom, WindowOperator, WindowSpec
from minibatch_rx.windows.clocks import DEFAULT_IDLE, ClockSpec, EventTime
from minibatch_rx.windows.keys import KeyBy

WindowFactory = Callable[[abc.SchedulerBase | None], WindowOperator]
StageFactory = Callable[[Failure, Stream, str], Stage]
MIN_PARTITION_LEASE = 1.0
"""The shortest ``lease_timeout`` of a group by key partition, seconds."""


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
    expanding: bool = False
    """A stage so far may give several values per input (``flat_map``, ``pipe``)."""
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
        if self.expanding and not spec.ranks_records:
            raise InvalidArgumentError(
                f"flat_map or pipe before {spec.label}: one message's records could be split "
                "between a window that is acknowledged and one that is not, and a restart would "
                "window them again; put the stage after the window, use a time window "
                "(fixed_time_window, sliding_window(by='time'), session_window), or sink the "
                "records into a stream and window that")
        # The stages so far run on each message; the window holds their values.
        return self._with(window_spec=spec, shape=(*self.shape, spec.label),
                          pre_stages=self.stages, stages=(), expanding=False)

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
                   idle: Interval | None = DEFAULT_IDLE) -> Pipeline[T, R]:
        """Cut the next time window on the time each event happened, read from
        ``timestamp``: a field name of the payload (or of the value a previous
        stage produced), or a function of it, giving ISO-8601 text, epoch
        seconds or a ``datetime`` (naive times are UTC).

        The watermark is the highest event time seen minus ``max_delay``; it
        never goes back. A window ``[start, end)`` is emitted when the
        watermark reaches ``end`` (plus ``grace``); an event for a window
        already emitted goes to the late stream. Once nothing has arrived for
        ``idle``, the watermark advances with the clock, so the last windows
        of a quiet stream close too; ``idle`` should outlast the source's
        usual silences (a device uploading in bursts), and ``idle=None``
        leaves the watermark to the events alone. An event without a valid timestamp goes
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
        expanding = self.expanding or label == "pipe" or label.startswith("flat_map:")
        return self._with(stages=(*self.stages, factory), shape=(*self.shape, label), expanding=expanding)

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
        """Apply plain reactivex operators to each window's values.

        The operators see one window at a time: for each window (or message,
        without a window strategy) they get a fresh chain, fed the window's
        values and completed when the window ends. What they emit by then goes
        on as that window's values, before its position is committed; so
        ``ops.buffer_with_count``, ``ops.to_list`` or ``ops.skip_last`` work
        within each window, and their state does not carry over to the next.
        Batch across windows with a window strategy instead.

        An error inside the operators sends the window to the dead-letter
        stream (none of its outputs go on); the next window starts afresh.
        Operators that wait for time (``delay``, ``sample``, ``debounce``...)
        fail the pipeline with :class:`~minibatch_rx.errors.InvalidArgumentError`
        at the first window.

        >>> import reactivex.operators as ops
        >>> from minibatch_rx import stream
        >>> s = stream('doc-pipe-dsl', url='memory://doc-pipe-dsl')
        >>> _ = s.extend([{'v': v} for v in range(1, 7)])
        >>> got = []
        >>> p = s.count_window(3).flat_map(lambda w: w.data).pipe(ops.map(lambda d: d['v']), ops.to_list())
        >>> _ = p.to_observable().subscribe(got.append)
        >>> got
        [[1, 2, 3], [4, 5, 6]]
        """
        for op in operators:
            _check_callable(op, "pipe")
        return self._stage("pipe", lambda failure, _s, _o: rx_stage(operators, failure))

    @fluent
    def sink(self, target: SinkTarget | Sink[Any], *, idempotent: bool = True) -> Pipeline[T, R]:
        """Deliver each value to a Stream, a stream name (same store), a
        :class:`~minibatch_rx.sinks.Sink` (a connector) or a callable.

        Into a stream, a dict becomes one message and a list of dicts (or a
        Window) a batch. Stream and Sink sinks get idempotency keys: each
        value is keyed by the consumer, the source seq range and its rank, so
        a window that is processed again after a crash stores nothing new
        (exactly-once effect); a Sink is flushed before the position covering
        its values is committed, and closed when the pipeline stops.
        ``idempotent=False`` appends to a stream plainly. A callable is called
        once per value (no key). Values pass on unchanged, so sinks can be
        chained.
        """
        if not isinstance(target, Sink):
            _check_target(target, "sink")

        def factory(failure: Failure, source: Stream, owner: str) -> Stage:
            if isinstance(target, Sink):
                return sink_stage(target, failure, owner)
            resolved = flows.resolve(target, source)
            if isinstance(resolved, Stream) and idempotent:
                return sink_stage(StreamSink(resolved), failure, owner)
            return item_stage("sink", sink_function(resolved), failure, lambda v, _r: (v,))

        label = target.name if isinstance(target, Stream) else target if isinstance(target, str) \
            else type(target).__name__ if isinstance(target, Sink) else function_name(target)
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
        self._check_runnable()
        if consumer is None and self.upstream is not None:
            raise InvalidArgumentError(
                "a pipeline with several windows needs a consumer name: its windows hand values on "
                "through a stream named after it (to_observable(consumer=...))")
        return self._flow(consumer, None, scheduler, coalesce=False).pipe(only_items())

    def _check_runnable(self) -> None:
        """Refuse a pipeline ending in ``key_by`` or ``event_time``: they say how
        the next window cuts, and there is none."""
        if self.window_spec is None and (self.key_spec is not None or self.clock_spec is not None):
            what = (self.key_spec or self.clock_spec).label  # type: ignore[union-attr]
            raise InvalidArgumentError(f"{what} must be followed by a window (count_window, "
                                       "fixed_time_window, ...): there is none after it")

    def _flow(self, consumer: str | None, group: GroupFeed | None,
              scheduler: abc.SchedulerBase | None,
              active: Callable[[], bool] | None = None, coalesce: bool = True,
              handle: PipelineHandle | None = None, reader: MessageSource | None = None,
              acks: Acknowledger | None = None) -> Observable[Envelope]:
        """The whole flow up to the commits (see :func:`minibatch_rx.flow.build`)."""
        return flows.build(self, consumer, group, scheduler, active, coalesce, handle, reader, acks)

    def start(self, consumer: str | None = None, scheduler: abc.SchedulerBase | None = None,
              max_windows: int | None = None, *, group: str | None = None,
              lease_timeout: Interval = 30.0, source: MessageSource | None = None,
              acknowledger: Acknowledger | None = None, partitions: int | None = None,
              member: str | None = None) -> PipelineHandle:
        """Run in the background; returns a handle with ``stop()`` and ``join()``.

        ``consumer`` names the position kept in the store: pipelines with
        different consumer names each see every message. Without one, the
        pipeline's :attr:`default_consumer` is used. With ``group``, this
        process joins a consumer group instead: every member (in any process)
        runs the same pipeline with the same group name.

        * A plain ``count_window(n)`` on the stream: each window goes to one
          member; a member that stops completing its window for
          ``lease_timeout`` loses it to another member.
        * A keyed pipeline (``key_by``, any window or pattern): the key space
          is split into ``partitions`` (default
          :data:`~minibatch_rx.partitions.DEFAULT_PARTITIONS`, fixed for the
          group's life), which the members lease and share evenly; each runs
          the pipeline on the keys of its partitions, with a position and
          checkpoint per partition. A member that dies loses its partitions
          after ``lease_timeout``; the next holder resumes them exactly where
          they were committed (see :mod:`minibatch_rx.partitions`).
        * Any other one-window pipeline (a time window without ``key_by``): one
          partition, so one member runs it and the others stand by.

        ``member`` names this member in the group (default: host, pid and a
        random suffix).

        ``source`` and ``acknowledger`` run this description against another
        input and another place for positions (see :mod:`minibatch_rx.runtime`):
        by default the pipeline's stream and its consumer positions.
        """
        self._usage.ran = True
        check_consumer(consumer)
        if source is not None and not isinstance(source, MessageSource):
            raise InvalidArgumentError(f"source needs an observe() method (a MessageSource), got {source!r}")
        if acknowledger is not None and not isinstance(acknowledger, Acknowledger):
            raise InvalidArgumentError(
                f"acknowledger needs a commit(seq, checkpoint) method, got {acknowledger!r}")
        self._check_runnable()
        if group is not None and (self.key_spec is not None or not isinstance(self.window_spec, Count)
                                  or partitions is not None or self.upstream is not None):
            return self._start_member(group, partitions, member, lease_timeout, scheduler, max_windows,
                                      source, acknowledger)
        if partitions is not None or member is not None:
            raise InvalidArgumentError("partitions= and member= need group=")
        feed = self._group_feed(group, lease_timeout) if group is not None else None
        name = group if group is not None else (consumer or self.default_consumer)
        handle = PipelineHandle(max_windows, name, f"{self.source.name}.dead")
        if group is None and source is None:
            claim(handle, self.source.store.url, self.source.name)
        flow = replace(self, after_ack=handle._on_ack)._flow(
            None if group is not None else name, feed, scheduler, active=lambda: handle.running,
            handle=handle, reader=source, acks=acknowledger,
        )
        handle._subscribe(flow)
        return handle

    def _launch(self, handle: PipelineHandle, consumer: str, scheduler: abc.SchedulerBase | None) -> None:
        """Run as ``consumer`` under ``handle`` (a group member's run of one partition).
        Not claimed in this process: the partition's lease is the guard, and a run of a
        member that lost it (fenced: it commits nothing) may still be winding down here."""
        flow = replace(self, after_ack=handle._on_ack)._flow(
            consumer, None, scheduler, active=lambda: handle.running, handle=handle)
        handle._subscribe(flow)

    def _start_member(self, group: str, partitions: int | None, member: str | None,
                      lease_timeout: Interval, scheduler: abc.SchedulerBase | None,
                      max_windows: int | None, source: MessageSource | None,
                      acknowledger: Acknowledger | None) -> PipelineHandle:
        """Join ``group`` as a member sharing its key partitions."""
        from minibatch_rx.group import member_id
        from minibatch_rx.partition_group import start_member
        from minibatch_rx.partitions import check_partitions

        check_stream_name(group)
        if partitions is not None:
            check_partitions(partitions)
            if self.key_spec is None and partitions != 1:
                raise InvalidArgumentError(
                    f"group {group!r}: a pipeline without key_by runs as one partition (partitions=1), "
                    f"got partitions={partitions}; key it (key_by) to share its work")
        if member is not None:
            check_stream_name(member)
        if self.upstream is not None:
            raise InvalidArgumentError(
                f"group {group!r}: a group runs a pipeline with one window or pattern; sink the first "
                "window's values into a stream and run the second window on it (as a group of its own)")
        if source is not None or acknowledger is not None:
            raise InvalidArgumentError("source= and acknowledger= take a pipeline run by a single consumer, "
                                       "not a group (it shares its work through the store)")
        if max_windows is not None and (isinstance(max_windows, bool) or not isinstance(max_windows, int)
                                        or max_windows <= 0):
            raise InvalidArgumentError(f"max_windows must be an int > 0, got {max_windows!r}")
        if not callable(getattr(self.source.store, "update_state", None)):
            raise InvalidArgumentError(
                f"group {group!r}: store {self.source.store.url!r} keeps no shared state (update_state), "
                "which groups by key partition need")
        ttl = to_seconds(lease_timeout, "lease_timeout")
        if ttl < MIN_PARTITION_LEASE:
            raise InvalidArgumentError(
                f"group {group!r}: lease_timeout must be at least {MIN_PARTITION_LEASE:g} s for a group "
                f"by key partition, got {ttl:g} s (members renew every third of it, and a run commits "
                "only while its lease surely holds)")
        count = partitions if self.key_spec is not None else 1
        return start_member(self, group, member or member_id(), count, ttl, scheduler, max_windows)

    def _group_feed(self, group: str, lease_timeout: Interval) -> GroupFeed:
        check_stream_name(group)
        spec = self.window_spec
        if spec is None or not spec.groupable or not isinstance(spec, Count):
            raise InvalidArgumentError(
                f"group {group!r} needs a count window: consumer groups share count_window(n) windows; "
                "time-based windows and patterns (match) need a single consumer per group"
            )
        if self.key_spec is not None or self.pre_stages or self.upstream is not None:
            raise InvalidArgumentError(
                f"group {group!r}: a group shares the windows of a count_window(n) straight on the "
                "stream, without stages before it; key the pipeline (key_by) to share its keys instead")
        ttl = to_seconds(lease_timeout, "lease_timeout")
        return GroupFeed(self.source.store, self.source.name, group, spec.n, spec.timeout_s, ttl)

    def run(self, consumer: str | None = None, max_windows: int | None = None,
            duration: Interval | None = None, *, group: str | None = None,
            lease_timeout: Interval = 30.0, stop_timeout: Interval = 10.0,
            source: MessageSource | None = None, acknowledger: Acknowledger | None = None,
            partitions: int | None = None, member: str | None = None) -> PipelineHandle:
        """Run until stopped (Ctrl-C), until ``max_windows`` windows are
        processed, or for ``duration``; re-raises a pipeline error. See
        :meth:`start` for ``consumer``, ``group``, ``lease_timeout``, ``source``,
        ``acknowledger``, ``partitions`` and ``member``.

        Returns within ``duration`` plus ``stop_timeout`` whatever user code
        does: a function still running then is abandoned (see
        :meth:`PipelineHandle.stop`), and the handle's ``stuck`` names it.
        The handle also reports ``dead_letters``, the windows sent to the
        dead-letter stream during the run.
        """
        self._usage.ran = True
        seconds = None if duration is None else to_seconds(duration, "duration")
        grace = to_seconds(stop_timeout, "stop_timeout", allow_zero=True)
        handle = self.start(consumer, max_windows=max_windows, group=group, lease_timeout=lease_timeout,
                            source=source, acknowledger=acknowledger, partitions=partitions, member=member)
        try:
            handle.join(seconds)
        finally:
            handle.stop(timeout=grace)
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


set_root(Pipeline)
