"""What runs a pipeline's user functions: envelopes, retries, dead letters, sinks.

Windows travel through a pipeline as :class:`Item` envelopes; after the
items derived from one window comes an :class:`Ack` carrying the seq that
may be committed once they are all handled. Because every stage runs
synchronously, the ``Ack`` reaches the end of the chain only after the sinks
for its window succeeded, which is what makes delivery at-least-once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import reactivex
from reactivex import Observable, abc
from reactivex.scheduler import VirtualTimeScheduler
from reactivex.subject import Subject

from minibatch_rx.message import Message
from minibatch_rx.stream import Stream
from minibatch_rx.window import Window

log = logging.getLogger("minibatch_rx")


@dataclass(frozen=True, slots=True)
class Item:
    """A value in flight, with the window (or message) it came from."""

    value: Any
    origin: Window | Message


@dataclass(frozen=True, slots=True)
class Ack:
    """Everything up to ``seq`` is handled once this reaches the end."""

    seq: int


Envelope = Item | Ack
Stage = Callable[[Observable[Envelope]], Observable[Envelope]]


@dataclass(frozen=True)
class RetryPolicy:
    """How failing user functions are retried before dead-lettering.

    Attempt ``i`` (from 1) waits ``backoff * 2**(i-1)`` seconds, capped at
    ``max_backoff``, in scheduler time when the scheduler is virtual.
    """

    max_retries: int = 3
    backoff: float = 0.1
    max_backoff: float = 5.0


class Failure:
    """Runs user functions under a retry policy and dead-letters what keeps failing."""

    def __init__(self, policy: RetryPolicy, dead_letter: Stream,
                 scheduler: abc.SchedulerBase | None) -> None:
        self.policy = policy
        self.dead_letter = dead_letter
        self.scheduler = scheduler
        self.dead = 0

    def sleep(self, seconds: float) -> None:
        if isinstance(self.scheduler, VirtualTimeScheduler):
            self.scheduler.sleep(seconds)
        else:
            time.sleep(seconds)

    def call(self, stage: str, fn: Callable[[Any], Any], item: Item) -> tuple[bool, Any]:
        """``(True, fn(value))``, or ``(False, None)`` once the item is dead-lettered."""
        for attempt in range(self.policy.max_retries + 1):
            try:
                return True, fn(item.value)
            except Exception as exc:
                if attempt == self.policy.max_retries:
                    self.bury(stage, item.origin, exc, attempt + 1)
                    return False, None
                delay = min(self.policy.backoff * 2**attempt, self.policy.max_backoff)
                log.warning("%s failed on %s (attempt %d of %d): %r; retrying in %.3gs",
                            stage, _describe(item.origin), attempt + 1,
                            self.policy.max_retries + 1, exc, delay)
                self.sleep(delay)
        raise AssertionError("unreachable")

    def bury(self, stage: str, origin: Window | Message, error: BaseException, attempts: int) -> None:
        """Append the failed window to the dead-letter stream, and log it."""
        messages = origin.messages if isinstance(origin, Window) else (origin,)
        seqs = [m.seq for m in messages]  # a custom emitter's window need not be in seq order
        self.dead_letter.append({
            "stage": stage,
            "error": f"{type(error).__name__}: {error}",
            "attempts": attempts,
            "stream": messages[0].stream if messages else None,
            "first_seq": min(seqs, default=None),
            "last_seq": max(seqs, default=None),
            "data": [m.data for m in messages],
        })
        self.dead += 1
        log.error("%s failed on %s after %d attempts: %r; sent to dead-letter stream %r",
                  stage, _describe(origin), attempts, error, self.dead_letter.name)


def _describe(origin: Window | Message) -> str:
    if isinstance(origin, Message):
        return f"message {origin.stream}#{origin.seq}"
    seqs = [m.seq for m in origin.messages]
    return f"window {origin.stream}#{min(seqs, default=None)}..{max(seqs, default=None)}"


def envelop(source: Observable[Window | Message]) -> Observable[Envelope]:
    """Wrap each window (or bare message) as an Item followed by its Ack."""

    def subscribe(observer: abc.ObserverBase[Envelope],
                  scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
        def on_next(value: Window | Message) -> None:
            observer.on_next(Item(value, value))
            ack = value.ack if isinstance(value, Window) else value.seq
            if ack is not None:
                observer.on_next(Ack(ack))

        return source.subscribe(on_next, observer.on_error, observer.on_completed, scheduler=scheduler)

    return reactivex.create(subscribe)


def item_stage(name: str, fn: Callable[[Any], Any], failure: Failure,
               expand: Callable[[Any, Any], Iterable[Any]]) -> Stage:
    """A stage applying ``fn`` to each Item's value; ``expand(value, result)``
    gives the values to pass on (none, one or many). Acks pass through."""

    def stage(source: Observable[Envelope]) -> Observable[Envelope]:
        def subscribe(observer: abc.ObserverBase[Envelope],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            def on_next(envelope: Envelope) -> None:
                if isinstance(envelope, Ack):
                    observer.on_next(envelope)
                    return
                ok, result = failure.call(name, fn, envelope)
                if ok:
                    for value in expand(envelope.value, result):
                        observer.on_next(Item(value, envelope.origin))

            return source.subscribe(on_next, observer.on_error, observer.on_completed,
                                    scheduler=scheduler)

        return reactivex.create(subscribe)

    return stage


def rx_stage(operators: tuple[Callable[[Observable[Any]], Observable[Any]], ...],
             failure: Failure) -> Stage:
    """Apply plain reactivex operators to the values. An error inside them
    dead-letters the window being processed and rebuilds the chain."""

    def stage(source: Observable[Envelope]) -> Observable[Envelope]:
        def subscribe(observer: abc.ObserverBase[Envelope],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            current: list[Any] = [None]
            inner: list[Subject[Any]] = []

            def build() -> None:
                subject: Subject[Any] = Subject()
                subject.pipe(*operators).subscribe(
                    lambda value: observer.on_next(Item(value, current[0])),
                    lambda exc: failed.append(exc),
                )
                inner[:] = [subject]

            failed: list[Exception] = []
            build()

            def on_next(envelope: Envelope) -> None:
                if isinstance(envelope, Ack):
                    observer.on_next(envelope)
                    return
                current[0] = envelope.origin
                inner[0].on_next(envelope.value)
                if failed:
                    failure.bury("pipe", envelope.origin, failed.pop(), 1)
                    build()

            return source.subscribe(on_next, observer.on_error, observer.on_completed,
                                    scheduler=scheduler)

        return reactivex.create(subscribe)

    return stage


def sink_function(target: Stream | Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A callable that delivers one value to ``target``.

    A stream target takes a dict (one message), a list of dicts (one batch)
    or a Window (its payloads). Anything else is an error, which the retry
    policy then handles like any other failure.
    """
    if not isinstance(target, Stream):
        return target

    def to_stream(value: Any) -> Any:
        if isinstance(value, Window):
            return target.extend(value.data)
        if isinstance(value, Message):
            return target.append(value.data)
        if isinstance(value, dict):
            return target.append(value)
        if isinstance(value, (list, tuple)):
            return target.extend(value)
        raise TypeError(
            f"cannot sink a {type(value).__name__} into stream {target.name!r}: "
            "map windows to a dict or a list of dicts first"
        )

    return to_stream
