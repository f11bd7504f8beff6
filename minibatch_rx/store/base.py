"""The contract every storage backend fulfils.

The rest of the package talks to storage only through :class:`Store` and
:class:`Reader`; nothing outside ``minibatch_rx.store`` knows which backend it
is using. :class:`Store` is made of three parts, :class:`Log`, :class:`Positions`
and :class:`Leases`; the optional synchronous :class:`Notifier` is checked in one
place, :func:`notifier`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from minibatch_rx.errors import InvalidPayloadError
from minibatch_rx.message import Message
from minibatch_rx.store.leases import Lease
from minibatch_rx.validation import json_default

Listener = Callable[[], None]
R = TypeVar("R")
StateUpdate = Callable[[Any | None, float], tuple[Any | None, R]]
"""``update(doc, now) -> (new doc or None, result)``: see :meth:`Leases.update_state`."""
# Strict JSON (no NaN or infinity) so a state document reads back the same on every backend.
_STATE_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=json_default)


@runtime_checkable
class Reader(Protocol):
    """A live cursor on one stream, owned by a single consumer thread.

    ``read`` fetches stored messages; ``wait`` blocks until messages after a
    given seq may exist (or the timeout passes, or the reader is closed).
    Closing a reader releases every resource it holds.
    """

    def read(self, after: int, limit: int | None = None) -> list[Message]:
        """Messages with ``seq > after`` in seq order, at most ``limit``."""
        ...

    def wait(self, after: int, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for a message with ``seq > after``.

        Returns ``True`` when new messages may be available; spurious wake-ups
        are allowed, missed ones are not.
        """
        ...

    def close(self) -> None:
        """Release the reader's resources; a blocked ``wait`` returns at once."""
        ...


@runtime_checkable
class ChangeWatch(Protocol):
    """One watcher of a whole store, shared by every reader of a process.

    A store that offers one (:class:`Watchable`) is read by a single watch per
    store object instead of one waiting cursor per subscription: the watch
    says which streams changed, and only those are read.
    """

    def poll(self, streams: Collection[str], timeout: float) -> Mapping[str, int | None]:
        """Wait up to ``timeout`` seconds for appends to any of ``streams``.

        Returns the streams that may hold new messages, each with its head
        (the highest seq stored) when known, else ``None`` (read to find out);
        empty when nothing changed. Spurious entries are allowed, missed
        appends are not: an append committed before ``poll`` returns is
        reported by this call or by the next one.
        """
        ...

    def wake(self) -> None:
        """Make a blocked :meth:`poll` return now (from another thread)."""
        ...

    def close(self) -> None:
        """Release the watch's connection and wake-up resources."""
        ...


@runtime_checkable
class Watchable(Protocol):
    """A store that can watch all its streams at once (see :class:`ChangeWatch`)."""

    def watch(self) -> ChangeWatch:
        """A new watch on this store; the caller closes it."""
        ...


@runtime_checkable
class Log(Protocol):
    """A durable log of messages per stream.

    Guarantees every backend gives:

    * ``append`` assigns each payload a ``seq`` one above the last ever
      assigned in that stream (gap-free, never reused, even after ``clear``);
    * once a reader has seen ``seq = n``, no message with a smaller seq can
      appear later;
    * an append returns only after the store holds the messages.
    """

    def append(self, stream: str, payloads: Sequence[Mapping[str, Any]],
               keys: Sequence[str | None] | None = None) -> list[int]:
        """Store the payloads, in order, as one atomic batch; return their seqs.

        A payload with a key already present in the stream (or earlier in the
        batch) is not stored again; its existing seq is returned instead.
        """
        ...

    def read(self, stream: str, after: int = 0, limit: int | None = None) -> list[Message]:
        """Messages with ``seq > after`` in seq order, at most ``limit``."""
        ...

    def count(self, stream: str) -> int:
        """Number of messages currently held for the stream."""
        ...

    def last_seq(self, stream: str) -> int:
        """Highest seq ever assigned in the stream (0 if none)."""
        ...

    def ensure_stream(self, stream: str) -> None:
        """Register the stream so that :meth:`streams` lists it."""
        ...

    def streams(self) -> list[str]:
        """Names of the registered streams, sorted."""
        ...

    def clear(self, stream: str) -> None:
        """Remove the stream's messages; seqs continue where they were."""
        ...

    def delete(self, stream: str) -> None:
        """Remove the stream, its messages, its consumer positions, its leases
        and its state documents (see :meth:`Leases.update_state`)."""
        ...

    def trim(self, stream: str, upto: int) -> int:
        """Remove the stream's messages with ``seq <= upto``; return how many."""
        ...

    def expire(self, stream: str, max_age: float) -> int:
        """Remove messages ingested more than ``max_age`` seconds ago, by the
        store's own clock; return how many."""
        ...

    def reader(self, stream: str) -> Reader:
        """A live cursor for one consumer thread."""
        ...


