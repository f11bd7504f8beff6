"""What runs a pipeline's user functions: envelopes, retries, dead letters, sinks.

Windows travel through a pipeline as :class:`Item` envelopes; after the
items derived from one window comes an :class:`Ack` carrying the seq that
may be committed once they are all handled. Because every stage runs
synchronously, the ``Ack`` reaches the end of the chain only after the sinks
for its window succeeded, which is what makes delivery at-least-once.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable
from reactivex.scheduler import VirtualTimeScheduler

from minibatch_rx.calls import Activity, CallThread, Fused, describe, subscribe_to
from minibatch_rx.errors import (
    InvalidPayloadError,
)
from minibatch_rx.message import Message
from minibatch_rx.metrics import StageTimes
from minibatch_rx.resilience import OUTAGES, ride_out, until_reachable
from minibatch_rx.sinks import Sink, StreamSink
from minibatch_rx.streams import Stream
from minibatch_rx.validation import encode_json
from minibatch_rx.window import Window
from minibatch_rx.windows.keys import key_text

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Item:
    """A value in flight, with the window (or message) it came from."""

    value: Any
    origin: Window | Message

    def __init__(self, value: Any, origin: Window | Message) -> None:
        # One per value per stage: slots set through their descriptors (see Message).
        _set_value(self, value)
        _set_origin(self, origin)


_set_value = Item.__dict__["value"].__set__
_set_origin = Item.__dict__["origin"].__set__


@dataclass(frozen=True, slots=True)
class Ack:
    """Everything up to ``seq`` is handled once this reaches the end.

    ``seq`` is ``None`` for a window whose position is committed with a later
    one (windows closed together); ``checkpoint`` is the window operator's
    state to save with the position (see :mod:`minibatch_rx.journal`).
    """

    seq: int | None
    checkpoint: Any = None
    counts: bool = True
    """False for a window that only carries a checkpoint (a pattern's "tick"): it
    commits the position but is no window to count (``run(max_windows=...)``)."""

    def __init__(self, seq: int | None, checkpoint: Any = None, counts: bool = True) -> None:
        _set_seq(self, seq)
        _set_checkpoint(self, checkpoint)
        _set_counts(self, counts)


_set_seq = Ack.__dict__["seq"].__set__
_set_checkpoint = Ack.__dict__["checkpoint"].__set__
_set_counts = Ack.__dict__["counts"].__set__


Envelope = Item | Ack
Stage = Callable[[Observable[Envelope]], Observable[Envelope]]
Operators = tuple[Callable[[Observable[Any]], Observable[Any]], ...]
"""What ``Pipeline.pipe`` takes: plain reactivex operators, applied in order."""


PROGRAMMING_ERRORS: tuple[type[Exception], ...] = (
    TypeError, AttributeError, NameError, ImportError, NotImplementedError, RecursionError,
)
"""Errors a retry cannot fix (the same code fails the same way on the same
window): dead-lettered at the first failure. ``with_retries(retry_on=...)`` changes it."""

DEAD_LETTER_DATA_LIMIT = 8_000_000
"""Bytes of JSON payload a dead letter carries at most (messages beyond it are
listed by seq only), so a dead letter always fits in every store (MongoDB's
documents stop at 16 MB)."""
_ERROR_TEXT_LIMIT = 10_000


@dataclass(frozen=True)
class RetryPolicy:
    """How failing user functions are retried before dead-lettering.

    Attempt ``i`` (from 1) waits ``backoff * 2**(i-1)`` seconds, capped at
    ``max_backoff``, in scheduler time when the scheduler is virtual. Errors
    in ``no_retry`` (programming errors by default) are dead-lettered at once.
    ``call_timeout`` bounds each call of a user function (``None``: no bound).
    """

    max_retries: int = 3
    backoff: float = 0.1
    max_backoff: float = 5.0
    outage_timeout: float = 300.0
    """How long a store outage is waited out before the pipeline fails."""
    no_retry: tuple[type[Exception], ...] = PROGRAMMING_ERRORS
    call_timeout: float | None = None


class Failure:
    """Runs user functions under a retry policy and dead-letters what keeps failing."""

    def __init__(self, policy: RetryPolicy, dead_letter: Stream,
                 scheduler: abc.SchedulerBase | None, activity: Activity | None = None) -> None:
        self.policy = policy
        self.dead_letter = dead_letter
        self.scheduler = scheduler
        self.activity = activity or Activity()
        self.dead = 0
        self.retries = 0
        self.times = StageTimes()
        self._calls = CallThread()

    def sleep(self, seconds: float) -> None:
        if isinstance(self.scheduler, VirtualTimeScheduler):
            self.scheduler.sleep(seconds)
        else:
            time.sleep(seconds)

    def invoke(self, stage: str, fn: Callable[[Any], Any], item: Item) -> Any:
        """One call of ``fn``, bounded by ``call_timeout`` if set, tracked for ``stop()``."""
        activity = self.activity
        activity.enter(stage, item.origin)
        try:
            if self.policy.call_timeout is None:
                return fn(item.value)
            return self._calls.call(lambda: fn(item.value), self.policy.call_timeout, stage)
        finally:
            activity.leave()

    def call(self, stage: str, fn: Callable[[Any], Any], item: Item) -> tuple[bool, Any]:
        """``(True, fn(value))``, or ``(False, None)`` once the item is dead-lettered.

        A store outage is not the window's fault: it is waited out (logged,
        with back-off) for up to ``outage_timeout`` seconds without using up
        the retry budget, then raised so the pipeline stops with the error.
        """
        attempt = 0
        while True:
            try:
                # until_reachable() and invoke(), their first attempt inlined: this
                # runs for every value.
                started = time.monotonic()
                try:
                    if self.policy.call_timeout is not None:
                        result = self.invoke(stage, fn, item)
                        self.times.observe(stage, time.monotonic() - started)
                        return True, result
                    activity = self.activity
                    activity.enter(stage, item.origin)
                    try:
                        result = fn(item.value)
                    finally:
                        activity.leave()
                    self.times.observe(stage, time.monotonic() - started)
                    return True, result
                except OUTAGES as exc:
                    return True, ride_out(lambda: self.invoke(stage, fn, item),
                                          self.policy.outage_timeout, started, exc)
            except OUTAGES:
                raise  # outlasted the outage bound: not this window's fault
            except Exception as exc:
                attempt += 1
                if attempt > self.policy.max_retries or isinstance(exc, self.policy.no_retry):
                    self.bury(stage, item.origin, exc, attempt)
                    return False, None
                self.retries += 1
                delay = min(self.policy.backoff * 2 ** (attempt - 1), self.policy.max_backoff)
                log.warning("%s failed on %s (attempt %d of %d): %r; retrying in %.3gs",
                            stage, describe(item.origin), attempt,
                            self.policy.max_retries + 1, exc, delay,
                            extra={"stage": stage, "attempt": attempt})
                self.sleep(delay)

    def bury(self, stage: str, origin: Window | Message, error: BaseException, attempts: int,
             *, key: str | None = None) -> None:
        """Append the failed window to the dead-letter stream, and log it.

        The record always fits: the seq range and the error are kept whole,
        the payloads only up to :data:`DEAD_LETTER_DATA_LIMIT` bytes of JSON.
        With a ``key``, the append is idempotent: burying the same thing again
        (a replay after a crash) stores nothing new."""
        messages = origin.messages if isinstance(origin, Window) else (origin,)
        seqs = [m.seq for m in messages]  # a custom emitter's window need not be in seq order
        data, omitted = _fitting([m.data for m in messages])
        record: dict[str, Any] = {
            "stage": stage,
            "error": f"{type(error).__name__}: {error}"[:_ERROR_TEXT_LIMIT],
            "attempts": attempts,
            "stream": messages[0].stream if messages else None,
            "first_seq": min(seqs, default=None),
            "last_seq": max(seqs, default=None),
            "data": data,
        }
        if omitted:
            record["omitted_seqs"] = seqs[len(data):]
        try:
            until_reachable(lambda: self.dead_letter.append(record, key=key), self.policy.outage_timeout)
        except InvalidPayloadError:  # what the store refused is the data: keep the rest
            record["data"], record["omitted_seqs"] = [], seqs
            until_reachable(lambda: self.dead_letter.append(record, key=key), self.policy.outage_timeout)
        self.dead += 1
        log.error("%s failed on %s after %d attempt(s): %r; sent to dead-letter stream %r",
                  stage, describe(origin), attempts, error, self.dead_letter.name,
                  extra={"stage": stage, "dead_letter": self.dead_letter.name})


def _fitting(payloads: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """The leading payloads whose JSON fits the dead-letter limit; True if some were left out."""
    kept: list[dict[str, Any]] = []
    size = 0
    for payload in payloads:
        try:
            size += len(encode_json(payload))
        except (TypeError, ValueError):  # a value a stage made that JSON cannot hold: left out
            return kept, True
        if size > DEAD_LETTER_DATA_LIMIT:
            return kept, True
        kept.append(payload)
    return kept, False


def envelop(source: Observable[Window | Message]) -> Observable[Envelope]:
    """Wrap each window (or bare message) as an Item followed by its Ack."""

    def subscribe(observer: abc.ObserverBase[Envelope],
                  scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
        on_next_ = observer.on_next

        def on_next(value: Window | Message) -> None:
            if isinstance(value, Window):
                counts = value.tag != "tick"
                if counts:  # a "tick" only carries a checkpoint: the stages never see it
                    on_next_(Item(value, value))
                on_next_(Ack(value.ack, value.checkpoint, counts))
            else:
                on_next_(Item(value, value))
                on_next_(Ack(value.seq))

        return subscribe_to(source, on_next, observer.on_error, observer.on_completed, scheduler)

    return Fused(subscribe)


def item_stage(name: str, fn: Callable[[Any], Any], failure: Failure,
               expand: Callable[[Any, Any], Iterable[Any]]) -> Stage:
    """A stage applying ``fn`` to each Item's value; ``expand(value, result)``
    gives the values to pass on (none, one or many). Acks pass through."""

    def stage(source: Observable[Envelope]) -> Observable[Envelope]:
        def subscribe(observer: abc.ObserverBase[Envelope],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            on_next_ = observer.on_next

            def on_next(envelope: Envelope) -> None:
                if type(envelope) is Ack:
                    on_next_(envelope)
                    return
                ok, result = failure.call(name, fn, envelope)  # type: ignore[arg-type]
                if ok:
                    origin = envelope.origin  # type: ignore[union-attr]
                    for value in expand(envelope.value, result):  # type: ignore[union-attr]
                        on_next_(Item(value, origin))

            return subscribe_to(source, on_next, observer.on_error, observer.on_completed, scheduler)

        return Fused(subscribe)

    return stage


def sink_function(target: Stream | Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A callable that delivers one value to ``target`` (a callable, or a
    stream, appended to without idempotency keys)."""
    if not isinstance(target, Stream):
        return target
    return lambda value: _to_stream(target, value, None)


