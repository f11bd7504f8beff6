"""What flows into a window: records, made from messages by the stages before it.

``stream('r').map(parse).key_by('room').fixed_time_window('1m')``: the window
holds what ``parse`` returned. Each value a stage before the window produces
becomes a record, a :class:`~minibatch_rx.message.Message` with the source
message's ``stream``, ``seq`` and ingest ``ts`` and the value as ``data``, so
windows, acks and idempotency keys work on records as on messages. A message
the stages drop (a filter, a dead-lettered failure) simply leaves no record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import reactivex
from reactivex import Observable, abc

from minibatch_rx.message import Message
from minibatch_rx.stages import Envelope, Failure, Item, Stage, envelop
from minibatch_rx.streams import Stream
from minibatch_rx.windows.clocks import BadRecordError

StageFactory = Callable[[Failure, Stream, str], Stage]


def as_records(stages: tuple[Stage, ...]) -> Callable[[Observable[Message]], Observable[Message]]:
    """An operator running ``stages`` on each message and emitting their values as records."""

    def operator(source: Observable[Message]) -> Observable[Message]:
        def subscribe(observer: abc.ObserverBase[Message],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            def on_next(envelope: Envelope) -> None:
                if not isinstance(envelope, Item):
                    return  # the window computes its own acks
                value, origin = envelope.value, envelope.origin
                if isinstance(value, Message):
                    observer.on_next(value)
                else:
                    assert isinstance(origin, Message)
                    observer.on_next(Message(origin.stream, origin.seq, origin.ts, value))

            return envelop(source).pipe(*stages).subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler)

        return reactivex.create(subscribe)

    return operator


def dead_letter_rejected(failure: Failure, owner: str) -> Callable[[tuple[Message, str]], None]:
    """Send a record a window could not place (missing or malformed timestamp
    or key) to the dead-letter stream with the reason, keyed by ``owner`` and
    its seq, so a replay after a restart stores it once."""

    def bury(rejected: tuple[Message, str]) -> None:
        message, reason = rejected
        key = f"{owner}|dead|{message.stream}:{message.seq}"
        failure.bury("window", message, BadRecordError(reason), 1, key=key)

    return bury


def wrap_value(value: Any) -> dict[str, Any]:
    """A value between two windows of one pipeline, as a stored payload."""
    return {"v": value}


__all__ = ["as_records", "dead_letter_rejected", "wrap_value"]
