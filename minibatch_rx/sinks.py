"""Where a pipeline's values go: the :class:`Sink` protocol.

A pipeline hands each value it produces to its sink with an *idempotency
key*: a text naming where the value came from (the consumer, the seq range of
its window, its rank among that window's outputs). A value processed again
after a crash gets the same key, so a sink that stores by key stores it once.

The pipeline calls :meth:`Sink.flush` before it commits its position: once
``flush`` returns, everything written must be durable at the target, and a
failure of anything written must be raised there (the window is then retried,
and dead-lettered if it keeps failing). ``close`` is called once when the
pipeline stops.

Plain callables and streams are adapted: ``.sink(fn)`` calls ``fn(value)``
per value (keys are dropped), ``.sink(stream)`` appends idempotently by key
(:class:`StreamSink`). Connectors (Kafka, MQTT, MongoDB collections)
implement the protocol themselves.

Example, a sink that keeps values by key in a dict (a stand-in for a table
with a unique key):

>>> class TableSink:
...     def __init__(self) -> None:
...         self.rows: dict[str, object] = {}
...     def write(self, values, keys):
...         for value, key in zip(values, keys):
...             self.rows.setdefault(key, value)   # a replayed key stores nothing new
...     def flush(self) -> None:
...         pass                                   # nothing buffered
...     def close(self) -> None:
...         pass
>>> table = TableSink()
>>> isinstance(table, Sink)
True
>>> table.write([{'n': 1}], ['c|s:1-2|0']); table.write([{'n': 1}], ['c|s:1-2|0'])
>>> table.rows
{'c|s:1-2|0': {'n': 1}}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from minibatch_rx.message import Message
from minibatch_rx.streams import Stream
from minibatch_rx.validation import check_payload
from minibatch_rx.window import Window

T_contra = TypeVar("T_contra", contravariant=True)
T = TypeVar("T")


@runtime_checkable
class Sink(Protocol[T_contra]):
    """The end of a pipeline: takes values with their idempotency keys."""

    def write(self, values: Sequence[T_contra], keys: Sequence[str]) -> None:
        """Deliver ``values`` (one key each, same order). May buffer; may raise
        to fail the window (it is retried, then dead-lettered)."""
        ...

    def flush(self) -> None:
        """Make every value written so far durable at the target, or raise.
        Called before the pipeline commits the position that covers them.
        A flush that raises keeps nothing: the pipeline writes the values
        again before it retries (their keys make that safe)."""
        ...

    def close(self) -> None:
        """Release the sink's resources (called when a run of the pipeline stops).
        A pipeline description may run again with the same sink object: a
        write after ``close`` must work, reopening what ``close`` released."""
        ...


class CallableSink(Generic[T]):
    """Adapts ``fn(value)`` to :class:`Sink`: one call per value, keys unused.

    >>> out = []
    >>> sink = CallableSink(out.append)
    >>> sink.write([1, 2], ['k1', 'k2']); sink.flush(); out
    [1, 2]
    """

    def __init__(self, fn: Callable[[T], Any]) -> None:
        self.fn = fn

    def write(self, values: Sequence[T], keys: Sequence[str]) -> None:
        """Call the function on each value, in order."""
        for value in values:
            self.fn(value)

    def flush(self) -> None:
        """Nothing is buffered."""

    def close(self) -> None:
        """Nothing to release."""


def as_sink(target: Sink[T] | Callable[[T], Any]) -> Sink[T]:
    """``target`` itself if it is a :class:`Sink`, else a :class:`CallableSink` around it.

    >>> isinstance(as_sink(print), CallableSink)
    True
    """
    if isinstance(target, Sink):
        return target
    if callable(target):
        return CallableSink(target)
    raise TypeError(f"a sink is a Stream, a Sink or a callable, not {type(target).__name__}")


class StreamSink:
    """Appends values to a stream: a dict is one message, a list of dicts (or a
    Window's data) a batch. Values are checked in :meth:`write` and stored by
    :meth:`flush` in one append; each message is keyed by its value's
    idempotency key (``key``, or ``key.0``, ``key.1`` ... for a batch), so a
    window processed again after a crash stores nothing new.

    >>> from minibatch_rx import stream
    >>> out = stream('doc-stream-sink', url='memory://doc-stream-sink')
    >>> sink = StreamSink(out)
    >>> sink.write([{'n': 1}, [{'n': 2}, {'n': 3}]], ['c|s:1-1|0', 'c|s:2-3|0'])
    >>> sink.flush(); sink.write([{'n': 1}], ['c|s:1-1|0']); sink.flush()   # the replay stores nothing
    >>> [m.data['n'] for m in out.read()]
    [1, 2, 3]
    """

    def __init__(self, target: Stream, *, idempotent: bool = True) -> None:
        self.target = target
        self.idempotent = idempotent
        self._payloads: list[Mapping[str, Any]] = []
        self._keys: list[str | None] = []

    def write(self, values: Sequence[Any], keys: Sequence[str]) -> None:
        """Check the values and keep them for :meth:`flush`."""
        payloads: list[Mapping[str, Any]] = []
        ids: list[str | None] = []
        for value, key in zip(values, keys, strict=True):
            if isinstance(value, (Window, Message)):
                value = value.data
            if isinstance(value, Mapping):
                payloads.append(check_payload(value))
                ids.append(key if self.idempotent else None)
            elif isinstance(value, (list, tuple)):
                payloads.extend(check_payload(v) for v in value)
                ids.extend(f"{key}.{j}" if self.idempotent else None for j in range(len(value)))
            else:
                raise TypeError(
                    f"cannot sink a {type(value).__name__} into stream {self.target.name!r}: "
                    "map windows to a dict or a list of dicts first")
        self._payloads += payloads
        self._keys += ids

    def flush(self) -> None:
        """Append what was written, in one batch."""
        if not self._payloads:
            return
        payloads, keys = self._payloads, self._keys
        self._payloads, self._keys = [], []
        self.target.extend(payloads, keys=keys if self.idempotent else None)

    def close(self) -> None:
        """Nothing to release (the stream's store is shared)."""