def _to_stream(target: Stream, value: Any, key: str | None) -> None:
    """Append ``value`` to ``target`` at once (see :class:`~minibatch_rx.sinks.StreamSink`);
    with ``key``, idempotently."""
    sink = StreamSink(target, idempotent=key is not None)
    sink.write([value], [key or ""])
    sink.flush()


def record_key(message: Message) -> str:
    """Names one record for idempotency keys: ``stream:seq#digest``. The digest
    of its value tells apart the records one message gave (a ``flat_map``
    before a window); a replay gives the same ones.

    >>> record_key(Message('s', 7, None, {'a': 1}))  # type: ignore[arg-type]
    's:7#2c6b113b8dd15ffbded9860b43eb0c6c'
    """
    try:
        text = encode_json(message.data)
    except (TypeError, ValueError):  # a value a stage made that JSON cannot hold: its repr
        text = f"{type(message.data).__qualname__}:{message.data!r}"
    digest = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    return f"{message.stream}:{message.seq}#{digest}"


def origin_key(origin: Window | Message) -> str:
    """Identifies the source messages a value came from: ``stream:first-last``."""
    if isinstance(origin, Message):
        return f"{origin.stream}:{origin.seq}"
    seqs = [m.seq for m in origin.messages]
    span = f"{min(seqs)}-{max(seqs)}" if seqs else "empty"
    # Overlapping or empty windows: the strategy's key tells them apart. Never a
    # clock reading: a window replayed after a restart must get the same key.
    tag = f"@{origin.tag}" if origin.tag else ""
    # Keyed windows: the key too (two keys' empty windows share everything else).
    key = "" if origin.key is None else f"#{key_text(origin.key)}"
    return f"{origin.stream}:{span}{tag}{key}"


