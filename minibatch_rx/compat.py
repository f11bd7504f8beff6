"""The original ``minibatch`` (0.6.0) API, on top of pipelines.

Code written for the original package keeps working::

    from minibatch_rx import Stream, streaming

    stream = Stream.get_or_create('test')
    stream.append({'date': '2026-01-01T00:00:00'})

    @streaming('test', size=2, keep=True)
    def myprocess(window):
        print(window.data)

What changed underneath: no polling sleeps, windows are acknowledged only
after ``myprocess`` returns (so a crash loses nothing), and functions are
never pickled: they run in the process that defines them. What cannot be
kept raises :class:`CompatibilityError` naming what to use instead; the
README's compatibility table lists every difference.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from queue import Empty
from typing import Any, Protocol, overload

from reactivex import abc

from minibatch_rx.durations import Interval, positive_int, to_seconds
from minibatch_rx.errors import CompatibilityError, InvalidArgumentError
from minibatch_rx.message import Message
from minibatch_rx.pipeline import Pipeline, SinkTarget
from minibatch_rx.running import PipelineHandle
from minibatch_rx.streams import Stream
from minibatch_rx.window import Window
from minibatch_rx.windows import (
    WindowCore,
    WindowOperator,
    count_window,
    fixed_time_window,
    relaxed_time_window,
)
from minibatch_rx.windows._engine import to_datetime

DEFAULT_POLL = 1.0
QUEUE_POLL = 0.05  # seconds between looks at a stop queue (the original polled it per loop)
# Original keywords that tuned its executor, MongoDB connection or polling loop.
_IGNORED = frozenset({"workers", "executor", "cnx_kwargs", "max_delay"})


class StopQueue(Protocol):
    """What ``queue=`` takes: a ``queue.Queue`` or ``multiprocessing.Queue``."""

    def get(self, block: bool = ..., timeout: float | None = ...) -> Any: ...


_current = threading.local()  # the emitter whose window_ready()/query() is running


class QueryResult:
    """A list of :class:`Message` with the few queryset methods the original
    code used: ``count()``, ``filter(processed=..., stream=...)``, ``all()``,
    ``no_cache()``. Each message has ``.data``, as a ``Buffer`` document had."""

    def __init__(self, messages: Iterable[Message], processed: Callable[[Message], bool]) -> None:
        self._messages = list(messages)
        self._processed = processed

    def filter(self, **filters: Any) -> QueryResult:
        """The messages matching ``processed=`` and ``stream=``; other filters
        (MongoDB field queries) raise :class:`CompatibilityError`."""
        unknown = set(filters) - {"processed", "stream"}
        if unknown:
            raise CompatibilityError(
                f"Buffer/Stream.buffer() filters {sorted(unknown)} were MongoDB queries: filter the "
                "messages in Python (each has .seq, .ts and .data), or use Stream.read(after=seq)"
            )
        kept = [m for m in self._messages
                if ("stream" not in filters or m.stream == filters["stream"])
                and ("processed" not in filters or self._processed(m) == bool(filters["processed"]))]
        return QueryResult(kept, self._processed)

    def all(self) -> QueryResult:
        """All of them."""
        return self

    def no_cache(self) -> QueryResult:
        """All of them (there is no cache to bypass)."""
        return self

    def count(self) -> int:
        """How many messages."""
        return len(self._messages)

    def __iter__(self) -> Iterator[Message]:
        return iter(self._messages)

    def __len__(self) -> int:
        return len(self._messages)

    def __getitem__(self, index: int) -> Message:
        return self._messages[index]


class _BufferObjects:
    """``filter()``, ``all()``, ``no_cache()``, ``count()`` over the running
    emitter's pending messages (see :class:`QueryResult`)."""

    def __getattr__(self, name: str) -> Any:
        emitter = getattr(_current, "emitter", None)
        if emitter is None:
            raise CompatibilityError(
                "Buffer.objects is only available inside a WindowEmitter's window_ready() or "
                "query() (it holds that emitter's pending messages); elsewhere use "
                "Stream.buffer() or Stream.read()"
            )
        return getattr(QueryResult(emitter.buffer, lambda _m: False), name)


class Buffer:
    """The original's buffer collection, as seen by a custom emitter:
    ``Buffer.objects.no_cache().filter(processed=False)`` inside
    ``window_ready()``/``query()`` gives that emitter's pending messages
    (its :attr:`WindowEmitter.buffer`), in seq order."""

    objects = _BufferObjects()


