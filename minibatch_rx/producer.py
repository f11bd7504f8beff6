"""A buffered producer: many single appends, few transactions.

``Stream.append`` stores each message in a transaction of its own; on SQLite
that is one disk sync per message. A :class:`Producer` collects the messages
appended to it, from any number of threads, and one background writer thread
stores them in batches with ``Store.append`` (one transaction per batch):

>>> from minibatch_rx import stream
>>> s = stream('doc-producer', url='memory://doc')
>>> with s.producer(linger='5ms', max_batch=1000) as producer:
...     handles = [producer.append({'n': n}) for n in range(3)]
...     producer.flush()
...     [h.result() for h in handles]
[1, 2, 3]

**When an append is durable.** ``append`` only checks the payload and queues
it. The message is stored (and readers may see it) when its batch is written;
it is *durable*, as durable as ``Stream.append`` makes it, once

* its handle resolves: ``handle.result()`` returns its seq, or
* a ``flush()`` or ``close()`` called after the append returns without raising.

Until then it lives only in this process's memory, and a crash loses it.
Durable means what the store's ``append`` promises: SQLite has committed the
transaction (synced to disk with the default ``synchronous=full``), MongoDB
has acknowledged the write, the memory store holds it.

A batch the store refuses fails every one of its handles with the store's
error (nothing of that batch is stored: a batch is one transaction), and
``flush``/``close`` raise :class:`ProducerError`; the writer goes on with
the next batches. A batch refused for one bad payload (one changed after
``append``, or too large for MongoDB) is split until only the bad payloads
fail.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from minibatch_rx.durations import Interval, positive_int, to_seconds
from minibatch_rx.errors import InvalidArgumentError, MinibatchError
from minibatch_rx.streams import _check_key
from minibatch_rx.validation import check_payload, encode_json

if TYPE_CHECKING:
    from types import TracebackType

    from minibatch_rx.streams import Stream

__all__ = [
    "AppendHandle",
    "Producer",
    "ProducerClosedError",
    "ProducerError",
    "ProducerTimeoutError",
]

log = logging.getLogger(__name__)

EXIT_TIMEOUT = 30.0
"""Seconds an interpreter exit waits for each producer left open to be flushed."""
_KEPT_FAILURES = 1000  # failed ranges remembered for flush() reports


class ProducerError(MinibatchError, RuntimeError):
    """Messages appended to a :class:`Producer` could not be stored.

    Raised by ``flush()`` and ``close()``; ``errors`` holds the store's
    exceptions (at most a few), ``failed`` how many messages they cost. The
    handles of those messages raise the store's exception itself. Also raised
    (with no errors) for a call from a done callback that would block the
    writer thread, which runs the callbacks.
    """

    def __init__(self, message: str, errors: list[BaseException], failed: int) -> None:
        super().__init__(message)
        self.errors = errors
        self.failed = failed


class ProducerClosedError(MinibatchError, RuntimeError):
    """The producer was closed (or belongs to the parent of a forked process)."""


class ProducerTimeoutError(MinibatchError, TimeoutError):
    """A producer call ran out of time: ``append`` found the buffer full, or
    ``flush``, ``close`` or ``AppendHandle.result`` waited longer than allowed."""


class _Batch:
    """Messages stored in one ``Store.append`` call, in append order."""

    __slots__ = (
        "callbacks",
        "done",
        "first",
        "keyed",
        "keys",
        "lock",
        "nbytes",
        "opened",
        "outcome",
        "payloads",
        "writer",
    )

    def __init__(self, first: int, lock: threading.Lock, writer: threading.Thread) -> None:
        self.first = first  # the ticket (append number, from 0) of its first message
        self.opened = time.monotonic()
        self.payloads: list[dict[str, Any]] = []
        self.keys: list[str | None] = []
        self.keyed = False
        self.nbytes = 0
        self.lock = lock  # the producer's lock: guards callbacks
        self.writer = writer
        self.done = threading.Event()
        self.outcome: list[int | BaseException] = []
        self.callbacks: list[tuple[int, Callable[[AppendHandle], object]]] | None = []


class AppendHandle:
    """The pending result of :meth:`Producer.append`, shaped like a
    ``concurrent.futures.Future``: it resolves to the message's seq once the
    message is durable, or to the store's error if it could not be stored.
    """

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: _Batch, index: int) -> None:
        self._batch = batch
        self._index = index

    def __repr__(self) -> str:
        if not self._batch.done.is_set():
            return "<AppendHandle pending>"
        outcome = self._batch.outcome[self._index]
        state = f"seq={outcome}" if isinstance(outcome, int) else f"failed: {outcome!r}"
        return f"<AppendHandle {state}>"

    def done(self) -> bool:
        """True once the message is durable or has failed."""
        return self._batch.done.is_set()

    def cancel(self) -> bool:
        """Always False: a queued message cannot be taken back."""
        return False

    def cancelled(self) -> bool:
        """Always False (see :meth:`cancel`)."""
        return False

    def running(self) -> bool:
        """True while the message waits to be stored."""
        return not self.done()

    def _wait(self, timeout: float | None) -> None:
        batch = self._batch
        if batch.done.is_set():
            return
        if threading.current_thread() is batch.writer:
            raise ProducerError(
                "waiting on a pending AppendHandle inside a done callback would "
                "block the producer's writer for ever",
                [],
                0,
            )
        if not batch.done.wait(timeout):
            raise ProducerTimeoutError(f"the message was not stored within {timeout} s")

    def result(self, timeout: float | None = None) -> int:
        """The message's seq, waiting up to ``timeout`` seconds (``None``: no
        limit) for it to be durable. Raises the store's error if the message
        could not be stored, :class:`ProducerTimeoutError` on timeout.

        With an idempotency key already in the stream, the seq is that of the
        message stored before (nothing was stored again).
        """
        self._wait(timeout)
        outcome = self._batch.outcome[self._index]
        if isinstance(outcome, int):
            return outcome
        raise outcome

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The store's error for this message, or None once it is durable;
        waits like :meth:`result`."""
        self._wait(timeout)
        outcome = self._batch.outcome[self._index]
        return None if isinstance(outcome, int) else outcome

    def add_done_callback(self, fn: Callable[[AppendHandle], object]) -> None:
        """Call ``fn(handle)`` once the handle resolves: at once (in this
        thread) if it has, else in the producer's writer thread, which must
        not be blocked (a callback may append, not flush). Its exceptions are
        logged."""
        batch = self._batch
        with batch.lock:
            callbacks = batch.callbacks
            if callbacks is not None:
                callbacks.append((self._index, fn))
                return
        _call(fn, self)


