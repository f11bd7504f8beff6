"""What flows into a window: records, made from messages by the stages before it.

``stream('r').map(parse).key_by('room').fixed_time_window('1m')``: the window
holds what ``parse`` returned. Each value a stage before the window produces
becomes a record, a :class:`~minibatch_rx.message.Message` with the source
message's ``stream``, ``seq`` and ingest ``ts`` and the value as ``data``, so
windows, acks and idempotency keys work on records as on messages. A message
the stages drop (a filter, a dead-lettered failure) simply leaves no record.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from reactivex import Observable, abc
from reactivex import operators as ops

from minibatch_rx.calls import Fused, subscribe_to
from minibatch_rx.message import Message
from minibatch_rx.stages import Envelope, Failure, Item, Stage, envelop, record_key
from minibatch_rx.streams import Stream
from minibatch_rx.window import Window
from minibatch_rx.windows._engine import MessageEnd
from minibatch_rx.windows.clocks import BadRecordError

StageFactory = Callable[[Failure, Stream, str], Stage]


def as_records(stages: tuple[Stage, ...]) -> Callable[[Observable[Message]], Observable[Message]]:
    """An operator running ``stages`` on each message and emitting their values as records."""

    def operator(source: Observable[Message]) -> Observable[Message]:
        def subscribe(observer: abc.ObserverBase[Message],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            def on_next(envelope: Envelope) -> None:
                if not isinstance(envelope, Item):
                    # All of a message's records came: the window may acknowledge it.
                    if envelope.seq is not None:
                        observer.on_next(MessageEnd(envelope.seq))  # type: ignore[arg-type]
                    return
                value, origin = envelope.value, envelope.origin
                if isinstance(value, Message):
                    observer.on_next(value)
                else:
                    assert isinstance(origin, Message)
                    observer.on_next(Message(origin.stream, origin.seq, origin.ts, value))

            return subscribe_to(envelop(source).pipe(*stages), on_next, observer.on_error,
                                observer.on_completed, scheduler)

        return Fused(subscribe)

    return operator


def dead_letter_rejected(failure: Failure, owner: str) -> Callable[[tuple[Message, str]], None]:
    """Send a record a window could not place (missing or malformed timestamp
    or key) to the dead-letter stream with the reason, keyed by ``owner`` and
    its seq, so a replay after a restart stores it once."""

    def bury(rejected: tuple[Message, str]) -> None:
        message, reason = rejected
        key = f"{owner}|dead|{record_key(message)}"
        failure.bury("window", message, BadRecordError(reason), 1, key=key)

    return bury


def stored(value: Any, origin: Window | Message) -> dict[str, Any]:
    """A value between two windows of one pipeline, as a stage stream payload:
    the value (a window or message as its payloads) and the last source seq it
    came from, which tells when the stage message can be trimmed."""
    if isinstance(value, (Window, Message)):
        value = value.data
    seqs = origin.messages if isinstance(origin, Window) else (origin,)
    return {"v": value, "o": max((m.seq for m in seqs), default=0)}


def storing(source: Observable[Envelope]) -> Observable[Envelope]:
    """A stage turning each value into its stage stream payload (see :func:`stored`)."""
    return source.pipe(ops.map(lambda e: Item(stored(e.value, e.origin), e.origin)
                               if isinstance(e, Item) else e))


class StageTrim:
    """Trims a stage stream behind both of the pipelines that use it.

    A stage message may go once the reading pipeline acknowledged it **and**
    the writing one can no longer send it again: after a restart the writer
    replays from its own position and re-sends what came from later source
    messages, and a re-sent message whose idempotency key was trimmed with it
    would be stored anew. So a message is trimmed only once the writer's
    position has passed the last source seq it came from.
    """

    def __init__(self, stage: Stream, source: Stream, writer: str) -> None:
        self.stage, self.source, self.writer = stage, source, writer
        self.read: deque[tuple[int, int]] = deque()  # (stage seq, source seq it came from)

    def unstored(self, message: Message) -> Message:
        """The record a stage message carries; notes where it came from."""
        self.read.append((message.seq, int(message.data["o"])))
        return Message(message.stream, message.seq, message.ts, message.data["v"])

    def acknowledged(self, seq: int) -> None:
        """The reader committed ``seq``: trim what neither pipeline needs."""
        if not self.read or self.read[0][0] > seq:
            return
        written = self.source.position(self.writer)
        upto = 0
        while self.read and self.read[0][0] <= seq and self.read[0][1] <= written:
            upto = self.read.popleft()[0]
        if upto:
            self.stage.trim(upto)


def storable(data: Any) -> dict[str, Any]:
    """A record's value as a payload for the late or dead-letter stream: a
    dict as it is, anything else (what a stage before the window made) as ``{'v': value}``."""
    return data if isinstance(data, dict) else {"v": data}


__all__ = ["StageTrim", "as_records", "dead_letter_rejected", "storable", "stored", "storing"]