class WindowEmitter:
    """Base class of emitter strategies, as in the original package.

    Subclasses override :meth:`window_ready` and :meth:`query`. The pending
    messages (in seq order) are :attr:`buffer`, also reachable the original
    way, ``Buffer.objects.filter(processed=False)``; :attr:`now` is the
    scheduler's time. ``window_ready`` is asked after each new message and
    every ``interval`` seconds (default 1); whenever it says ready,
    ``query(*args)`` returns the messages of the next window (in the order
    returned). An empty result is emitted only with ``emit_empty=True``.

    Skipping rule (exactly-once with ``keep=False`` and restarts): when a
    window is emitted, pending messages older (lower seq) than its newest
    message that ``query()`` did not return are *skipped*: they leave the
    buffer and are acknowledged with the window, never emitted. So an
    emitter that filters messages out (e.g. odd values) lets its position,
    and ``keep=False`` trimming, move on; one that wants to emit an old
    message later must include it no later than any newer message.
    """

    def __init__(self, stream: str, interval: Interval | None = None, size: int | None = None,
                 emit_empty: bool = False, **options: Any) -> None:
        self.stream = stream
        self.stream_name = stream
        self.interval: Any = interval if interval is not None else 1
        self.size = size
        self.emit_empty = emit_empty
        self.options = options
        self.buffer: list[Message] = []
        self.now: datetime = to_datetime(0)

    def window_ready(self) -> tuple[bool, tuple[Any, ...]]:
        """``(ready, args)``: whether a window can be emitted now, and the
        arguments for :meth:`query`. The default: ready whenever messages wait."""
        return bool(self.buffer), ()

    def query(self, *args: Any) -> Iterable[Message]:
        """The messages of the next window. The default: all pending ones."""
        return list(self.buffer)

    def poll_interval(self) -> float:
        """How often :meth:`window_ready` is asked without new messages."""
        if isinstance(self.interval, (int, float, str)) and not isinstance(self.interval, bool):
            return to_seconds(self.interval, "interval")
        return DEFAULT_POLL

    def operator(self, scheduler: abc.SchedulerBase | None = None) -> WindowOperator:
        """This strategy as a reactivex window operator."""
        return WindowOperator(lambda: _EmitterCore(self), scheduler)


class _EmitterCore(WindowCore):
    # window_ready() may look at the clock on ticks: those decisions are clock
    # decisions (journaled by pipelines, replayed through on_timer).
    clocked = True

    def __init__(self, emitter: WindowEmitter) -> None:
        self.emitter = emitter
        self.period = emitter.poll_interval()
        self.next_tick = math.inf
        self.clock = -math.inf

    def start(self, now: float) -> list[Window]:
        self.next_tick = now + self.period
        return []

    def on_message(self, message: Message, now: float) -> list[Window]:
        # Decided from the messages alone (a replay decides the same): ``now``
        # is the message's ingest time, never before the previous tick.
        self.stream = message.stream
        self.emitter.buffer.append(message)
        return self.poll(max(self.clock, message.ts.timestamp()))

    def poll(self, now: float) -> list[Window]:
        emitter = self.emitter
        self.clock = now
        emitter.now = to_datetime(now)
        _current.emitter = emitter
        try:
            return self._windows(emitter)
        finally:
            _current.emitter = None

    def _windows(self, emitter: WindowEmitter) -> list[Window]:
        out: list[Window] = []
        while True:
            ready, args = emitter.window_ready()
            if not ready:
                return out
            chosen = list(emitter.query(*args))
            pending = {m.seq for m in emitter.buffer}
            for item in chosen:
                if not isinstance(item, Message):
                    raise TypeError(
                        f"{type(emitter).__name__}.query() must return Messages from self.buffer, "
                        f"got {type(item).__name__}"
                    )
                if item.seq not in pending:
                    raise InvalidArgumentError(
                        f"{type(emitter).__name__}.query() returned message {item.seq}, which is not "
                        "pending (already emitted or skipped, or returned twice)"
                    )
                pending.discard(item.seq)
            if not chosen:
                if emitter.emit_empty:
                    out.append(Window((), self.stream))
                return out  # an empty window per poll at most
            newest = max(m.seq for m in chosen)
            # The skipping rule: what is older than the newest emitted message is done.
            emitter.buffer = [m for m in emitter.buffer if m.seq in pending and m.seq > newest]
            out.append(Window(tuple(chosen), self.stream))  # in query()'s order

    def deadline(self) -> float | None:
        return self.next_tick

    def spawn(self) -> WindowCore:
        """A core over a deep copy of the emitter with an empty buffer (one per
        key): state the emitter keeps in its attributes is each key's own."""
        try:
            emitter = copy.deepcopy(self.emitter)
        except Exception as error:
            raise InvalidArgumentError(
                f"{type(self.emitter).__name__} cannot run per key (key_by): each key gets a deep "
                f"copy of the emitter, and copying it failed ({type(error).__name__}: {error}); "
                "define __deepcopy__, or keep locks and connections out of its attributes") from error
        emitter.buffer = []
        return _EmitterCore(emitter)

    def on_timer(self, now: float, forced: bool = False) -> list[Window]:
        self.next_tick = max(self.next_tick + self.period, now + self.period / 2)
        return self.poll(now)

    def held_min_seq(self) -> int | None:
        return min((m.seq for m in self.emitter.buffer), default=None)