def late_sink(target: Stream | Callable[[Any], Any], owner: str) -> Callable[[Message], Any]:
    """Deliver a late message to ``target``. Into a stream it is keyed by
    ``owner`` and its seq, so a restart that finds it late again stores nothing twice."""
    if not isinstance(target, Stream):
        return target

    def deliver(message: Message) -> Any:
        key = f"{owner}|late|{record_key(message)}"
        return until_reachable(lambda: target.append(message.data, key=key), RetryPolicy.outage_timeout)

    return deliver


def sink_stage(sink: Sink[Any], failure: Failure, owner: str) -> Stage:
    """Deliver values to ``sink`` with idempotency keys, flushing each window's
    values before the position covering them is committed.

    Each value is keyed by ``owner`` (the consumer or group), the seq range it
    came from and its rank among that range's outputs, so a window processed
    again after a crash gets the same keys. A window's values are written as
    they come and flushed when the next window's first value or an ack
    arrives; then they go on downstream (so a later stage, another sink say,
    sees them stored). A failing write or flush is retried under the retry
    policy (a flush by writing the window's values again first, as a failed
    flush keeps nothing), then the window goes to the dead-letter stream and
    its values stop here. The sink is closed when the pipeline stops.
    """

    def stage(source: Observable[Envelope]) -> Observable[Envelope]:
        def subscribe(observer: abc.ObserverBase[Envelope],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            last: list[Any] = [None, 0]  # origin of the previous item, rank within it
            window: list[tuple[Item, str]] = []  # written since the last flush, with their keys
            on_next_ = observer.on_next

            def flush() -> None:
                if not window:
                    return
                items = [item for item, _ in window]
                values = [item.value for item in items]
                keys = [key for _, key in window]
                window.clear()
                attempts = [0]

                def deliver(_value: Any) -> None:
                    if attempts[0]:
                        sink.write(values, keys)  # the failed flush kept nothing
                    attempts[0] += 1
                    sink.flush()

                ok, _ = failure.call("sink.flush", deliver, items[-1])
                if ok:  # stored: the values go on (a dead-lettered window's do not)
                    for item in items:
                        on_next_(item)

            def on_next(envelope: Envelope) -> None:
                if type(envelope) is Ack:
                    flush()
                    on_next_(envelope)
                    return
                assert type(envelope) is Item
                origin = envelope.origin
                if origin is not last[0]:
                    flush()
                    last[0], last[1] = origin, 0
                else:
                    last[1] += 1
                key = f"{owner}|{origin_key(origin)}|{last[1]}"
                ok, _ = failure.call("sink", lambda value: sink.write([value], [key]), envelope)
                if ok:
                    window.append((envelope, key))

            subscription = subscribe_to(source, on_next, observer.on_error, observer.on_completed,
                                        scheduler)
            return CompositeDisposable(subscription, Disposable(sink.close))

        return Fused(subscribe)

    return stage