@runtime_checkable
class Positions(Protocol):
    """Where each consumer (or consumer group) of a stream has got to."""

    def get_position(self, stream: str, consumer: str) -> int:
        """Last seq acknowledged by ``consumer`` (0 if it never committed)."""
        ...

    def commit_position(self, stream: str, consumer: str, seq: int) -> None:
        """Record that ``consumer`` has processed every message up to ``seq``.

        Positions never move backwards: committing a smaller seq is a no-op.
        """
        ...

    def positions(self, stream: str) -> dict[str, int]:
        """Every registered consumer (or group) of the stream, with its position."""
        ...

    def remove_position(self, stream: str, consumer: str) -> bool:
        """Unregister ``consumer`` (or a group, with its leases and its state
        documents named ``consumer + "/" + ...``) from the stream, so it no longer
        holds back ``trim_acknowledged``. False if it had no position."""
        ...


@runtime_checkable
class Leases(Protocol):
    """Coordination of the members of a consumer group: seq-range leases, and
    small shared documents changed by atomic read-modify-write."""

    def lease(self, stream: str, group: str, owner: str, count: int, ttl: float,
              partial: bool) -> Lease | None:
        """Claim work for a member of ``group``, valid for ``ttl`` seconds.

        First an expired, unfinished lease is taken over; else the next
        ``count`` seqs after everything already leased (fewer only if
        ``partial``). ``None`` when there is nothing to claim.
        """
        ...

    def complete(self, stream: str, group: str, start: int, owner: str) -> bool:
        """Mark ``owner``'s lease finished and move the group's position over
        every finished lease without a gap. False if the lease was lost."""
        ...

    def update_state(self, stream: str, name: str, update: StateUpdate[R]) -> R:
        """Atomically replace the small JSON document ``name`` of ``stream``.

        ``update(doc, now)`` gets the current document (``None`` if absent) and
        the store's clock as epoch seconds, and returns ``(new document or None
        to delete it, result)``; the result is returned. Concurrent callers in
        any thread, process or host are serialised: no update is lost.
        ``update`` may be called more than once (on a conflict), so it must be a
        pure function of its arguments. An exception from ``update`` propagates
        and changes nothing; a document that is not JSON (see
        :func:`encode_state`) raises :class:`~minibatch_rx.errors.InvalidPayloadError`
        and changes nothing.

        >>> from minibatch_rx.store import MemoryStore
        >>> store = MemoryStore()
        >>> bump = lambda doc, now: ((doc or 0) + 1, doc)
        >>> store.update_state("s", "g/count", bump), store.update_state("s", "g/count", bump)
        (None, 1)
        """
        ...


@runtime_checkable
class Store(Log, Positions, Leases, Protocol):
    """What the rest of the package needs from a backend: a :class:`Log`, its
    :class:`Positions` and group :class:`Leases`, behind one URL.

    Optional extras are separate protocols, checked in one place each:
    :class:`Notifier` (see :func:`notifier`) and :class:`Watchable`.
    """

    url: str
    """The store's URL with any password redacted."""

    def close(self) -> None:
        """Release connections. The store must not be used afterwards."""
        ...


@runtime_checkable
class Notifier(Protocol):
    """A store that calls listeners synchronously inside ``append`` (in the
    appender's thread, at the appender's, possibly virtual, time)."""

    push: bool
    """True if ``listen`` callbacks run synchronously inside ``append``."""

    def listen(self, stream: str, callback: Listener) -> Callable[[], None]:
        """Call ``callback`` after each append to ``stream`` made through this
        store object; returns a function that removes the listener."""
        ...