class CountWindow(WindowEmitter):
    """Windows of ``size`` messages (the original's ``@streaming(size=N)``)."""

    def operator(self, scheduler: abc.SchedulerBase | None = None) -> WindowOperator:
        return count_window(positive_int(self.size or 1, "size"), scheduler=scheduler)


class FixedTimeWindow(WindowEmitter):
    """Every ``interval`` seconds, the messages received within that interval,
    empty windows included unless ``emit_empty=False`` (``interval=N, relaxed=False``)."""

    def operator(self, scheduler: abc.SchedulerBase | None = None) -> WindowOperator:
        return fixed_time_window(self.interval, emit_empty=self.emit_empty, scheduler=scheduler)


class RelaxedTimeWindow(WindowEmitter):
    """Every ``interval`` seconds, whatever arrived since the previous window,
    empty windows included unless ``emit_empty=False`` (``interval=N``)."""

    def operator(self, scheduler: abc.SchedulerBase | None = None) -> WindowOperator:
        return relaxed_time_window(self.interval, emit_empty=self.emit_empty, scheduler=scheduler)


WindowFunction = Callable[[Window], object]


@overload
def streaming(
    name: str, fn: None = None, *, interval: Interval | None = ..., size: int | None = ...,
    emitter: type[WindowEmitter] | None = ..., relaxed: bool = ..., keep: bool = ...,
    url: str | None = ..., sink: SinkTarget | Any = ..., queue: StopQueue | None = ...,
    source: Any = ..., emit_empty: bool | None = ..., max_workers: int | None = ...,
    consumer: str | None = ..., blocking: bool = ..., max_windows: int | None = ..., **options: Any,
) -> Callable[[WindowFunction], PipelineHandle]: ...
@overload
def streaming(
    name: str, fn: WindowFunction, *, interval: Interval | None = ..., size: int | None = ...,
    emitter: type[WindowEmitter] | None = ..., relaxed: bool = ..., keep: bool = ...,
    url: str | None = ..., sink: SinkTarget | Any = ..., queue: StopQueue | None = ...,
    source: Any = ..., emit_empty: bool | None = ..., max_workers: int | None = ...,
    consumer: str | None = ..., blocking: bool = ..., max_windows: int | None = ..., **options: Any,
) -> PipelineHandle: ...
def streaming(
    name: str, fn: WindowFunction | None = None, *, interval: Interval | None = None,
    size: int | None = None, emitter: type[WindowEmitter] | None = None, relaxed: bool = True,
    keep: bool = False, url: str | None = None, sink: SinkTarget | Any = None,
    queue: StopQueue | None = None, source: Any = None, emit_empty: bool | None = None,
    max_workers: int | None = None, consumer: str | None = None, blocking: bool = True,
    max_windows: int | None = None, **options: Any,
) -> Callable[[WindowFunction], PipelineHandle] | PipelineHandle:
    """Consume stream ``name`` window by window with the decorated function.

    ``size=N`` gives count windows, ``interval=S`` relaxed time windows (fixed
    ones with ``relaxed=False``; both emit empty windows unless
    ``emit_empty=False``), ``emitter=Class`` a custom :class:`WindowEmitter`
    (built with ``interval``, ``size``, ``emit_empty`` and any other keyword).
    ``keep=False`` (the original's default) deletes messages once processed.
    With ``sink`` (a stream, a stream name, a callable, or an object with
    ``.put()`` such as a queue), the function's result goes there, or the
    window when the result is falsy (``None``), as in the original; a
    ``.put()`` sink gets a window as its ``data`` list. ``source`` (an object
    with ``.stream(stream)`` and ``.cancel()``) is attached while consuming.
    Sending a truthy value on ``queue`` stops the consumer.

    Blocks like the original unless ``blocking=False``, which returns the
    running :class:`~minibatch_rx.running.PipelineHandle` (the blocking call
    returns it once done). The position is kept under ``consumer``, by
    default ``"<file stem>.<qualified name>"`` of the function (e.g.
    ``jobs.process`` for ``process`` in ``jobs.py``), the same whether the
    file is run as a script or imported; in a REPL or notebook pass
    ``consumer=``.

    >>> from minibatch_rx import Stream
    >>> s = Stream.get_or_create('doc-compat', url='memory://doc-compat')
    >>> _ = s.extend([{'v': 1}, {'v': 2}])
    >>> @streaming('doc-compat', size=2, url='memory://doc-compat', max_windows=1)
    ... def show(window):
    ...     print(window.data)
    [{'v': 1}, {'v': 2}]
    """
    unknown = set(options) - _IGNORED
    if unknown and emitter is None:
        raise TypeError(f"streaming() got unexpected keyword argument(s) {sorted(unknown)}")
    if max_workers is not None and max_workers != 1:
        raise CompatibilityError(
            f"max_workers={max_workers}: a consumer processes its windows one at a time here; to "
            "process windows in parallel, run several members of a consumer group: "
            "stream(name).count_window(n).map(fn).start(group='name') in each thread or process"
        )
    if source is not None and not callable(getattr(source, "stream", None)):
        raise InvalidArgumentError(f"source must have a .stream(stream) method, got {source!r}")
    extra = {k: v for k, v in options.items() if k not in _IGNORED}
    strategy = _strategy(name, interval, size, emitter, relaxed, emit_empty, **extra)
    target = _sink_target(sink)

    def decorate(func: WindowFunction) -> PipelineHandle:
        source_stream = Stream.get_or_create(name, url)
        mapped = func if target is None else _or_window(func)
        pipeline = Pipeline(source_stream).window(strategy.operator).map(mapped)
        if target is not None:
            pipeline = pipeline.sink(target)
        if not keep:
            pipeline = pipeline.trim_processed()
        position = consumer or default_consumer(func)
        if source is not None:
            source_stream.attach(source)
        handle = pipeline.start(position, max_windows=max_windows)
        if not blocking:
            if queue is not None or source is not None:
                threading.Thread(target=_watch, args=(handle, queue, source_stream, source),
                                 name=f"minibatch-watch-{name}", daemon=True).start()
            return handle
        _watch(handle, queue, source_stream, source)
        if handle.error is not None:
            raise handle.error
        return handle

    return decorate(fn) if fn is not None else decorate


