"""The named, durable :class:`Stream` handle."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from reactivex import Observable, abc

from minibatch_rx import dsl
from minibatch_rx.errors import CompatibilityError, InvalidArgumentError
from minibatch_rx.message import Message
from minibatch_rx.naming import journal_name
from minibatch_rx.partitions import is_partition_of
from minibatch_rx.source import store_source
from minibatch_rx.store import Store, open_store
from minibatch_rx.validation import check_payload, check_stream_name
from minibatch_rx.windows.clocks import DEFAULT_IDLE

if TYPE_CHECKING:
    from minibatch_rx.compat import QueryResult
    from minibatch_rx.durations import Interval
    from minibatch_rx.pipeline import Pipeline, SinkTarget
    from minibatch_rx.producer import Producer
    from minibatch_rx.window import Window

U = TypeVar("U")

_PAGE = 1000
# Keyword arguments of the original package's Stream.get_or_create that have
# no meaning here (polling intervals, batch sizes of its emitter loop).
_LEGACY_IGNORED = frozenset({"interval", "batchsize", "max_delay", "stream_id", "ttl"})


@dataclass(frozen=True)
class ConsumerInfo:
    """A registered consumer or group of a stream (see :meth:`Stream.consumers`).

    ``lag`` is how many seqs it is behind: ``last_seq - position``.
    """

    name: str
    position: int
    lag: int


class Stream(dsl.WindowDSL[dict[str, Any]]):
    """A named, append-only, durable sequence of JSON-like messages.

    Producers ``append`` payloads; each gets a ``seq`` from the store.
    Consumers ``read`` or ``observe`` them, and keep their progress as a
    consumer position in the same store.

    Example:
        >>> s = Stream.get_or_create('doc-orders', url='memory://doc')
        >>> s.append({'item': 'tea', 'qty': 2})
        1
        >>> s.extend([{'item': 'cake'}, {'item': 'jam'}])
        [2, 3]
        >>> [m.data['item'] for m in s.read(after=1)]
        ['cake', 'jam']
    """

    def __init__(self, name: str, url: str | None = None, *, store: Store | None = None) -> None:
        self.name = check_stream_name(name)
        self.store: Store = store if store is not None else open_store(url)
        self._sources: list[tuple[Any, threading.Thread]] = []

    @classmethod
    def get_or_create(
        cls, name: str, url: str | None = None, *, store: Store | None = None, **legacy: Any
    ) -> Stream:
        """The stream called ``name``, registering it in the store if new.

        Accepts (and ignores) the original package's ``interval`` and
        ``batchsize`` keywords, which tuned its polling loop.
        """
        if "max_age" in legacy:
            raise CompatibilityError(
                "get_or_create(max_age=...) is not kept: streams keep messages until removed; use "
                "Pipeline.retain(max_age) while a pipeline runs, or stream.expire(max_age)"
            )
        unknown = set(legacy) - _LEGACY_IGNORED
        if unknown:
            raise TypeError(f"get_or_create() got unexpected keyword argument(s) {sorted(unknown)}")
        stream = cls(name, url, store=store)
        stream.store.ensure_stream(stream.name)
        return stream

    def __repr__(self) -> str:
        return f"Stream({self.name!r}, url={self.store.url!r})"

    def __len__(self) -> int:
        return self.count()

    # -- producing ---------------------------------------------------------
    def append(self, payload: Mapping[str, Any], key: str | None = None) -> int:
        """Store one payload and return its seq.

        With a ``key``, the append is idempotent: if the stream already holds a
        message with that key, nothing is stored and that message's seq is
        returned, so a producer may safely retry after a timeout.

        Raises :class:`~minibatch_rx.errors.InvalidPayloadError` (a
        ``TypeError``) before storing anything if ``payload`` is not a dict of
        JSON/BSON-compatible values.
        """
        keys = None if key is None else [_check_key(key)]
        return self.store.append(self.name, [check_payload(payload)], keys)[0]

    def extend(self, payloads: Iterable[Mapping[str, Any]],
               keys: Iterable[str | None] | None = None) -> list[int]:
        """Store many payloads in one round trip, atomically; return their seqs.

        Every payload is checked first: one bad payload stores none. ``keys``
        (one per payload, ``None`` for none) make the append idempotent as in
        :meth:`append`.
        """
        batch = [check_payload(p) for p in payloads]
        key_list = None if keys is None else [None if k is None else _check_key(k) for k in keys]
        if key_list is not None and len(key_list) != len(batch):
            raise InvalidArgumentError(f"extend got {len(batch)} payloads but {len(key_list)} keys")
        return self.store.append(self.name, batch, key_list) if batch else []

    def producer(self, linger: Interval = "5ms", max_batch: int = 1000, *, max_bytes: int | None = None,
                 max_pending: int | None = None) -> Producer:
        """A buffered :class:`~minibatch_rx.producer.Producer` for many single
        appends from any number of threads: they are stored in batches of up
        to ``max_batch`` messages (and about ``max_bytes`` of JSON), one
        transaction each, written when full or ``linger`` after their first
        message. ``append`` returns a handle resolving to the seq once the
        message is durable; ``flush()`` returns once everything appended
        before it is. At most ``max_pending`` messages (default ``10 *
        max_batch``) wait; past that ``append`` blocks. Close it, or use it
        as a context manager.

        >>> s = Stream('doc-producer-method', url='memory://doc')
        >>> with s.producer(linger='1ms') as p:
        ...     handle = p.append({'n': 1})
        >>> handle.result()
        1
        """
        from minibatch_rx.producer import Producer

        return Producer(self, linger, max_batch, max_bytes, max_pending)

    # -- reading -----------------------------------------------------------
    def count(self) -> int:
        """Number of messages the stream currently holds."""
        return self.store.count(self.name)

    def last_seq(self) -> int:
        """The highest seq ever assigned in this stream (0 if none)."""
        return self.store.last_seq(self.name)

    def read(self, after: int = 0, limit: int | None = None) -> Iterator[Message]:
        """Iterate the stored messages with ``seq > after``, in seq order.

        Pages through the store, so a huge stream is never loaded at once.
        """
        if limit is not None and limit < 0:
            raise InvalidArgumentError(f"limit must be >= 0, got {limit}")
        remaining = limit
        while remaining is None or remaining > 0:
            page = _PAGE if remaining is None else min(_PAGE, remaining)
            batch = self.store.read(self.name, after, page)
            yield from batch
            if len(batch) < page:
                return
            after = batch[-1].seq
            if remaining is not None:
                remaining -= len(batch)

    def observe(
        self,
        consumer: str | None = None,
        scheduler: abc.SchedulerBase | None = None,
        *,
        after: int | None = None,
        batch_size: int = 500,
    ) -> Observable[Message]:
        """A ReactiveX observable of this stream's messages: catch-up, then live.

        It starts after ``after`` if given, else after ``consumer``'s committed
        position, else at the beginning, and never completes. Observing does
        not commit positions; pipelines do that once a window is processed.
        Disposing the subscription stops all background work.

        >>> import reactivex.operators as ops
        >>> s = Stream('doc-obs', url='memory://doc')
        >>> _ = s.extend([{'n': 1}, {'n': 2}])
        >>> seen = []
        >>> sub = s.observe().pipe(ops.map(lambda m: m.data['n'])).subscribe(seen.append)
        >>> _ = s.append({'n': 3})
        >>> seen
        [1, 2, 3]
        >>> sub.dispose()
        """
        if batch_size <= 0:
            raise InvalidArgumentError(f"batch_size must be > 0, got {batch_size}")
        return store_source(self.store, self.name, after, consumer, scheduler, batch_size)

    # -- consumer positions -------------------------------------------------
    def position(self, consumer: str) -> int:
        """The last seq acknowledged by ``consumer`` (0 if none)."""
        return self.store.get_position(self.name, consumer)

    def commit(self, consumer: str, seq: int) -> None:
        """Acknowledge every message up to ``seq`` for ``consumer``.

        Positions never move backwards.
        """
        if seq < 0:
            raise InvalidArgumentError(f"seq must be >= 0, got {seq}")
        self.store.commit_position(self.name, consumer, seq)

    # -- fluent pipelines (the window methods come from WindowDSL) ------------
    def pipeline(self) -> Pipeline[Message, dict[str, Any]]:
        """An empty :class:`~minibatch_rx.pipeline.Pipeline` reading this stream."""
        return dsl.root(self)

    def key_by(self, key: str | Callable[[dict[str, Any]], Any]) -> Pipeline[Message, dict[str, Any]]:
        """Start a pipeline whose window runs per key; see
        :meth:`~minibatch_rx.pipeline.Pipeline.key_by`."""
        return self.pipeline().key_by(key)

    def event_time(self, timestamp: str | Callable[[dict[str, Any]], Any], max_delay: Interval = 0,
                   idle: Interval | None = DEFAULT_IDLE) -> Pipeline[Message, dict[str, Any]]:
        """Start a pipeline whose time window runs on event time; see
        :meth:`~minibatch_rx.pipeline.Pipeline.event_time`."""
        return self.pipeline().event_time(timestamp, max_delay, idle)

    def map(self, fn: Callable[[Message], U]) -> Pipeline[U]:
        """Start a window-less pipeline: ``fn`` gets each Message."""
        return self.pipeline().map(fn)

    def filter(self, predicate: Callable[[Message], bool]) -> Pipeline[Message, dict[str, Any]]:
        """Start a window-less pipeline keeping Messages where ``predicate`` is true."""
        return self.pipeline().filter(predicate)

    def flat_map(self, fn: Callable[[Message], Iterable[U]]) -> Pipeline[U]:
        """Start a window-less pipeline: ``fn`` turns each Message into many values."""
        return self.pipeline().flat_map(fn)

    def pipe(self, *operators: Any) -> Pipeline[Any]:
        """Start a window-less pipeline applying reactivex operators to Messages."""
        return self.pipeline().pipe(*operators)

    def sink(self, target: SinkTarget, *, idempotent: bool = True) -> Pipeline[Message, dict[str, Any]]:
        """Start a window-less pipeline delivering each Message to ``target``."""
        return self.pipeline().sink(target, idempotent=idempotent)

    def positions(self) -> dict[str, int]:
        """Every registered consumer or group of this stream, with its position."""
        return self.store.positions(self.name)

    def consumers(self) -> list[ConsumerInfo]:
        """Every registered consumer or group, by name, with its position and lag.

        >>> s = stream('doc-consumers', url='memory://doc')
        >>> _ = s.extend([{'n': 1}, {'n': 2}, {'n': 3}])
        >>> s.commit('reporter', 1)
        >>> s.consumers()
        [ConsumerInfo(name='reporter', position=1, lag=2)]
        """
        last = self.last_seq()
        return [ConsumerInfo(name, seq, max(0, last - seq))
                for name, seq in sorted(self.positions().items())]

    def forget(self, consumer: str) -> bool:
        """Unregister ``consumer`` (or a group, with its leases, or its key
        partitions' positions and partition table): its position is deleted,
        so it no longer holds back ``trim_acknowledged`` and ``keep=False``.
        False if it was not registered. A pipeline still running under that
        name registers again at its next acknowledgement (from its old
        position: stop it first)."""
        if not isinstance(consumer, str) or not consumer:
            raise InvalidArgumentError(f"consumer must be a non-empty str, got {consumer!r}")
        known = self.store.remove_position(self.name, consumer)
        # Its window decisions go too: a pipeline started later under this name
        # is a new consumer, from the beginning, for every window strategy.
        self.store.delete(journal_name(self.name, consumer))
        # A group run by key partition: each partition's position and journal too
        # (its partition table went with remove_position).
        for name in self.store.positions(self.name):
            if is_partition_of(name, consumer):
                known = self.store.remove_position(self.name, name) or known
                self.store.delete(journal_name(self.name, name))
        return known

    # -- the original package's Stream methods ----------------------------------
    def attach(self, source: Any, background: bool = True) -> Any:
        """Let ``source`` append to this stream (the original's connectors):
        ``source.stream(self)`` runs in a daemon thread until :meth:`stop`
        calls ``source.cancel()``; with ``background=False`` it runs here and
        its result is returned."""
        run = getattr(source, "stream", None)
        if not callable(run):
            raise InvalidArgumentError(f"a source needs a .stream(stream) method, got {source!r}")
        if not background:
            return run(self)
        thread = threading.Thread(target=run, args=(self,), name=f"minibatch-source-{self.name}",
                                  daemon=True)
        self._sources.append((source, thread))
        thread.start()
        return None

    def stop(self, timeout: float = 5.0) -> bool:
        """Cancel the attached sources (``source.cancel()``) and wait up to
        ``timeout`` seconds for their threads; False if one is still running."""
        sources, self._sources = self._sources, []
        for source, _thread in sources:
            cancel = getattr(source, "cancel", None)
            if callable(cancel):
                cancel()
        deadline = time.monotonic() + timeout
        for _source, thread in sources:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for _source, thread in sources)

    def buffer(self, **filters: Any) -> QueryResult:
        """The stored messages (the original's buffer documents), with
        ``count()`` and ``filter()``. ``processed=True`` / ``False`` select
        messages acknowledged / not yet acknowledged by every registered
        consumer and group (with none registered, nothing is processed)."""
        from minibatch_rx.compat import QueryResult

        positions = self.positions().values()
        done = min(positions) if positions else 0
        return QueryResult(self.read(), lambda m: m.seq <= done).filter(**filters)

    def window(self, spec: Any = None, /, **filters: Any) -> Pipeline[Window[dict[str, Any]]]:
        """Start a pipeline windowed by ``spec`` (a window spec such as
        ``Count(2)``, or an operator factory; ``Pipeline.window``). The
        original's ``window(**filters)`` queried stored windows, which are not
        kept: it raises ``CompatibilityError``."""
        if spec is None or filters:

            raise CompatibilityError(
                "windows are not stored: send each window's result to a stream with "
                "@streaming(..., sink='name') or Pipeline.sink('name'), then read that stream"
            )
        return self.pipeline().window(spec)

    def flush(self) -> None:
        """Nothing to do: every append is stored when it returns (the original batched)."""

    def streaming(self, fn: Any = None, **kwargs: Any) -> Any:
        """``minibatch_rx.streaming`` on this stream and store."""
        from minibatch_rx.compat import streaming

        return streaming(self.name, fn, url=self.store.url, **kwargs)

    # -- housekeeping --------------------------------------------------------
    def clear(self) -> None:
        """Remove all messages; later appends continue the seq numbering."""
        self.store.clear(self.name)

    def trim(self, upto: int) -> int:
        """Remove messages with ``seq <= upto``; return how many."""
        return self.store.trim(self.name, upto)

    def trim_acknowledged(self) -> int:
        """Remove the messages every registered consumer and group has
        acknowledged (``keep=False``); return how many. With no registered
        consumer nothing is removed."""
        positions = self.positions()
        return self.trim(min(positions.values())) if positions else 0

    def expire(self, max_age: Interval) -> int:
        """Remove messages ingested more than ``max_age`` ago; return how many.

        >>> s = stream('doc-expire', url='memory://doc')
        >>> _ = s.append({'a': 1})
        >>> s.expire('1h'), s.count()
        (0, 1)
        """
        from minibatch_rx.durations import to_seconds

        seconds = to_seconds(max_age, "max_age", allow_zero=True)
        return self.store.expire(self.name, seconds)

    def delete(self) -> None:
        """Remove the stream with its messages and consumer positions."""
        self.store.delete(self.name)


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidArgumentError(f"a message key must be a non-empty str, got {key!r}")
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgumentError(
                f"message key {key!r} holds a lone surrogate, which MongoDB refuses") from None
    return key


def stream(name: str, url: str | None = None) -> Stream:
    """The stream ``name`` on the store at ``url`` (default: see ``resolve_url``),
    the root of fluent pipelines.

    >>> stream('doc-root', url='memory://doc').name
    'doc-root'
    """
    return Stream.get_or_create(name, url)


def list_streams(url: str | None = None) -> list[str]:
    """Names of the streams in the store at ``url``, sorted (the library's
    own bookkeeping streams, named ``_mb.*``, are left out)."""
    return [name for name in open_store(url).streams() if not name.startswith("_mb.")]