def notifier(store: object) -> Notifier | None:
    """``store`` itself if it pushes appends to listeners synchronously, else ``None``.

    >>> from minibatch_rx.store import MemoryStore
    >>> notifier(MemoryStore()) is not None
    True
    """
    if isinstance(store, Notifier) and store.push:
        return store
    return None


def encode_state(stream: str, name: str, doc: Any) -> str:
    """The state document ``doc`` as compact JSON, or a clear error before anything is stored.

    Only what reads back equal is accepted: dicts with ``str`` keys, lists,
    ``str``, ``int``, finite ``float``, ``bool`` and ``None``.

    >>> encode_state("s", "g/partitions", {'owners': {'0': 'a'}})
    '{"owners":{"0":"a"}}'
    >>> encode_state('s', 'p', {'owners': {0: 'a'}})
    Traceback (most recent call last):
    ...
    minibatch_rx.errors.InvalidPayloadError: state document 'p' of stream 's' is not JSON: key 0 is not a str
    """
    try:
        _check_keys(doc)
        return _STATE_ENCODER.encode(doc)
    except (TypeError, ValueError, RecursionError) as exc:  # a type JSON lacks; NaN or infinity; a cycle
        raise InvalidPayloadError(
            f"state document {name!r} of stream {stream!r} is not JSON: {exc}") from None


def _check_keys(value: Any) -> None:
    """Raise if a dict inside ``value`` has a key JSON would turn into a string."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"key {key!r} is not a str")
            _check_keys(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_keys(item)


class Listeners:
    """In-process callbacks per stream, called after each append made
    through the store object that holds this registry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: dict[str, list[Listener]] = {}

    def add(self, stream: str, callback: Listener) -> Callable[[], None]:
        """Register ``callback``; returns a function that removes it."""
        with self._lock:
            self._callbacks.setdefault(stream, []).append(callback)

        def remove() -> None:
            with self._lock:
                callbacks = self._callbacks.get(stream, [])
                if callback in callbacks:
                    callbacks.remove(callback)

        return remove

    def notify(self, stream: str) -> None:
        """Call the stream's callbacks (outside the lock, so they may append)."""
        with self._lock:
            callbacks = list(self._callbacks.get(stream, ()))
        for callback in callbacks:
            callback()


class Backoff:
    """Adaptive polling delay: short right after activity, longer when idle.

    Used by backends without cross-process notification. The delay doubles
    from ``start`` up to ``limit`` and resets on activity.
    """

    def __init__(self, start: float = 0.0005, limit: float = 0.02) -> None:
        self.start = start
        self.limit = limit
        self.delay = start

    def reset(self) -> None:
        """Go back to the shortest delay (after new data was seen)."""
        self.delay = self.start

    def next(self, deadline: float) -> float:
        """The next delay, never past ``deadline`` (a ``time.monotonic`` value)."""
        delay = min(self.delay, max(0.0, deadline - time.monotonic()))
        self.delay = min(self.delay * 2, self.limit)
        return delay

    def pause(self) -> float:
        """The next delay, with no deadline but the limit."""
        return self.next(time.monotonic() + self.limit)


def fresh_indexes(keys: Sequence[str | None], existing: Mapping[str, int]) -> list[int]:
    """Indexes of the payloads an idempotent append must store: those without a
    key, and the first of each key not already in the stream."""
    seen: set[str] = set()
    fresh = []
    for index, key in enumerate(keys):
        if key is None:
            fresh.append(index)
        elif key not in existing and key not in seen:
            seen.add(key)
            fresh.append(index)
    return fresh


def merge_seqs(keys: Sequence[str | None], existing: Mapping[str, int],
               fresh: Sequence[int], seqs: Sequence[int]) -> list[int]:
    """Each payload's seq: the one just assigned, or the one already stored under its key."""
    known = dict(existing)
    assigned = dict(zip(fresh, seqs, strict=True))
    result = []
    for index, key in enumerate(keys):
        seq = assigned.get(index)
        if seq is None:
            seq = known[key]  # type: ignore[index]
        elif key is not None:
            known[key] = seq
        result.append(seq)
    return result