def default_consumer(func: Callable[..., Any]) -> str:
    """The position name ``@streaming`` gives ``func``: ``"<file stem>.<qualname>"``,
    independent of ``__main__`` vs imported (module name when there is no file)."""
    code = getattr(func, "__code__", None)
    filename = code.co_filename if code is not None else ""
    if filename and not filename.startswith("<"):
        prefix = Path(filename).stem
    else:
        prefix = getattr(func, "__module__", None) or "builtins"
    qualname = getattr(func, "__qualname__", None) or type(func).__qualname__
    return f"{prefix}.{qualname}"


def _watch(handle: PipelineHandle, queue: StopQueue | None, stream: Stream, source: Any) -> None:
    """Wait for ``handle`` to finish, stopping it on a truthy ``queue`` message
    (or Ctrl-C); then stop the attached source."""
    try:
        while not handle.join(None if queue is None else 0):
            assert queue is not None
            try:
                message = queue.get(timeout=QUEUE_POLL)
            except Empty:
                continue
            if message:
                break
    finally:
        handle.stop()
        if source is not None:
            stream.stop()


def _or_window(func: WindowFunction) -> Callable[[Window], object]:
    def call(window: Window) -> object:
        return func(window) or window  # the original forwarded the window on a falsy result

    return call


def _sink_target(sink: Any) -> SinkTarget | None:
    if sink is None or isinstance(sink, (Stream, str)) or callable(sink):
        return sink  # type: ignore[no-any-return]
    put = getattr(sink, "put", None)
    if not callable(put):
        raise InvalidArgumentError(
            f"sink must be a Stream, a stream name, a callable or have a .put() method, got {sink!r}"
        )
    return lambda value: put(value.data if isinstance(value, Window) else value)


def _strategy(name: str, interval: Interval | None, size: int | None,
              emitter: type[WindowEmitter] | None, relaxed: bool,
              emit_empty: bool | None = None, **options: Any) -> WindowEmitter:
    if emitter is not None:
        if not (isinstance(emitter, type) and issubclass(emitter, WindowEmitter)):
            raise InvalidArgumentError(f"emitter must be a WindowEmitter subclass, got {emitter!r}")
        return emitter(name, interval=interval, size=size, emit_empty=bool(emit_empty), **options)
    if interval is None:  # as in the original, interval= wins over size=
        return CountWindow(name, size=positive_int(1 if size is None else size, "size"))
    to_seconds(interval, "interval")
    cls = RelaxedTimeWindow if relaxed else FixedTimeWindow
    # The original emitted empty time windows whatever emit_empty said; False is honoured here.
    return cls(name, interval=interval, emit_empty=emit_empty is not False)
