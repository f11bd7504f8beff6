"""The original ``minibatch`` API, on top of pipelines.

Code written for the original package keeps working::

    from minibatch_rx import Stream, streaming

    stream = Stream.get_or_create('test')
    stream.append({'date': '2026-01-01T00:00:00'})

    @streaming('test', size=2, keep=True)
    def myprocess(window):
        print(window.data)

What changed underneath: no polling sleeps, windows are acknowledged only
after ``myprocess`` returns (so a crash loses nothing), and functions are
never pickled: they run in the process that defines them. ``workers`` and
``executor`` are accepted and ignored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from reactivex import abc

from minibatch_rx.durations import Interval, positive_int, to_seconds
from minibatch_rx.errors import InvalidArgumentError
from minibatch_rx.message import Message
from minibatch_rx.pipeline import Pipeline, SinkTarget
from minibatch_rx.stream import Stream
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
_IGNORED = frozenset({"workers", "executor", "cnx_kwargs", "max_delay", "queue"})


class WindowEmitter:
    """Base class of emitter strategies, as in the original package.

    Subclasses override :meth:`window_ready` and :meth:`query`. Pending
    messages are in :attr:`buffer` (a list of :class:`Message`, in seq
    order); :attr:`now` is the scheduler's time. ``window_ready`` is called
    after each new message and every ``interval`` seconds (1 s if unset);
    whenever it says ready, ``query(*args)`` returns the messages for the
    next window (in the order returned), and those leave the buffer.
    Messages never returned stay buffered (and unacknowledged).

    Example (emit the two smallest even values once two are pending)::

        class SortedWindow(WindowEmitter):
            def window_ready(self):
                evens = sorted((m for m in self.buffer if m.data['value'] % 2 == 0),
                               key=lambda m: m.data['value'])
                self._data = evens[:self.interval]
                return len(self._data) == self.interval, ()

            def query(self, *args):
                return self._data
    """

    def __init__(self, stream: str, interval: Interval | None = None, size: int | None = None,
                 **options: Any) -> None:
        self.stream = stream
        self.interval: Any = interval
        self.size = size
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
    def __init__(self, emitter: WindowEmitter) -> None:
        self.emitter = emitter
        self.period = emitter.poll_interval()
        self.next_tick = math.inf

    def start(self, now: float) -> list[Window]:
        self.next_tick = now + self.period
        return []

    def on_message(self, message: Message, now: float) -> list[Window]:
        self.stream = message.stream
        self.emitter.buffer.append(message)
        return self.poll(now)

    def poll(self, now: float) -> list[Window]:
        emitter = self.emitter
        emitter.now = to_datetime(now)
        out: list[Window] = []
        while True:
            ready, args = emitter.window_ready()
            if not ready:
                return out
            chosen = list(emitter.query(*args))
            for item in chosen:
                if not isinstance(item, Message):
                    raise TypeError(
                        f"{type(emitter).__name__}.query() must return Messages from self.buffer, "
                        f"got {type(item).__name__}"
                    )
            taken = {m.seq for m in chosen}
            emitter.buffer = [m for m in emitter.buffer if m.seq not in taken]
            out.append(Window(tuple(chosen), self.stream))  # in query()'s order
            if not chosen:
                return out  # an empty window per poll at most

    def deadline(self) -> float | None:
        return self.next_tick

    def on_timer(self, now: float) -> list[Window]:
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
    empty windows included (``interval=N, relaxed=False``)."""

    def operator(self, scheduler: abc.SchedulerBase | None = None) -> WindowOperator:
        return fixed_time_window(self.interval, emit_empty=True, scheduler=scheduler)


class RelaxedTimeWindow(WindowEmitter):
    """Every ``interval`` seconds, whatever arrived since the previous window
    (``interval=N``)."""

    def operator(self, scheduler: abc.SchedulerBase | None = None) -> WindowOperator:
        return relaxed_time_window(self.interval, scheduler=scheduler)


def streaming(
    name: str,
    fn: Callable[[Window], Any] | None = None,
    *,
    interval: Interval | None = None,
    size: int | None = None,
    emitter: type[WindowEmitter] | None = None,
    relaxed: bool = True,
    keep: bool = False,
    url: str | None = None,
    sink: SinkTarget | None = None,
    consumer: str | None = None,
    blocking: bool = True,
    max_windows: int | None = None,
    **ignored: Any,
) -> Any:
    """Consume stream ``name`` window by window with the decorated function.

    ``size=N`` gives count windows, ``interval=S`` relaxed time windows (fixed
    ones with ``relaxed=False``), ``emitter=Class`` a custom
    :class:`WindowEmitter`. ``keep=False`` (the original's default) deletes
    messages once processed. The function's return value goes to ``sink`` if
    given. Blocks like the original unless ``blocking=False``, which returns
    a :class:`~minibatch_rx.running.PipelineHandle`. The consumer position
    is kept under ``consumer`` (default: the function's qualified name).

    >>> from minibatch_rx import Stream
    >>> s = Stream.get_or_create('doc-compat', url='memory://doc-compat')
    >>> _ = s.extend([{'v': 1}, {'v': 2}])
    >>> @streaming('doc-compat', size=2, url='memory://doc-compat', max_windows=1)
    ... def show(window):
    ...     print(window.data)
    [{'v': 1}, {'v': 2}]
    """
    unknown = set(ignored) - _IGNORED
    if unknown:
        raise TypeError(f"streaming() got unexpected keyword argument(s) {sorted(unknown)}")
    strategy = _strategy(name, interval, size, emitter, relaxed)

    def decorate(func: Callable[[Window], Any]) -> Any:
        pipeline = Pipeline(Stream.get_or_create(name, url)).window(strategy.operator).map(func)
        if sink is not None:
            pipeline = pipeline.sink(sink)
        if not keep:
            pipeline = pipeline.trim_processed()
        position = consumer or f"{func.__module__}.{func.__qualname__}"
        if blocking:
            return pipeline.run(position, max_windows=max_windows)
        return pipeline.start(position, max_windows=max_windows)

    return decorate(fn) if fn is not None else decorate


def _strategy(name: str, interval: Interval | None, size: int | None,
              emitter: type[WindowEmitter] | None, relaxed: bool) -> WindowEmitter:
    if emitter is not None:
        if not (isinstance(emitter, type) and issubclass(emitter, WindowEmitter)):
            raise InvalidArgumentError(f"emitter must be a WindowEmitter subclass, got {emitter!r}")
        return emitter(name, interval=interval, size=size)
    if size is not None:
        positive_int(size, "size")
        return CountWindow(name, size=size)
    if interval is not None:
        to_seconds(interval, "interval")
        cls = RelaxedTimeWindow if relaxed else FixedTimeWindow
        return cls(name, interval=interval)
    return CountWindow(name, size=1)
