"""The immutable :class:`Window`: one mini-batch handed to user code."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, cast

from typing_extensions import TypeVar

from minibatch_rx.message import Message

T = TypeVar("T", default=dict[str, Any])


@dataclass(frozen=True, slots=True)
class Window(Generic[T]):
    """A batch of messages chosen by a window strategy.

    Attributes:
        messages: the messages, in seq order (a custom ``WindowEmitter`` may
            choose another order: its ``query()`` order is kept).
        stream: the name of the source stream (``None`` if messages are mixed).
        start: inclusive lower time bound, for strategies that have one.
        end: exclusive upper time bound, for strategies that have one.
        ack: the seq up to which every message is fully handled once this
            window (and those before it) is processed; pipelines commit it as
            the consumer position. ``None`` outside pipelines, and for all but
            the last of several windows closed at once (those commit together).
        checkpoint: the window operator's decisions up to this window (which
            windows are closed, where), saved with the consumer position so a
            restarted pipeline re-emits exactly the same windows. Opaque.
        key: the key the window belongs to, after ``key_by`` (``None`` without it).
        tag: tells apart windows of the same messages (overlapping sliding
            windows, empty windows); with ``key``, part of stream sinks'
            idempotency keys.

    >>> from datetime import datetime, timezone
    >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> w = Window((Message('s', 1, t, {'v': 1}), Message('s', 2, t, {'v': 2})), 's')
    >>> w.data, w.first_seq, w.last_seq, len(w)
    ([{'v': 1}, {'v': 2}], 1, 2, 2)
    """

    messages: tuple[Message, ...]
    stream: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    ack: int | None = None
    checkpoint: Any = field(default=None, compare=False, repr=False)
    key: Any = None
    tag: str | None = field(default=None, compare=False, repr=False)

    def __init__(self, messages: tuple[Message, ...], stream: str | None = None,
                 start: datetime | None = None, end: datetime | None = None, ack: int | None = None,
                 checkpoint: Any = None, key: Any = None, tag: str | None = None) -> None:
        # A window is made per window closed, and copied once more to carry its
        # ack: the slots are set through their descriptors, as the frozen
        # dataclass's own __init__ would do through object.__setattr__, faster.
        _set_messages(self, messages)
        _set_stream(self, stream)
        _set_start(self, start)
        _set_end(self, end)
        _set_ack(self, ack)
        _set_checkpoint(self, checkpoint)
        _set_key(self, key)
        _set_tag(self, tag)

    @property
    def data(self) -> list[T]:
        """The payloads, in seq order (what the original ``window.data`` held);
        after stages before the window, the values they produced."""
        return [cast(T, m.data) for m in self.messages]

    @property
    def first_seq(self) -> int | None:
        """Seq of the first message, ``None`` for an empty window."""
        return self.messages[0].seq if self.messages else None

    @property
    def last_seq(self) -> int | None:
        """Seq of the last message, ``None`` for an empty window."""
        return self.messages[-1].seq if self.messages else None

    def __len__(self) -> int:
        return len(self.messages)


# The slot descriptors of the class ``dataclass(slots=True)`` made (it replaces the class).
_set_messages = Window.__dict__["messages"].__set__
_set_stream = Window.__dict__["stream"].__set__
_set_start = Window.__dict__["start"].__set__
_set_end = Window.__dict__["end"].__set__
_set_ack = Window.__dict__["ack"].__set__
_set_checkpoint = Window.__dict__["checkpoint"].__set__
_set_key = Window.__dict__["key"].__set__
_set_tag = Window.__dict__["tag"].__set__


def stamp(window: Window[Any], ack: int | None, checkpoint: Any) -> None:
    """Set ``window``'s ack and checkpoint in place. Only for a window nobody
    has seen yet (the window driver, on a window its strategy just made and let go)."""
    _set_ack(window, ack)
    _set_checkpoint(window, checkpoint)