def _call(fn: Callable[[AppendHandle], object], handle: AppendHandle) -> None:
    try:
        fn(handle)
    except Exception:
        log.exception("AppendHandle callback %r raised", fn)


class Producer:
    """Buffers single appends to one stream and stores them in batches.

    Made by :meth:`Stream.producer <minibatch_rx.streams.Stream.producer>`.
    Any number of threads may call :meth:`append`; one background writer
    thread stores the buffered messages, a batch per ``Store.append`` call
    (one transaction), at most ``max_batch`` messages (and about ``max_bytes``
    of JSON, if given) each. A batch is written when it is full, when
    ``linger`` has passed since its first message, or at once for
    :meth:`flush` and :meth:`close`; while the writer is busy the next batch
    keeps filling, so under load batches grow and ``linger`` adds no delay.
    ``max_bytes`` counts each payload's JSON, encoded once more at ``append``
    for that (None, the default, saves the cost).

    Messages from one thread are stored in the order that thread appended
    them (so their seqs increase in that order); messages of different
    threads interleave in the order they got the producer's lock.

    At most ``max_pending`` messages may wait (queued or being written): past
    that, :meth:`append` blocks until the writer has made room, or raises
    :class:`ProducerTimeoutError` after its ``timeout``.

    See the module documentation for when an append is durable. A producer
    left open is flushed when the interpreter exits (waiting up to
    :data:`EXIT_TIMEOUT` seconds); close it yourself, or use it as a context
    manager, to know the outcome.
    """

    def __init__(
        self,
        stream: Stream,
        linger: Interval = "5ms",
        max_batch: int = 1000,
        max_bytes: int | None = None,
        max_pending: int | None = None,
    ) -> None:
        self.stream = stream
        self.linger = to_seconds(linger, "linger", allow_zero=True)
        self.max_batch = positive_int(max_batch, "max_batch")
        self.max_bytes = None if max_bytes is None else positive_int(max_bytes, "max_bytes")
        self.max_pending = (
            10 * self.max_batch if max_pending is None else positive_int(max_pending, "max_pending")
        )
        if self.max_pending < self.max_batch:
            raise InvalidArgumentError(
                f"max_pending ({self.max_pending}) must be >= max_batch "
                f"({self.max_batch}), or batches could never fill"
            )
        self._store = stream.store
        self._name = stream.name
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the writer waits here
        self._progress = threading.Condition(self._lock)  # flush and full appends wait here
        self._open: _Batch | None = None  # the batch new messages join
        self._sealed: deque[_Batch] = deque()  # full batches, oldest first
        self._appended = 0  # messages accepted (the next ticket)
        self._resolved = 0  # messages stored or failed; batches resolve in ticket order
        self._flush_upto = 0  # write at once any batch holding a ticket below this
        self._batches = 0
        self._failures: deque[tuple[int, int, BaseException]] = deque()  # (first, end, error)
        self._forgotten_end = 0  # end ticket of failures dropped from _failures
        self._local = threading.local()
        self._closed = False
        self._forked = False
        self._thread = threading.Thread(
            target=self._run, name=f"minibatch-producer-{self._name}", daemon=True
        )
        self._thread.start()
        _live.add(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.pending} pending"
        return f"<Producer {self._name!r} on {self._store.url!r}: {state}>"

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        # After an exception in the block the buffered messages are still stored,
        # but a failure to store them is left on their handles rather than raised
        # over the exception already on its way.
        self._shut(None, report=kind is None)

    # -- producing -----------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def pending(self) -> int:
        """Messages appended but not yet stored (or failed)."""
        return self._appended - self._resolved

    @property
    def batches(self) -> int:
        """How many batches the writer has written (successfully or not)."""
        return self._batches

    def append(
        self, payload: Mapping[str, Any], key: str | None = None, *, timeout: float | None = None
    ) -> AppendHandle:
        """Queue one payload; return its :class:`AppendHandle`.

        The payload is checked here, in the caller's thread: a bad one raises
        :class:`~minibatch_rx.errors.InvalidPayloadError` and nothing is
        queued. The producer keeps a shallow copy, so changing the dict's
        own keys afterwards changes nothing; do not change lists or dicts
        inside it before the handle resolves.

        ``key`` makes the append idempotent, as in :meth:`Stream.append
        <minibatch_rx.streams.Stream.append>`: a key already in the stream (or
        earlier in the producer) is not stored again, and its handle resolves
        to the seq stored first.

        When ``max_pending`` messages are waiting, blocks until there is room;
        with a ``timeout`` (seconds), raises :class:`ProducerTimeoutError` once
        it has passed. Raises :class:`ProducerClosedError` after :meth:`close`.
        """
        if self._closed:
            raise self._closed_error()
        data = dict(check_payload(payload))
        if key is not None:
            key = _check_key(key)
        limit = self.max_bytes or 0
        size = len(encode_json(data)) if limit else 0
        with self._lock:
            if self._appended - self._resolved >= self.max_pending:
                self._wait_for_room(timeout)
            if self._closed:
                raise self._closed_error()
            batch = self._open
            if batch is None or (size and batch.payloads and batch.nbytes + size > limit):
                batch = self._start_batch()
            payloads = batch.payloads
            index = len(payloads)
            payloads.append(data)
            batch.keys.append(key)
            if key is not None:
                batch.keyed = True
            self._appended += 1
            if size:
                batch.nbytes += size
                if batch.nbytes >= limit:
                    self._seal()
            if index + 1 >= self.max_batch and self._open is batch:
                self._seal()
        return AppendHandle(batch, index)

    def _start_batch(self) -> _Batch:
        """Open a new batch (sealing the open one); the lock is held."""
        if self._open is not None:
            self._seal()
        batch = self._open = _Batch(self._appended, self._lock, self._thread)
        self._wake.notify()  # the writer starts timing its linger
        return batch

    def _seal(self) -> None:
        """Queue the open batch for writing; the lock is held."""
        assert self._open is not None
        self._sealed.append(self._open)
        self._open = None
        self._wake.notify()

    def _wait_for_room(self, timeout: float | None) -> None:
        """Block until fewer than ``max_pending`` messages wait; the lock is held."""
        if threading.current_thread() is self._thread:
            raise ProducerError(
                "the producer's buffer is full and this append comes from a done "
                "callback, which runs in the writer thread: it would wait for ever",
                [],
                0,
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._appended - self._resolved >= self.max_pending and not self._closed:
            # Whatever is buffered is all we will get until there is room: write it now.
            self._flush_upto = max(self._flush_upto, self._appended)
            self._wake.notify()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise ProducerTimeoutError(
                    f"the producer for {self._name!r} holds {self.max_pending} messages not yet "
                    f"stored (max_pending), and no room was made within {timeout} s"
                )
            self._progress.wait(remaining)

    # -- flushing and closing ----------------------------------------------------
    def flush(self, timeout: float | None = None) -> None:
        """Return once every message appended before this call (by any thread)
        is durable.

        Raises :class:`ProducerError` if some of them could not be stored (each
        failure is reported at most once to each thread: in the first of its
        flushes whose messages include the failed ones), and
        :class:`ProducerTimeoutError` if they are not all stored or failed
        within ``timeout`` seconds.
        """
        if self._forked:
            raise self._closed_error()
        if threading.current_thread() is self._thread:
            raise ProducerError(
                "flush() in a done callback would block the producer's writer for ever", [], 0
            )
        with self._lock:
            target = self._appended
            self._flush_upto = max(self._flush_upto, target)
            self._wake.notify()
            self._wait_resolved(target, timeout, "flush")
        self._report(target)

    def close(self, timeout: float | None = None) -> None:
        """Flush (see :meth:`flush`), then stop the writer thread. Later appends
        raise :class:`ProducerClosedError`; closing again does nothing more than
        flush. On timeout the writer goes on storing what was appended, in
        the background."""
        self._shut(timeout, report=True)

    def _shut(self, timeout: float | None, report: bool) -> None:
        if self._forked:
            return
        if threading.current_thread() is self._thread:
            raise ProducerError(
                "close() in a done callback would block the producer's writer for ever", [], 0
            )
        with self._lock:
            self._closed = True
            target = self._appended
            self._wake.notify()
            self._progress.notify_all()  # appends blocked on a full buffer give up
            self._wait_resolved(target, timeout, "close")
        self._thread.join(timeout)  # it has nothing left to write: it is exiting
        _live.discard(self)
        if report:
            self._report(target)

    def _wait_resolved(self, target: int, timeout: float | None, what: str) -> None:
        """Wait until the first ``target`` messages are stored or failed; the lock is held."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._resolved < target:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise ProducerTimeoutError(
                    f"{what}(): {target - self._resolved} messages for {self._name!r} were not "
                    f"stored within {timeout} s"
                )
            self._progress.wait(remaining)

    def _report(self, target: int) -> None:
        """Raise for failures among the messages from this thread's last flush up to ``target``."""
        since = getattr(self._local, "flushed", 0)
        self._local.flushed = max(since, target)
        with self._lock:
            failed = [
                (first, end, error) for first, end, error in self._failures if first < target and end > since
            ]
            forgotten = self._forgotten_end > since
        if not failed and not forgotten:
            return
        count = sum(min(end, target) - max(first, since) for first, end, _ in failed)
        errors = [error for _, _, error in failed[:5]]
        first_error = errors[0] if errors else None
        text = f"{count} message(s) appended to {self._name!r} could not be stored"
        if first_error is not None:
            text += f": {type(first_error).__name__}: {first_error}"
        if forgotten:
            text += " (and earlier failures too many to list)"
        raise ProducerError(text, errors, count) from first_error

    def _closed_error(self) -> ProducerClosedError:
        if self._forked:
            return ProducerClosedError(
                f"this producer for {self._name!r} was made in the parent process; make a new one after fork"
            )
        return ProducerClosedError(f"the producer for {self._name!r} is closed")

    # -- the writer thread ---------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._lock:
                batch = self._next_batch()
            if batch is None:
                return
            try:
                outcome = self._write(batch.payloads, batch.keys if batch.keyed else None)
            except BaseException as exc:  # not a store error: fail the batch, then stop
                self._resolve(batch, [exc] * len(batch.payloads))
                self._fail_everything(exc)
                raise
            self._resolve(batch, outcome)

    def _next_batch(self) -> _Batch | None:
        """The next batch to write, waiting for one; None once closed and
        drained. The lock is held."""
        while True:
            if self._sealed:
                return self._sealed.popleft()
            batch = self._open
            if batch is None:
                if self._closed:
                    return None
                self._wake.wait()
                continue
            remaining = batch.opened + self.linger - time.monotonic()
            if remaining <= 0 or self._closed or batch.first < self._flush_upto:
                self._open = None
                return batch
            self._wake.wait(remaining)

    def _write(
        self, payloads: list[dict[str, Any]], keys: list[str | None] | None
    ) -> list[int | BaseException]:
        """Store ``payloads``; each one's seq, or the error that kept it out.

        A batch refused with a ``TypeError`` or ``ValueError`` (the store found
        a bad payload, before storing anything) is split in halves, so only
        the bad payloads fail."""
        try:
            return list(self._store.append(self._name, payloads, keys))
        except (TypeError, ValueError) as exc:
            if len(payloads) == 1:
                return [exc]
            half = len(payloads) // 2
            return self._write(payloads[:half], None if keys is None else keys[:half]) + self._write(
                payloads[half:], None if keys is None else keys[half:]
            )
        except Exception as exc:
            log.warning(
                "producer for %r: a batch of %d messages was not stored: %s", self._name, len(payloads), exc
            )
            return [exc] * len(payloads)

    def _resolve(self, batch: _Batch, outcome: list[int | BaseException]) -> None:
        batch.outcome = outcome
        count = len(outcome)
        with self._lock:
            self._batches += 1
            self._resolved += count
            end = batch.first + count
            failed: tuple[int, BaseException] | None = None  # a run of failures: (start, error)
            for index, item in enumerate(outcome):
                if not isinstance(item, int):
                    if failed is None:
                        failed = (index, item)
                elif failed is not None:
                    self._remember(batch.first + failed[0], batch.first + index, failed[1])
                    failed = None
            if failed is not None:
                self._remember(batch.first + failed[0], end, failed[1])
            callbacks, batch.callbacks = batch.callbacks, None
            batch.done.set()  # before flush() can return: its handles are done when it does
            self._progress.notify_all()
        batch.payloads, batch.keys = [], []  # handles may outlive the batch: free its messages
        for index, fn in callbacks or ():
            _call(fn, AppendHandle(batch, index))

    def _remember(self, first: int, end: int, error: BaseException) -> None:
        """Keep a failed range of tickets for flush reports; the lock is held."""
        self._failures.append((first, end, error))
        if len(self._failures) > _KEPT_FAILURES:
            self._forgotten_end = max(self._forgotten_end, self._failures.popleft()[1])

    def _fail_everything(self, error: BaseException) -> None:
        """The writer is dying: fail whatever is still buffered."""
        with self._lock:
            self._closed = True
            batches = [*self._sealed, *([self._open] if self._open is not None else [])]
            self._sealed.clear()
            self._open = None
        for batch in batches:
            self._resolve(batch, [error] * len(batch.payloads))


_live: weakref.WeakSet[Producer] = weakref.WeakSet()


def _close_at_exit() -> None:
    for producer in list(_live):
        try:
            producer._shut(EXIT_TIMEOUT, report=False)
        except ProducerTimeoutError:
            log.error(
                "at exit, %d message(s) for %r were still not stored after %s s; they are lost",
                producer.pending,
                producer._name,
                EXIT_TIMEOUT,
            )


def _after_fork() -> None:
    # The child has no writer thread: its copies of the producers refuse work.
    for producer in list(_live):
        producer._forked = True
        producer._closed = True
    _live.clear()


atexit.register(_close_at_exit)
os.register_at_fork(after_in_child=_after_fork)
